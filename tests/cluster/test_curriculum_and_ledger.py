"""Curriculum promotion, held-out split, and the ledger's balance."""

from __future__ import annotations

import json

from cluster.base.config import CurriculumSettings
from cluster.base.task_split import split_holdout
from cluster.farm.curriculum import CurriculumSampler
from cluster.farm.ledger import Ledger, read_ledger
from rollout.env_contract import EnvTask
from rollout.types import Trajectory, TrajectoryGroup

TASKS = [
    EnvTask(f"{tier}-{i}", tier)
    for tier in ("warmup", "beginner", "intermediate")
    for i in range(10)
]


def test_holdout_split_is_stable_and_disjoint():
    train, held = split_holdout(TASKS, 0.2, seed=3)
    again_train, again_held = split_holdout(TASKS, 0.2, seed=3)
    assert (train, held) == (again_train, again_held)
    assert not {t.id for t in train} & {t.id for t in held}
    assert len(held) == 6 and {t.tier for t in held} == {"warmup", "beginner", "intermediate"}


def test_the_split_has_two_held_out_views_that_training_never_plays():
    from cluster.base.config import load_config
    from cluster.base.task_split import NEW_NAMES, NEW_TASKS, task_split, unseen_operations

    config = load_config(None, ["run.eval_variants=2"])
    split = task_split(config)
    views = split.views()
    assert list(views) == [NEW_NAMES, NEW_TASKS] and views[NEW_TASKS] == split.heldout
    train = {t.id for t in split.train}
    # new_names: two renamed copies of each training task that names a resource, in its tier.
    bases = [t.id.split("@")[0] for t in views[NEW_NAMES]]
    assert set(bases) <= train and all(bases.count(b) == 2 for b in bases)
    assert {t.id.split("@")[1] for t in views[NEW_NAMES]} == {"eval0", "eval1"}
    tiers = {t.id: t.tier for t in split.train}
    assert all(tiers[b] == t.tier for b, t in zip(bases, views[NEW_NAMES], strict=True))
    # new_tasks: what their solutions need that no training solution showed, per task.
    unseen = unseen_operations(config, split)
    assert set(unseen) == {t.id for t in split.heldout}
    assert unseen["sqs-list-queues"] == ["sqs list-queues"]  # no training task lists queues
    # A generic env has no renamed copies: new_tasks only.
    word_env = ["env.backend=python", "env.factory=tests.envs.word_env:WordEnv"]
    generic = load_config(None, [*word_env, "curriculum.tiers=null", "curriculum.start_tier=null"])
    assert list(task_split(generic).views()) == [NEW_TASKS]


def test_rl_groups_play_fresh_renamed_copies_of_renamable_tasks():
    from rollout.env_backends import Renamer

    settings = CurriculumSettings(tiers=["warmup", "beginner", "intermediate"])
    renamer = Renamer(frozenset(t.id for t in TASKS if t.id.endswith(("1", "2"))))
    sampler = CurriculumSampler(TASKS, settings, seed=0, renamer=renamer)
    drawn = [sampler.next() for _ in range(300)]
    for task, seed in drawn:
        base, _, copy = task.id.partition("@")
        if base.endswith(("1", "2")):
            assert copy == f"rl{seed}"  # a new copy per group, named by the group's seed
        else:
            assert not copy
    assert len({t.id for t, _ in drawn if "@" in t.id}) > 40
    # Without curriculum.rename the tasks are played as written; the draws are the same.
    as_written = CurriculumSettings(tiers=settings.tiers, rename=False)
    plain = CurriculumSampler(TASKS, as_written, seed=0, renamer=renamer)
    assert [(t.id.split("@")[0], s) for t, s in drawn] == [
        (t.id, s) for t, s in (plain.next() for _ in range(300))
    ]


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
    for gid in "abc":
        ledger.start(gid, "t", "warmup", 4)
    ledger.record(_group("a"), "trained", step=1)
    ledger.record(_group("b", failed=True), "failed", "worker died")
    assert not ledger.balanced  # a group still unaccounted for
    ledger.record(_group("c"), "dropped_stale", "staleness 2")
    assert ledger.balanced
    assert ledger.summary()["trained"] == 4
    rows = read_ledger(tmp_path / "ledger.jsonl")
    assert len(rows) == 12 and {r["fate"] for r in rows} == {"trained", "failed", "dropped_stale"}
    assert all(r["reason"] == "worker died" for r in rows if r["fate"] == "failed")


