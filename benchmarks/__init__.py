"""Throughput benchmarks (``rlfarm bench ...``) and their recorded results (``RESULTS.md``).

- ``rollout``: the sequential baseline (``sequential_baseline``) vs the farm in sync and async mode;
- ``hotswap``: adapter swap latency under load; ``learner_update``: GRPO update and publish
  throughput; ``env_step``: env step latency vs a subprocess ``aws`` baseline, and scaling.

Every ratio is measured side by side in one run; tests never assert speed.
"""
