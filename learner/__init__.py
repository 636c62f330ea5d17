"""The learner: GRPO on LoRA weights, adapter publishing, checkpoints, and the SFT warm start.

- ``types``: ``Sample``/``SampleGroup`` (what the cluster feeds in) and ``UpdateMetrics``.
- ``grpo``: the algorithm as small pure torch functions.
- ``config``: ``LearnerConfig``.
- ``trainer``: ``Learner`` (train_step, publish, save/load_checkpoint), no Ray needed.
- ``publish`` / ``checkpoint``: atomic adapter versions with probes; full training state.
- ``actor``: ``LearnerActor``, the Ray wrapper (the only module that imports Ray).
- ``sft``: trl SFT warm start; ``bench``: update/publish throughput; ``commands``: CLI wiring.

Nothing here imports vLLM, env or rollout; importing the package itself imports nothing heavy.
"""
