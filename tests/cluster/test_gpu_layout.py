"""Each engine, each tensor-parallel worker and the learner see exactly the GPUs Ray gave them.

Proven on Ray's logical GPUs (a CPU box told it has GPUs: Ray assigns them and sets
``CUDA_VISIBLE_DEVICES`` per actor as on a GPU node), through ``tests.cluster.gpu_layout_probe``
in a subprocess (its own one- or two-node Ray cluster, apart from the session's).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cluster.base.config import load_config
from cluster.base.placement import farm_bundles

REPO = Path(__file__).resolve().parents[2]


def _probe(config: str, overrides: list[str], nodes: list[int]) -> dict:
    spec = json.dumps({"config": config, "overrides": overrides, "nodes": nodes})
    done = subprocess.run(
        [sys.executable, "-m", "tests.cluster.gpu_layout_probe", spec],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_tensor_parallel_engines_and_learner_on_two_nodes_see_their_own_gpus() -> None:
    # configs/h100-8x.yaml scaled down: 3 engines of 2 GPUs + the learner on 2 nodes x 4 GPUs,
    # every device left to `auto` (decided from what Ray gave each part, not by the driver).
    auto = ["engine.device=auto", "learner.device=auto"]
    seen = _probe(
        "configs/h100-8x.yaml",
        ["run.engines=3", "engine.tensor_parallel_size=2", "placement.strategy=SPREAD", *auto],
        [4, 4],
    )
    taken = []
    for engine in seen["engines"]:
        assert engine["device"] == "cuda"
        assert engine["ray_ids"] == []  # the engine actor holds no GPU: its workers do
        assert engine["visible_to_vllm"] != ""  # vLLM's engine core is not told "no GPUs"
        workers = engine["workers"]
        assert len(workers) == 2
        assert len({w["node"] for w in workers}) == 1  # one engine's shards share a node
        for w in workers:
            assert w["ray_ids"] == [w["visible"]]  # each worker sees exactly its one GPU
            taken.append((w["node"], w["visible"]))
    learner = seen["learner"]
    assert learner["device"] == "cuda" and learner["ray_ids"] == [learner["visible"]]
    taken.append((learner["node"], learner["visible"]))
    assert len(taken) == len(set(taken)) == 7  # no GPU given to two parts
    assert len({node for node, _ in taken}) == 2  # SPREAD used both nodes


def test_one_gpu_shared_by_engine_and_learner() -> None:
    seen = _probe("configs/gpu-1x.yaml", ["engine.device=auto", "learner.device=auto"], [1])
    (engine,), learner = seen["engines"], seen["learner"]
    assert engine["visible"] == learner["visible"] == "0"
    assert engine["device"] == learner["device"] == "cuda"
    assert engine["node"] == learner["node"]


def test_auto_reserves_gpus_only_where_the_cluster_has_them() -> None:
    config = load_config(REPO / "configs" / "h100-8x.yaml",
                         ["engine.device=auto", "learner.device=auto"])  # fmt: skip
    engines, learner = farm_bundles(config, gpus_in_cluster=0)
    assert all("GPU" not in bundle for bundle in engines) and "GPU" not in learner
    engines, learner = farm_bundles(config, gpus_in_cluster=8)
    assert all(bundle["GPU"] == 1.0 for bundle in engines) and learner["GPU"] == 1.0
    # the learner's bundle follows its own device, not the engines'
    cpu_learner = load_config(REPO / "configs" / "h100-8x.yaml",
                              ["engine.device=auto", "learner.device=cpu"])  # fmt: skip
    engines, learner = farm_bundles(cpu_learner, gpus_in_cluster=8)
    assert engines[0]["GPU"] == 1.0 and "GPU" not in learner