def test_every_way_out_books_open_groups_and_a_resume_rolls_back_lost_updates(tmp_path):
    path = tmp_path / "ledger.jsonl"
    ledger = Ledger(path)
    for gid in ("a", "b", "c", "d", "e"):
        ledger.start(gid, "t", "warmup", 4)
    ledger.record(_group("a"), "trained", step=1)
    ledger.record(_group("b"), "trained", step=2)
    ledger.record(_group("c"), "failed", "engine died")
    ledger.record(_group("d"), "trained", step=3)  # update 3 will be lost: no checkpoint of it
    assert not ledger.balanced and set(ledger.open) == {"e"}
    ledger.close()  # the driver is killed here: "e" was in flight

    resumed = Ledger.resume(path, last_update=2, reason="driver killed")
    summary = resumed.summary()
    assert resumed.balanced and not resumed.open
    assert summary == {"started": 20, "trained": 8, "dropped_stale": 0, "dropped_zero_variance": 0,
                       "failed": 4, "dropped_end_of_run": 0, "interrupted": 8,
                       "rollout_only": 0}  # fmt: skip
    final = {(r["group_id"], r["episode"]): r for r in read_ledger(path)}
    assert len(final) == 20
    assert {final[("d", i)]["fate"] for i in range(4)} == {"interrupted"}
    assert "update 3" in final[("d", 0)]["reason"] and "in flight" in final[("e", 0)]["reason"]
    # Later runs append; an error exit books whatever is still open.
    resumed.start("f", "t", "warmup", 4)
    assert resumed.interrupt_open("stopped by SIGTERM") == 4 and resumed.balanced
    resumed.close()
    again = Ledger.resume(path, last_update=2, reason="again")
    assert again.summary() == {**summary, "started": 24, "interrupted": 12}


def test_a_line_cut_short_by_a_kill_is_skipped_and_its_episode_interrupted(tmp_path):
    path = tmp_path / "ledger.jsonl"
    ledger = Ledger(path)
    ledger.start("a", "t", "warmup", 2)
    ledger.record(_group("a", n=2), "trained", step=1)
    ledger.close()
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])  # the last write was cut
    resumed = Ledger.resume(path, last_update=1, reason="killed mid-write")
    assert resumed.balanced and resumed.summary()["trained"] == 1
    assert resumed.summary()["interrupted"] == 1


def test_the_curriculum_state_survives_a_checkpoint():
    settings = CurriculumSettings(tiers=["warmup", "beginner"], promote_at=0.5, window=4)
    sampler = CurriculumSampler(TASKS, settings, seed=3)
    sampler.observe("warmup", [True] * 4)
    [sampler.next() for _ in range(5)]
    state = json.loads(json.dumps(sampler.state()))  # what a checkpoint file holds
    copy = CurriculumSampler(TASKS, settings, seed=99)
    copy.load_state(state)
    assert copy.frontier_tier == "beginner"
    assert [copy.next() for _ in range(20)] == [sampler.next() for _ in range(20)]


