"""Curriculum promotion, held-out split, and the ledger's balance."""

from __future__ import annotations

from cluster.config import CurriculumSettings
from cluster.farm.curriculum import CurriculumSampler
from cluster.farm.ledger import Ledger, read_ledger
from cluster.task_split import TaskRef, split_holdout
from rollout.types import Trajectory, TrajectoryGroup

TASKS = [
    TaskRef(f"{tier}-{i}", tier)
    for tier in ("warmup", "beginner", "intermediate")
    for i in range(10)
]


def test_holdout_split_is_stable_and_disjoint():
    train, held = split_holdout(TASKS, 0.2, seed=3)
    again_train, again_held = split_holdout(TASKS, 0.2, seed=3)
    assert (train, held) == (again_train, again_held)
    assert not {t.id for t in train} & {t.id for t in held}
    assert len(held) == 6 and {t.tier for t in held} == {"warmup", "beginner", "intermediate"}


def test_curriculum_starts_easy_and_promotes_on_success():
    settings = CurriculumSettings(
        tiers=["warmup", "beginner", "intermediate"], promote_at=0.5, window=8
    )
    sampler = CurriculumSampler(TASKS, settings, seed=0)
    assert {sampler.next()[0].tier for _ in range(50)} == {"warmup"}
    assert not sampler.observe("warmup", [False] * 8)
    assert sampler.observe("warmup", [True] * 8)
    assert sampler.frontier_tier == "beginner"
    tiers = [sampler.next()[0].tier for _ in range(200)]
    assert set(tiers) == {"warmup", "beginner"}
    assert tiers.count("beginner") > tiers.count("warmup") / 2


def _group(gid, n=4, failed=False):
    trajs = [
        Trajectory("t", "warmup", gid, i, 0, end="failed" if failed else "achieved")
        for i in range(n)
    ]
    return TrajectoryGroup(gid, "t", "warmup", 0, trajs, failed=failed)


def test_ledger_balances_and_records_each_episode(tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl")
    ledger.start(12)
    ledger.record(_group("a"), "trained", step=1)
    ledger.record(_group("b", failed=True), "failed", "worker died")
    assert not ledger.balanced  # a group still unaccounted for
    ledger.record(_group("c"), "dropped_stale", "staleness 2")
    assert ledger.balanced
    assert ledger.summary()["trained"] == 4
    rows = read_ledger(tmp_path / "ledger.jsonl")
    assert len(rows) == 12 and {r["fate"] for r in rows} == {"trained", "failed", "dropped_stale"}
    assert all(r["reason"] == "worker died" for r in rows if r["fate"] == "failed")
