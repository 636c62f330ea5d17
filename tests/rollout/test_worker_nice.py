"""``env.cpu_nice``: a rollout worker started with it runs its env's sandbox process that much
nicer than a worker started without it (Ray's worker processes start at the same niceness), so
on a shared CPU box the learner gets the cores first while it trains."""

from __future__ import annotations

import psutil
import pytest
import ray

from rollout.config import EnvSettings
from rollout.worker import rollout_worker_class


def _sandbox_niceness(tiny_model_path, cpu_nice: int) -> int:
    worker = (
        rollout_worker_class()
        .options(num_cpus=0)
        .remote(f"nice-{cpu_nice}", None, str(tiny_model_path), EnvSettings(cpu_nice=cpu_nice), 3)
    )
    try:
        pid = ray.get(worker.sandbox_pid.remote(), timeout=120)
        assert pid is not None, "the local env runs its episodes in a sandbox process"
        return psutil.Process(pid).nice()
    finally:
        ray.kill(worker, no_restart=True)


def test_env_cpu_nice_makes_the_sandbox_process_nicer(ray_runtime, tiny_model_path):
    plain = _sandbox_niceness(tiny_model_path, 0)
    if plain == 19:  # Ray starts workers 15 above its driver: a suite run under `nice -n 4`
        pytest.skip("Ray's workers already run at niceness 19 here: nothing can be nicer")
    niced = _sandbox_niceness(tiny_model_path, 3)
    assert niced == min(19, plain + 3) > plain, (plain, niced)
