"""The learner: GRPO on LoRA weights, adapter publishing, checkpoints, and the SFT warm start.

- ``types``: ``Sample``/``SampleGroup`` (what the cluster feeds in), ``UpdateMetrics``, and the
  one no-signal rule (``lacks_signal``) the farm's ledger shares.
- ``grpo``: the algorithm as small pure torch functions.
- ``config``: ``LearnerConfig``.
- ``trainer``: ``Learner`` (train_step, publish, save/load_checkpoint), no Ray needed.
- ``publish`` / ``checkpoint``: atomic adapter versions with probes; full training state.
- ``actor``: ``LearnerActor``, the Ray wrapper (the only module that imports Ray).
- ``sft``: trl SFT warm start (``rlfarm sft``; the CLI lives in ``cluster.commands.cli``).

Nothing here imports vLLM, env or rollout; importing the package itself imports nothing heavy.
"""