def test_a_resume_replays_every_draw_a_kill_or_rollback_left_unsettled(tmp_path):
    """Draws 0-4: 0 trained before the checkpoint, 1 trained into the lost update 3, 2 in
    flight at the kill, 3 failed then replayed and trained, 4 failed and its replay in flight."""
    path = tmp_path / "ledger.jsonl"
    ledger = Ledger(path)
    lost: list = []
    ledger.on_lost = lost.append
    for gid, draw in (("a", 0), ("b", 1), ("c", 2), ("d", 3), ("e", 4)):
        ledger.start(gid, f"t{draw}", "warmup", 4, seed=100 + draw, draw=draw)
    ledger.record(_group("a"), "trained", step=1)
    ledger.record(_group("b"), "trained", step=3)
    ledger.record(_group("d"), "failed", "engine died")
    ledger.record(_group("e"), "failed", "worker died")
    assert [g.group_id for g in lost] == ["d", "e"]  # handed to the player while the run goes on
    ledger.start("d2", "t3", "warmup", 4, seed=103, draw=3, attempt=1, replay_of="d")
    ledger.record(_group("d2"), "trained", step=2)
    ledger.start("e2", "t4", "warmup", 4, seed=104, draw=4, attempt=1, replay_of="e")
    ledger.close()  # killed: c and e2 in flight; update 3 (b) was never checkpointed

    resumed = Ledger.resume(path, last_update=2, reason="driver killed")
    assert resumed.next_draw == 5
    replays = {g.draw: g for g in resumed.replays}
    assert set(replays) == {1, 2, 4}  # rolled back, in flight, and a replay in flight
    assert (replays[1].group_id, replays[1].seed, replays[1].task_id) == ("b", 101, "t1")
    assert (replays[4].group_id, replays[4].attempt) == ("e2", 1)  # its next try is the 2nd
    rollback = [line for line in map(json.loads, path.read_text().splitlines())
                if line.get("rolled_back")]  # fmt: skip
    assert len(rollback) == 4 and {line["group_id"] for line in rollback} == {"b"}
    assert rollback[0]["rolled_back"] == 3


def test_draws_are_numbered_and_a_resume_continues_past_the_ones_made():
    settings = CurriculumSettings(tiers=["warmup", "beginner"])
    first = CurriculumSampler(TASKS, settings, seed=5).next_draw()
    sampler = CurriculumSampler(TASKS, settings, seed=5)
    draws = [sampler.next_draw() for _ in range(6)]
    assert [d.index for d in draws] == list(range(6)) and draws[0] == first
    again = CurriculumSampler(TASKS, settings, seed=5)
    again.skip_to(4)  # the ledger saw draws 0-3
    assert again.next_draw() == draws[4]  # draw n depends on the seed, n and the frontier only
    again.skip_to(2)  # never backwards
    assert again.next_draw().index == 5


def test_learnability_sends_groups_where_episodes_disagree_and_survives_a_checkpoint():
    settings = CurriculumSettings(
        tiers=["warmup"], window=64, task_sampling="learnability", task_window=16
    )
    sampler = CurriculumSampler(TASKS, settings, seed=0)
    # Before any outcome every task weighs the same: the first draws are spread like uniform's.
    assert len({sampler.next()[0].id for _ in range(60)}) == 10
    # warmup-0 and -1 always solved, -2 to -8 never, warmup-9 half the time; renamed copies
    # count for their task (an unknown id counts for its tier only).
    for i in range(10):
        wins = {0: 8, 1: 8, 9: 4}.get(i, 0)
        sampler.observe("warmup", [True] * wins + [False] * (8 - wins), f"warmup-{i}@rl{i}")
    sampler.observe("warmup", [True] * 8, "not-a-task")
    picks = [sampler.next()[0].id for _ in range(600)]
    half = picks.count("warmup-9")
    # p(1-p): warmup-9 (p ~0.5, 0.25) against never solved (p ~0.02) or always solved (p ~0.9).
    assert half > 2 * max(picks.count(f"warmup-{i}") for i in range(9)), picks
    assert all(f"warmup-{i}" in picks for i in range(10))  # every task is still explored
    assert abs(sampler.learnability("warmup-9", "warmup") - 0.25) < 0.01
    # A checkpoint keeps the per-task outcomes, so a resumed run draws the same tasks.
    state = json.loads(json.dumps(sampler.state()))
    copy = CurriculumSampler(TASKS, settings, seed=99)
    copy.load_state(state)
    assert [copy.next() for _ in range(50)] == [sampler.next() for _ in range(50)]
    uniform = CurriculumSampler(TASKS, CurriculumSettings(tiers=["warmup"]), seed=0)
    for i in range(10):
        uniform.observe("warmup", [i == 9] * 8, f"warmup-{i}")
    assert [uniform.next()[0].id for _ in range(600)].count("warmup-9") < 100
    # A tier where nothing has been solved yet is still drawn from, every task of it.
    hopeless = CurriculumSampler(TASKS, settings, seed=0)
    for i in range(10):
        hopeless.observe("warmup", [False] * 8, f"warmup-{i}")
    assert len({hopeless.next()[0].id for _ in range(300)}) == 10
