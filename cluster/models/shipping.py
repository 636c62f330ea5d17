"""A model directory made on one node, on every node: built in a Ray task, shipped through Ray.

Engines, the learner and the rollout workers each open the run's model by path on their own
node, so a model rlfarm makes (a ``builtin:`` conversion, an SFT-warmed copy) must exist at that
path everywhere, and nothing may assume a shared disk. Two pieces:

- ``run_warm_start``: the SFT warm start runs as a Ray task, on a GPU when the learner would get
  one (the driver of a ``ray job submit`` sees every GPU of its node and must not hold one), in a
  worker process that exits when the task ends, so every byte of device memory it used is freed
  before the engines and the learner start. It returns the model's files when other nodes need
  them.
- ``ship_model``: the files travel through Ray's object store to one task per live node, which
  writes them atomically at the same absolute path (each node's own cache: the path lives under
  ``$RLFARM_HOME``, the same on every node) and checks their digest; a node that already holds
  that digest keeps its copy.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

DIGEST_FILE = ".rlfarm-files-sha256"


def model_files(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` by relative path (the digest marker excluded)."""
    directory = Path(directory)
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != DIGEST_FILE
    }


def files_digest(files: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()


def store_model(destination: str, files: dict[str, bytes], digest: str) -> str:
    """Write ``files`` at ``destination`` on this node unless it already holds ``digest``:
    "present" or "stored". Written beside it and renamed, so no reader sees half a model."""
    target = Path(destination)
    marker = target / DIGEST_FILE
    if marker.exists() and marker.read_text() == digest:
        return "present"
    if files_digest(files) != digest:
        raise ValueError(f"model files for {destination} arrived damaged (digest differs)")
    staging = target.with_name(f"{target.name}.incoming-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    for name, data in files.items():
        path = staging / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (staging / DIGEST_FILE).write_text(digest)
    if target.exists() and not marker.exists():  # a copy from before digests: replaced whole
        shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(staging, target)
    except OSError:
        # Nodes sharing a filesystem (one machine, an NFS home) race to the same path: the
        # first copy stands if it is this one.
        shutil.rmtree(staging, ignore_errors=True)
        if marker.exists() and marker.read_text() == digest:
            return "present"
        raise
    return "stored"


def mark_local(directory: Path) -> str:
    """Record the digest of a model this node made, so shipping knows it is already here."""
    digest = files_digest(model_files(directory))
    (Path(directory) / DIGEST_FILE).write_text(digest)
    return digest


def live_nodes() -> list[str]:
    import ray

    return [n["NodeID"] for n in ray.nodes() if n.get("Alive")]


def ship_model(directory: str, files: dict[str, bytes] | None = None) -> dict[str, str]:
    """Make ``directory`` (a model this node holds, or ``files`` when it is elsewhere) exist on
    every live node; {node id: "present" | "stored"}."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if files is None:  # this node's own model: marked, so this node (or its disk) has it
        mark_local(Path(directory))
        files = model_files(Path(directory))
    digest = files_digest(files)
    shared = ray.put(files)  # once into the object store; each node pulls its own copy
    store = ray.remote(num_cpus=0)(store_model)
    nodes = live_nodes()
    answers = ray.get([
        store.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
        .remote(directory, shared, digest)
        for node in nodes
    ])  # fmt: skip
    return dict(zip(nodes, answers, strict=True))


def _warm_start_task(base: str, config: Any, with_files: bool, build: Callable | None) -> dict:
    """The warm start in a Ray worker (see ``run_warm_start``): where it ran and what it made."""
    import ray
    import torch

    from cluster.models.warm_start import warm_start

    if not ray.get_gpu_ids():
        # Ray limits a 1-CPU task's threads to one; nothing else runs before the farm starts.
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    path = (build or warm_start)(base, config, log=lambda line: print(line, flush=True))
    mark_local(path)
    return {
        "path": str(path),
        "node": ray.get_runtime_context().get_node_id(),
        "pid": os.getpid(),
        "gpus": [str(i) for i in ray.get_gpu_ids()],
        "files": model_files(path) if with_files else None,
    }


def warm_start_resources(config: Any) -> dict[str, float]:
    """One GPU when the learner would run on one (the SFT is a learner's job), else one CPU."""
    from serving.devices import cluster_gpus, placement_device

    if placement_device(config.learner.device, cluster_gpus()) == "cuda":
        return {"num_cpus": 1, "num_gpus": 1}
    return {"num_cpus": 1, "num_gpus": 0}


def run_warm_start(base: str, config: Any, build: Callable | None = None) -> dict:
    """The SFT-warmed model of ``base`` on every node: built (or found cached) by a Ray task on
    a GPU when the cluster has them, then shipped to the nodes that lack it. Returns the task's
    report (path, node, pid, gpus) and ``shipped``: {node: "present" | "stored"}. ``build``
    stands in for ``warm_start.warm_start`` (same signature), for tests."""
    import ray

    nodes = live_nodes()
    task = ray.remote(max_calls=1)(_warm_start_task)  # its process exits: device memory freed
    report = ray.get(
        task.options(**warm_start_resources(config)).remote(base, config, len(nodes) > 1, build)
    )
    files = report.pop("files")
    report["shipped"] = ship_model(report["path"], files) if files is not None else {}
    return report
