"""Talking to a running farm: a named Ray actor the driver polls and ``rlfarm scale`` calls.

The driver creates ``rlfarm-control-<run name>`` in the ``rlfarm`` namespace. An operator, from
any shell on the Ray cluster, changes the desired env-worker count; the driver applies it at its
next poll (within a second), without restarting anything. The driver also posts its status here,
so ``rlfarm scale --status`` shows what the run is doing.
"""

from __future__ import annotations

from cluster.base.ray_runtime import NAMESPACE


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


class NoFarmError(RuntimeError):
    """``rlfarm scale`` found no farm to talk to; the message says what to do."""


def _reachable(address: str) -> bool:
    """Whether an explicit HOST:PORT answers at all (Ray itself retries a dead address for a
    minute before it gives up); "auto" is left to Ray, which fails fast when nothing runs."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if address == "auto" or not port.isdigit():
        return True
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError:
        return False
    return True


def running_farms() -> list[str]:
    """The run names of farms with a control actor on the connected Ray cluster."""
    from ray.util import list_named_actors

    prefix = control_name("")
    return sorted(
        a["name"][len(prefix) :]
        for a in list_named_actors(all_namespaces=True)
        if a.get("namespace") == NAMESPACE and a["name"].startswith(prefix)
    )


def scale(run_name: str, env_workers: int | None, address: str = "auto") -> dict:
    """Connect to the running farm's Ray cluster; set the env-worker count; return its status."""
    import ray

    no_cluster = NoFarmError(
        f"no Ray cluster at {address!r}, so no farm is running there. Start one with "
        "`rlfarm train --config ...` (it keeps a local cluster while it runs), or point at "
        "the farm's cluster with --address HOST:PORT (or RAY_ADDRESS)"
    )
    if not _reachable(address):
        raise no_cluster
    try:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
    except ConnectionError as exc:
        raise no_cluster from exc
    try:
        control = ray.get_actor(control_name(run_name), namespace=NAMESPACE)
    except ValueError as exc:
        running = running_farms()
        which = (
            f"running here: {', '.join(running)}; pick one with --run NAME"
            if running
            else "no farm is running on this cluster"
        )
        raise NoFarmError(f"no running farm named {run_name!r} ({which})") from exc
    if env_workers is not None:
        ray.get(control.set_env_workers.remote(env_workers), timeout=30)
    return ray.get(control.get_status.remote(), timeout=30)
