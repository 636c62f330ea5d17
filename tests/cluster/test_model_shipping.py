"""The warm start runs as a Ray task on a GPU bundle, in a process that ends with it, and the
model it makes reaches every node through Ray (``cluster.models.shipping``), on a two-node local
cluster with a logical GPU (through ``tests.cluster.model_shipping_probe``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.models.shipping import DIGEST_FILE, files_digest, store_model

REPO = Path(__file__).parents[2]


def test_warm_start_runs_on_the_gpu_node_and_its_model_reaches_every_node(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "tests.cluster.model_shipping_probe", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    # On the node with the GPU, holding it (Ray's CUDA_VISIBLE_DEVICES), not in the driver.
    assert seen["node"] == seen["gpu_node"] and seen["gpus"] == ["0"]
    assert seen["config_seen"]["visible"] == "0"
    assert seen["pid"] != seen["driver_pid"]
    assert not seen["task_process_alive_after"], "the task's process must end: memory freed"
    # Every node answered for the warm model; a fresh path is stored once and found after.
    assert set(seen["shipped"]) == {seen["gpu_node"], seen["head_node"]}
    assert sorted(seen["fresh_ship"].values()) == ["present", "stored"]
    assert seen["fresh_files"] == [DIGEST_FILE, "config.json", "weights/part-0.bin"]
    assert set(seen["again"].values()) == {"present"}


def test_a_damaged_delivery_is_refused_and_writes_nothing(tmp_path):
    files = {"config.json": b"{}"}
    with pytest.raises(ValueError, match="arrived damaged"):
        store_model(str(tmp_path / "model"), files, files_digest({"config.json": b"[]"}))
    assert not (tmp_path / "model").exists()
    assert store_model(str(tmp_path / "model"), files, files_digest(files)) == "stored"
    assert store_model(str(tmp_path / "model"), files, files_digest(files)) == "present"
