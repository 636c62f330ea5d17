"""``rlfarm audit``: constructed runs, each with one defect, and the audit must name it.

A run here is what a farm writes (the ledger's start and fate lines, a checkpoint whose learner
state carries the learner's record, events, the summary), built line by line so each defect is
exactly where the test put it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from cluster.commands.cli import main as rlfarm
from cluster.farm.audit import audit_run
from cluster.farm.checkpoints import CheckpointStore, DriverState
from learner.types import LearnerState


class RunBuilder:
    """Writes a run directory the way the farm does."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "run"
        self.dir.mkdir()
        self.lines: list[dict] = []
        self.draws = 0

    def start(self, group: str, episodes: int = 2, draw: int | None = None, attempt: int = 0,
              replay_of: str = "") -> None:  # fmt: skip
        if draw is None:
            draw, self.draws = self.draws, self.draws + 1
        self.lines.append({"event": "start", "group_id": group, "task_id": f"t-{draw}",
                           "tier": "warmup", "episodes": episodes, "seed": 100 + draw,
                           "draw": draw, "attempt": attempt, "replay_of": replay_of})  # fmt: skip

    def fate(self, group: str, fate: str, step: int = -1, episodes=(0, 1), **extra) -> None:
        for episode in episodes:
            self.lines.append({"group_id": group, "episode": episode, "task_id": "t",
                               "tier": "warmup", "fate": fate, "reason": "",
                               "learner_step": step, **extra})  # fmt: skip

    def trained(self, update: int, *groups: str) -> None:
        for group in groups:
            self.start(group)
            self.fate(group, "trained", update)

    def checkpoint(self, record: list[list[str]]) -> None:
        state = {"format": 1, "step": len(record), "version": len(record), "data_cursor": 0,
                 "record": record, "config": {}, "extra": {}}  # fmt: skip
        driver = DriverState(len(record), len(record), [], {}, {})
        blobs = {"state.json": json.dumps(state).encode()}
        CheckpointStore(self.dir, keep=3).save(driver, LearnerState(blobs))

    def write(self, finished: bool = True, events: list[str] = ()) -> Path:
        ledger = self.dir / "ledger.jsonl"
        ledger.write_text("".join(json.dumps(line) + "\n" for line in self.lines))
        (self.dir / "events.log").write_text("".join(f"{e}\n" for e in events))
        if finished:
            summary = self.dir / "summary.json"
            summary.write_text("{}")
            later = time.time() + 1  # the driver writes its summary after its last ledger line
            os.utime(summary, (later, later))
        return self.dir


def _clean(tmp_path: Path) -> RunBuilder:
    run = RunBuilder(tmp_path)
    run.trained(1, "a", "b")
    run.trained(2, "c", "d")
    run.checkpoint([["a", "b"], ["c", "d"]])
    return run


