"""The cluster: the farm's driver, its config, the Ray wiring and the entry points.

- ``farm/``: the driver (``driver.Farm``) and its parts: ``admission``, ``curriculum``,
  ``ledger``, ``metrics``, ``watchdog``, ``rollout_workers``, ``control``;
- ``config``: ``FarmConfig`` (one YAML file, validated early); ``task_split``: which tasks train
  and which are held out; ``model_registry``: built-in model names; ``warm_start``: the SFT warm
  start before GRPO; ``ray_runtime``: Ray start-up;
- ``evaluation/``: ``rlfarm eval`` and the held-out metrics the farm reports too;
- ``main``: ``python -m cluster.main`` (``rlfarm train`` and ``ray job submit``); ``cli``: every
  ``rlfarm`` command.
"""
