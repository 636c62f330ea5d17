"""Which device a part runs on, decided where it runs.

``device: auto`` means "a GPU if this part was given one", and only two places can answer that:

- placement asks the cluster: bundles carry GPUs when some node offers them. The driver's own
  torch cannot answer (under ``ray job submit`` the driver may sit on a CPU-only head node, and a
  driver that sees every GPU of its node says nothing about what an actor will get);
- an actor asks Ray what it was given. Ray sets ``CUDA_VISIBLE_DEVICES`` in each actor to exactly
  the GPUs it assigned ("" for an actor given none), so a part sees its own devices and no other.

The one exception is an engine with ``tensor_parallel_size`` > 1: its actor holds no GPU (its
placement group's GPU bundles are for vLLM's Ray executor's workers), yet it runs on CUDA, and
vLLM's engine core must not inherit Ray's "" for it (``expose_devices_for_workers``).
"""

from __future__ import annotations

import os

DEVICE_ENV = "CUDA_VISIBLE_DEVICES"


def cluster_gpus() -> float:
    """GPUs the connected Ray cluster offers in all (0 without Ray)."""
    import ray

    if not ray.is_initialized():
        return 0.0
    return float(ray.cluster_resources().get("GPU", 0.0))


def placement_device(device: str, gpus_in_cluster: float) -> str:
    """The device a part's bundle is reserved for: ``auto`` is cuda when the cluster has GPUs."""
    if device != "auto":
        return "cuda" if device.startswith("cuda") else device
    return "cuda" if gpus_in_cluster > 0 else "cpu"


def ray_actor_id() -> str | None:
    """This Ray actor's id (kept across its restarts), or None outside an actor."""
    try:
        import ray
    except ImportError:
        return None
    if not ray.is_initialized():
        return None
    return ray.get_runtime_context().get_actor_id()


def assigned_gpus() -> list[str]:
    """The GPU ids Ray assigned this actor (empty outside a Ray actor or for a CPU actor)."""
    if ray_actor_id() is None:
        return []
    import ray

    return [str(i) for i in ray.get_gpu_ids()]


def actor_device(device: str, tensor_parallel_size: int = 1) -> str:
    """The device a part runs on, asked where it runs: inside a Ray actor, ``auto`` is cuda
    exactly when Ray gave it GPUs (or, for a tensor-parallel engine, its workers); elsewhere
    (a script, a test, ``rlfarm eval`` without Ray) when torch sees CUDA."""
    if device != "auto":
        return device
    if tensor_parallel_size > 1:
        return "cuda"  # only GPUs can shard an engine (the config refuses TP on CPU)
    if ray_actor_id() is not None:
        return "cuda" if assigned_gpus() else "cpu"
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def expose_devices_for_workers() -> None:
    """Before a tensor-parallel engine starts vLLM's Ray executor inside its actor: drop the
    "" Ray set for this GPU-less actor, so vLLM's engine core sees the CUDA platform, while each
    of its workers gets the one GPU Ray assigns it in the placement group."""
    if os.environ.get(DEVICE_ENV) == "":
        del os.environ[DEVICE_ENV]
