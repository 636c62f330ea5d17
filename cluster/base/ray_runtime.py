"""Ray start-up, in one place: join the job's cluster, or start a local one that fits the farm.

Under ``ray job submit`` (``RAY_ADDRESS`` set) or with an explicit address the driver joins that
cluster. Otherwise a local Ray starts with at least ``min_cpus`` *logical* CPUs, so every actor
of a farm fits even on a 2-core box (the actors share the real cores).

A local Ray keeps the state API's task events for the last ``TASK_EVENTS_KEPT`` tasks only:
Ray's default (100,000) made the GCS grow ~2.8 MiB per 1,000 actor calls, +255 MiB over a
60-minute soak; a cluster started with ``ray start`` takes the same cap as
``--system-config='{"task_events_max_num_task_in_gcs": 10000}'``.
"""

from __future__ import annotations

import os

NAMESPACE = "rlfarm"
TASK_EVENTS_KEPT = 10_000


def init_ray(address: str | None = None, min_cpus: int = 0) -> None:
    """Connect to ``address`` (or ``RAY_ADDRESS``), or start a local Ray; a no-op if Ray is up."""
    import ray

    if ray.is_initialized():  # a test session or a notebook that started Ray already
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=True)
        return
    ray.init(
        num_cpus=max(os.cpu_count() or 1, min_cpus),
        namespace=NAMESPACE,
        include_dashboard=False,
        log_to_driver=False,
        _system_config={"task_events_max_num_task_in_gcs": TASK_EVENTS_KEPT},
    )


def farm_cpus(engines: int, env_workers: int) -> int:
    """Logical CPUs a local farm asks for: engines, the learner, env workers, control, spare."""
    return engines + 1 + env_workers + 2
