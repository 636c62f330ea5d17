"""Talking to a running farm: a named Ray actor the driver polls and ``rlfarm scale`` calls.

The driver creates ``rlfarm-control-<run name>`` in the ``rlfarm`` namespace. An operator, from
any shell on the Ray cluster, changes the desired env-worker count; the driver applies it at its
next poll (within a second), without restarting anything. The driver also posts its status here,
so ``rlfarm scale --status`` shows what the run is doing.
"""

from __future__ import annotations

from cluster.ray_runtime import NAMESPACE


def control_name(run_name: str) -> str:
    return f"rlfarm-control-{run_name}"


class FarmControl:
    def __init__(self, env_workers: int) -> None:
        self.env_workers = env_workers
        self.status: dict = {}

    def set_env_workers(self, n: int) -> int:
        if n < 1:
            raise ValueError(f"--env-workers must be >= 1, got {n}")
        self.env_workers = n
        return n

    def desired_env_workers(self) -> int:
        return self.env_workers

    def report(self, status: dict) -> None:
        self.status = status

    def get_status(self) -> dict:
        return self.status


def start_control(run_name: str, env_workers: int):
    import ray

    actor = ray.remote(num_cpus=0)(FarmControl)
    return actor.options(name=control_name(run_name), namespace=NAMESPACE).remote(env_workers)


def scale(run_name: str, env_workers: int | None, address: str = "auto") -> dict:
    """Connect to the running farm's Ray cluster; set the env-worker count; return its status."""
    import ray

    ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
    try:
        control = ray.get_actor(control_name(run_name), namespace=NAMESPACE)
    except ValueError as exc:
        raise RuntimeError(
            f"no running farm named {run_name!r} on this Ray cluster (is the run still going, "
            "and is --run its run.name?)"
        ) from exc
    if env_workers is not None:
        ray.get(control.set_env_workers.remote(env_workers), timeout=30)
    return ray.get(control.get_status.remote(), timeout=30)
