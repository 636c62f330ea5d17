"""Which finished groups reach the learner: ``train.signal`` on real ledger, versions and limits."""

from __future__ import annotations

import asyncio

from cluster.farm.batching import Batcher
from cluster.farm.failures import FailureLimits
from cluster.farm.ledger import Ledger, read_ledger
from cluster.farm.publishing import Versions
from rollout.env_contract import StepResult
from rollout.types import Trajectory, TrajectoryGroup, Turn


def _group(gid: str, rewards: list[float], wins: int) -> TrajectoryGroup:
    """A played group: episode i scored ``rewards[i]`` in one turn; the first ``wins`` succeeded."""
    trajs = []
    for i, reward in enumerate(rewards):
        turn = Turn([1, 2], [3], [-0.5], 0, "aws s3 ls", StepResult("ok", reward=reward))
        trajs.append(Trajectory("t", "beginner", gid, i, 0, [turn], achieved=i < wins))
    return TrajectoryGroup(gid, "t", "beginner", 0, trajs)


def _judge(tmp_path, signal_needs_success: bool) -> tuple[list[str], dict[str, str]]:
    ledger = Ledger(tmp_path / f"ledger-{signal_needs_success}.jsonl")
    groups = [
        _group("mixed", [1.0, 0.2, 0.1, 0.0], wins=1),  # a success among failures
        _group("partial", [0.6, 0.3, 0.0, 0.0], wins=0),  # failures apart by progress alone
        _group("all-won", [1.0, 1.0, 0.8, 0.9], wins=4),  # successes apart by step costs
        _group("flat", [0.0, 0.0, 0.05, 0.0], wins=0),  # within min_reward_spread
    ]
    for g in groups:
        ledger.start(g.group_id, g.task_id, g.tier, len(g.trajectories))
    queue: asyncio.Queue[TrajectoryGroup] = asyncio.Queue()
    for g in groups:
        queue.put_nowait(g)
    batcher = Batcher(
        queue, ledger, FailureLimits(16, 64), Versions(tmp_path / "adapters", 2), 1, 0.1,
        lambda staleness: None, needs_mixed_outcomes=signal_needs_success,
    )  # fmt: skip
    batch = asyncio.run(batcher.collect(4, False, 0))
    ledger.close()
    reasons = {
        line["group_id"]: line["reason"]
        for line in read_ledger(ledger.path)
        if line["fate"] == "dropped_zero_variance"
    }
    return [g.group_id for g, _ in batch], reasons


def test_reward_signal_trains_every_group_whose_rewards_spread(tmp_path):
    trained, dropped = _judge(tmp_path, signal_needs_success=False)
    assert trained == ["mixed", "partial", "all-won"]
    assert "min_reward_spread" in dropped["flat"]


def test_success_signal_trains_only_groups_that_both_won_and_lost(tmp_path):
    trained, dropped = _judge(tmp_path, signal_needs_success=True)
    assert trained == ["mixed"]
    assert dropped["partial"] == "0 of 4 episodes succeeded (train.signal)"
    assert dropped["all-won"] == "4 of 4 episodes succeeded (train.signal)"
    assert "min_reward_spread" in dropped["flat"]
