"""Failure limits: a run that only fails, or only plays groups with nothing to learn, stops with
a message that quotes the causes and says what to do, instead of spinning."""

from __future__ import annotations

import pytest

from cluster.farm.failures import FailureLimits, RunStopped
from rollout.types import Trajectory, TrajectoryGroup


def test_consecutive_failures_stop_the_run_with_their_causes():
    limits = FailureLimits(max_failed=3, max_without_signal=100)
    limits.failed_group(_failed("engine-0 died"))
    limits.played(_played([0.0, 1.0]), trainable=True)  # progress resets the count
    limits.failed_group(_failed("sandbox lost"))
    limits.failed_group(_failed("env reset timed out"))
    with pytest.raises(RunStopped) as stopped:
        limits.failed_group(_failed("worker died"))
    assert stopped.value.kind == "error"
    message = stopped.value.message
    assert "3 groups failed in a row" in message and "max_consecutive_failed_groups" in message
    assert "worker died" in message and "env reset timed out" in message


def test_groups_without_signal_stop_the_run_and_say_what_to_do():
    limits = FailureLimits(max_failed=3, max_without_signal=4)
    for _ in range(3):
        limits.played(_played([-0.5] * 4), trainable=False)
    limits.failed_group(_failed("one failure does not reset the no-signal streak's meaning"))
    with pytest.raises(RunStopped) as stopped:
        limits.played(_played([-0.5] * 4), trainable=False, why="0 of 4 episodes succeeded")
    message = stopped.value.message
    assert "4 groups in a row" in message and "[-0.5]" in message
    assert "the last: 0 of 4 episodes succeeded" in message
    assert "warm_start" in message and "max_groups_without_signal" in message


def test_a_trainable_group_resets_the_no_signal_streak():
    limits = FailureLimits(max_failed=3, max_without_signal=2)
    for _ in range(5):
        limits.played(_played([0.0, 0.0]), trainable=False)
        limits.played(_played([0.0, 1.0]), trainable=True)


def _failed(error: str) -> TrajectoryGroup:
    trajs = [Trajectory.failed("t", "warmup", "g", i, 0, error) for i in range(2)]
    return TrajectoryGroup("g", "t", "warmup", 0, trajs, failed=True, error=error)


def _played(rewards: list[float]) -> TrajectoryGroup:
    from rollout.env_contract import StepResult
    from rollout.types import Turn

    trajs = []
    for i, reward in enumerate(rewards):
        turn = Turn([1], [2], [-0.1], 1, "aws s3 ls", StepResult("ok", reward=reward))
        trajs.append(Trajectory("t", "warmup", "g", i, 0, turns=[turn], end="max_steps"))
    return TrajectoryGroup("g", "t", "warmup", 0, trajs)
