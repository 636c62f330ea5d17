"""``python -m tests.cluster.model_shipping_probe WORKDIR``: the warm start as a Ray task and
its model shipped to every node, on a two-node local cluster whose second node has one logical
GPU (Ray assigns it as on a GPU node). The warm start itself is a stand-in (``build``) that
writes a small model directory: what is tested is where it runs, what it holds, and how its
files reach the nodes. The JSON report goes to stdout."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from cluster.models.shipping import DIGEST_FILE


def build(base: str, config, log) -> Path:
    """A stand-in warm start: a model directory with a nested file, under the probe's workdir."""
    out = Path(os.environ["PROBE_WORKDIR"]) / "built" / "warm-model"
    (out / "tokenizer").mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(
        json.dumps({"base": base, "visible": os.environ.get("CUDA_VISIBLE_DEVICES")})
    )
    (out / "model.safetensors").write_bytes(os.urandom(1 << 20))
    (out / "tokenizer" / "vocab.json").write_text("{}")
    log(f"built {out}")
    return out


def main() -> None:
    import psutil
    import ray
    from ray.cluster_utils import Cluster

    from cluster.base.config import load_config
    from cluster.models.shipping import run_warm_start, ship_model

    workdir = Path(sys.argv[1])
    os.environ["PROBE_WORKDIR"] = str(workdir)
    cluster = Cluster()
    head = cluster.add_node(num_cpus=2, num_gpus=0)
    gpu_node = cluster.add_node(num_cpus=2, num_gpus=1)
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PROBE_WORKDIR": str(workdir)}})  # fmt: skip
    config = load_config("configs/gpu-1x.yaml", ["learner.device=auto", "engine.device=auto"])
    report = run_warm_start("base-model-id", config, build=build)
    time.sleep(1.0)
    report["task_process_alive_after"] = psutil.pid_exists(report["pid"])
    report["driver_pid"] = os.getpid()
    report["gpu_node"] = gpu_node.node_id
    report["head_node"] = head.node_id
    report["config_seen"] = json.loads((Path(report["path"]) / "config.json").read_text())
    # Shipping a model to a path no node has yet: one node stores it, the other (same disk
    # here) finds it there by its digest.
    fresh = workdir / "shipped" / "model"
    files = {"config.json": b"{}", "weights/part-0.bin": os.urandom(1 << 20)}
    report["fresh_ship"] = ship_model(str(fresh), files)
    report["fresh_files"] = sorted(
        str(p.relative_to(fresh)) for p in fresh.rglob("*") if p.is_file()
    )
    report["fresh_digest_marker"] = (fresh / DIGEST_FILE).exists()
    report["again"] = ship_model(str(fresh), files)
    print(json.dumps(report))
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main()
