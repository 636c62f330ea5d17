"""Checkpoints and resume: a hard-killed learner continues at the same step, same state."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from learner.config import LearnerConfig
from learner.trainer import Learner
from tests.learner.resume_worker import batch_at, config_for

REPO = Path(__file__).resolve().parents[2]
SAVE_AT = 3
WORKER_DEADLINE_S = 240  # generous: the worker needs seconds, the machine may be busy


def run_worker_until(model_dir: Path, checkpoint: Path, last_step: int) -> dict[int, float]:
    """Start the worker, read its losses up to ``last_step``, then SIGKILL it mid-training."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.learner.resume_worker", str(model_dir), str(checkpoint),
         str(SAVE_AT)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    losses: dict[int, float] = {}
    deadline = time.monotonic() + WORKER_DEADLINE_S
    try:
        assert worker.stdout is not None
        for line in worker.stdout:
            record = json.loads(line)
            if "step" in record:
                losses[record["step"]] = record["loss"]
            if last_step in losses or time.monotonic() > deadline:
                break
    finally:
        os.kill(worker.pid, signal.SIGKILL)  # a hard kill: no cleanup code runs
        worker.wait(timeout=30)
    assert worker.returncode == -signal.SIGKILL
    assert last_step in losses, f"worker stopped early; saw steps {sorted(losses)}"
    return losses


def test_resume_after_kill_reproduces_the_next_updates(tiny_model_dir, tmp_path):
    checkpoint = tmp_path / "ckpt"
    losses = run_worker_until(tiny_model_dir, checkpoint, last_step=SAVE_AT + 2)

    resumed = Learner(config_for(str(tiny_model_dir)))
    extra = resumed.load_checkpoint(checkpoint)
    assert extra == {"saved_by": "resume_worker"}
    assert resumed.step == SAVE_AT
    assert resumed.data_cursor == 2 * SAVE_AT
    # the learner's record of what it trained comes back with it: group ids per update
    assert resumed.record == [[f"{2 * k}-0", f"{2 * k}-1"] for k in range(SAVE_AT)]
    saved_optimizer = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    for key, state in resumed.optimizer.state_dict()["state"].items():
        for name, value in state.items():
            torch.testing.assert_close(value, saved_optimizer["state"][key][name])
    assert resumed.optimizer.state_dict()["state"][0]["step"].item() == SAVE_AT

    # the next two updates (the second depends on Adam's moments) match the killed run's
    for step in (SAVE_AT + 1, SAVE_AT + 2):
        metrics = resumed.train_step(batch_at(resumed.data_cursor))
        assert metrics.step == step
        assert metrics.loss == pytest.approx(losses[step], rel=1e-5, abs=1e-7)
    assert len(resumed.record) == SAVE_AT + 2


def test_a_save_killed_between_renames_still_leaves_a_loadable_checkpoint(tiny_model_dir, tmp_path):
    learner = Learner(config_for(str(tiny_model_dir)))
    learner.train_step(batch_at(0))
    checkpoint = tmp_path / "ckpt"
    learner.save_checkpoint(checkpoint, extra={"n": 1})
    # the states a kill can leave: a half-written .tmp, and the old one moved aside
    (tmp_path / "ckpt.tmp").mkdir()
    (tmp_path / "ckpt.tmp" / "garbage").write_text("half written")
    shutil.move(checkpoint, tmp_path / "ckpt.old")
    fresh = Learner(config_for(str(tiny_model_dir)))
    assert fresh.load_checkpoint(checkpoint) == {"n": 1}
    assert fresh.step == 1
    # the next save cleans up after the killed one
    fresh.save_checkpoint(checkpoint)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_loading_into_a_different_adapter_setup_is_refused(tiny_model_dir, tmp_path):
    learner = Learner(config_for(str(tiny_model_dir)))
    learner.save_checkpoint(tmp_path / "ckpt")
    other = Learner(LearnerConfig(model_path=str(tiny_model_dir), device="cpu", lora_r=4))
    with pytest.raises(ValueError, match="lora_r"):
        other.load_checkpoint(tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        other.load_checkpoint(tmp_path / "missing")
