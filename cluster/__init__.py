"""The cluster: the farm's orchestration on Ray, and everything a person runs.

Folders, each importing only those listed after it:

- ``commands/``: what a person runs: ``cli`` (every ``rlfarm`` command), ``train`` (``python -m
  cluster.commands.train``, for ``rlfarm train`` and ``ray job submit``), ``cluster_demo``;
- ``view/``: ``rlfarm view``, the live web view of a run;
- ``farm/``: the driver (``driver.Farm``) and its parts (batching, publishing, playing,
  producing, evaluating, recovery, the ledger, metrics, ...);
- ``evaluation/``: ``rlfarm eval`` and the held-out metrics the farm reports too;
- ``models/``: the built-in models (``registry``, ``tiny``, ``smollm2``) and the SFT
  ``warm_start`` before GRPO;
- ``base/``: what all of them share: ``config`` (``FarmConfig``, one YAML file, validated early),
  ``placement``, ``ray_runtime`` (Ray start-up), ``task_split`` (which tasks train, which are held
  out), ``progress`` (progress lines).
"""