def test_a_clean_run_has_no_defect_and_the_command_exits_0(tmp_path, capsys):
    run = _clean(tmp_path)
    run.start("z")
    run.fate("z", "dropped_zero_variance")
    path = run.write()
    report = audit_run(path)
    assert report.defects == 0, report.as_dict()
    assert report.finished and report.groups_started == 5 and report.episodes_started == 10
    assert report.fates == {"trained": 8, "dropped_zero_variance": 2}
    assert report.updates_booked == report.updates_checkpointed == 2
    assert rlfarm(["audit", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["defects"] == 0


def test_a_group_trained_twice_is_duplicated(tmp_path, capsys):
    run = _clean(tmp_path)
    run.fate("a", "trained", 3)  # the ledger books it again, into another update
    run.checkpoint([["a", "b"], ["c", "d"], ["a"]])  # and the learner did train it again
    report = audit_run(run.write())
    assert report.duplicated.count >= 2
    text = " ".join(report.duplicated.examples)
    assert "group a trained into updates 1 and 3 (the learner's record)" in text
    assert "a/0 booked trained into updates 1 and 3 with no rollback between" in text
    assert report.lost.count == 0
    assert rlfarm(["audit", str(run.dir)]) == 1
    assert "duplicated: " in capsys.readouterr().out


def test_a_group_booked_trained_that_the_learner_never_trained_is_lost(tmp_path):
    run = _clean(tmp_path)
    run.trained(3, "e", "f")
    run.checkpoint([["a", "b"], ["c", "d"], ["e"]])  # f never reached the weights
    report = audit_run(run.write())
    assert report.lost.count == 1
    assert "group f booked trained into update 3" in report.lost.examples[0]


def test_a_missing_fate_is_unaccounted_in_a_finished_run_and_in_flight_in_a_live_one(tmp_path):
    run = _clean(tmp_path)
    run.start("g")
    run.fate("g", "failed", episodes=(0,))  # episode 1 never got a fate
    finished = audit_run(run.write(finished=True))
    assert finished.unaccounted.count == 1
    assert "g: episodes [1] have no fate" in finished.unaccounted.examples[0]
    (run.dir / "summary.json").unlink()
    live = audit_run(run.write(finished=False))
    assert live.unaccounted.count == 0 and live.in_flight == 1


def test_a_learner_restored_one_update_back_loses_that_update(tmp_path):
    """The race issue 25 names: update 2 was booked while a restarted learner continued from
    update 1, so its next update (booked as 3) is the learner's second."""
    run = _clean(tmp_path)
    run.trained(3, "e", "f")
    run.checkpoint([["a", "b"], ["e", "f"]])  # written after update 3 was booked (2 entries)
    report = audit_run(run.write())
    lost = " ".join(report.lost.examples)
    assert "group c booked trained into update 2" in lost
    assert "group d booked trained into update 2" in lost
    assert report.contradictory.count >= 2  # e, f: trained by the learner into 2, booked 3
    assert report.defects > 0


def test_a_rollback_is_legitimate_but_any_other_second_fate_contradicts(tmp_path):
    run = _clean(tmp_path)
    run.trained(3, "e")
    run.fate("e", "interrupted", rolled_back=3)  # a resume from the checkpoint of update 2
    run.start("e-again", draw=4, attempt=1, replay_of="e")  # which replays the draw first
    run.fate("e-again", "dropped_zero_variance")
    run.start("h")
    run.fate("h", "dropped_stale")
    run.fate("h", "failed", episodes=(1,))  # no resume writes this
    report = audit_run(run.write())
    assert report.rolled_back_episodes == 2 and report.lost.count == 0
    assert report.draws_dropped.count == 0 and report.duplicated.count == 0
    assert report.contradictory.count == 1
    assert "h/1 booked dropped_stale, then failed" in report.contradictory.examples[0]


def test_a_draw_lost_to_a_fault_must_be_replayed_before_new_draws(tmp_path):
    run = _clean(tmp_path)
    run.start("lost", draw=7)
    run.fate("lost", "failed")
    run.start("next", draw=8)  # a new draw started; the lost one was never replayed
    run.fate("next", "dropped_zero_variance")
    report = audit_run(run.write())
    assert report.draws_dropped.count == 1
    assert "draw 7 (t-7, seed 107) lost with group lost" in report.draws_dropped.examples[0]

    (tmp_path / "second").mkdir()
    replayed = RunBuilder(tmp_path / "second")
    replayed.start("lost", draw=0)
    replayed.fate("lost", "failed")
    replayed.start("again", draw=0, attempt=1, replay_of="lost")
    replayed.fate("again", "trained", 1)
    replayed.start("next", draw=1)
    replayed.fate("next", "trained", 1)
    replayed.checkpoint([["again", "next"]])
    report = audit_run(replayed.write())
    assert report.defects == 0, report.as_dict()
    assert report.draws == {"drawn": 2, "settled": 2, "replays": 1, "unsettled_pending": 0,
                            "given_up": 0, "trained_twice": 0}  # fmt: skip

    # A draw lost as often as run.max_replays allows is given up, by rule: not a defect.
    (tmp_path / "third").mkdir()
    exhausted = RunBuilder(tmp_path / "third")
    (exhausted.dir / "config.yaml").write_text("run:\n  max_replays: 1\n")
    exhausted.start("lost", draw=0)
    exhausted.fate("lost", "failed")
    exhausted.start("again", draw=0, attempt=1, replay_of="lost")
    exhausted.fate("again", "failed")
    exhausted.start("next", draw=1)
    exhausted.fate("next", "dropped_zero_variance")
    report = audit_run(exhausted.write())
    assert report.defects == 0 and report.draws["given_up"] == 1, report.as_dict()


def test_a_draw_trained_by_two_of_its_groups_is_duplicated(tmp_path):
    run = RunBuilder(tmp_path)
    run.start("first", draw=0)
    run.fate("first", "trained", 1)
    run.start("again", draw=0, attempt=1, replay_of="first")  # replayed though it had settled
    run.fate("again", "trained", 1)
    run.checkpoint([["first", "again"]])
    report = audit_run(run.write())
    assert "draw 0 trained by groups ['first', 'again']" in report.duplicated.examples


def test_faults_count_the_farms_own_lines_and_survive_only_when_recovered(tmp_path):
    run = _clean(tmp_path)
    events = [
        "[t] fault injected after update 1: kill_engine (engine-0)",
        "[t] fault recovered after update 1: kill_engine (engine-0 answers from process 2, was 1)",
        "[t] fault injected after update 1: kill_sandbox (rollout-worker-0's sandbox process 9)",
        "[t] fault NOT recovered after update 1: kill_sandbox (nothing replaced it within 300 s)",
        "[t] fault injected after update 2: kill_learner (the learner actor)",
        "[t] fault recovered after update 2: kill_learner (the learner actor answers ...)",
    ]
    report = audit_run(run.write(events=events))
    assert report.faults_injected == 3
    assert report.faults["kill_engine@1"]["survived"]
    assert not report.faults["kill_sandbox@1"]["survived"]  # never replaced
    assert not report.faults["kill_learner@2"]["survived"]  # recovered, but no update after it
    assert report.faults_survived == 1


def test_the_episode_log_must_agree_with_the_ledger(tmp_path):
    run = _clean(tmp_path)
    episodes = run.dir / "episodes"
    episodes.mkdir()
    rows = [{"group_id": "a", "episode": 0, "fate": "trained"},
            {"group_id": "c", "episode": 1, "fate": "dropped_stale"}]  # fmt: skip
    (episodes / "000000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = audit_run(run.write())
    assert report.contradictory.count == 1
    assert "c/1 as dropped_stale" in report.contradictory.examples[0]
