"""The shaped reward: finishing always out-scores stalling, for every step count.

Returns are computed with the real ``step_reward`` over whole trajectories: every
finishing trajectory (any mix of hints, failures and progress moves, achieving at any
step up to max_steps) against every stalling one (never achieving, running to
max_steps, with the most favourable progress a staller can have).
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from env.reward import RewardConfig, StepOutcome, step_reward
from env.task_episode import MAX_HINTS, EpisodeConfig

MAX_STALL_PROGRESS = 0.999  # the grader's cap on progress while not achieved


def episode_return(
    config: RewardConfig,
    progress: list[float],
    hints: list[bool],
    failures: list[bool],
    achieved_at: int | None,
    p0: float = 0.0,
) -> float:
    """Sum of step rewards; ``progress[t]`` is the progress after step t+1."""
    total, before = 0.0, p0
    for t, (after, hint, failed) in enumerate(zip(progress, hints, failures, strict=True)):
        total += step_reward(
            config,
            StepOutcome(before, after, achieved_at == t + 1, hint=hint, failed=failed),
        )
        before = after
    return total


def best_staller(config: RewardConfig, max_steps: int, p0: float) -> float:
    """No hints, no failures, progress as high as it can be without achieving."""
    progress = [MAX_STALL_PROGRESS] * max_steps
    return episode_return(config, progress, [False] * max_steps, [False] * max_steps, None, p0)


def worst_finisher(config: RewardConfig, steps: int, hints: int, p0: float) -> float:
    """Achieves on its last step; every other step is a hint or a failed command."""
    progress = [p0] * (steps - 1) + [1.0]
    hint_flags = [i < hints for i in range(steps)]
    fail_flags = [not h for h in hint_flags]  # even the achieving command "failed"
    return episode_return(config, progress, hint_flags, fail_flags, steps, p0)


@pytest.mark.parametrize("max_steps", [1, 5, 15, 30])
def test_every_finisher_beats_every_staller_for_all_step_counts(max_steps: int) -> None:
    config = RewardConfig(completion_bonus=max(1.0, 0.3 + 0.02 * max_steps + 0.01))
    config.check_finishing_dominates(max_steps, MAX_HINTS)
    for p0 in (0.0, 0.5, 0.9):
        stall = best_staller(config, max_steps, p0)
        for steps, hints in itertools.product(range(1, max_steps + 1), range(MAX_HINTS + 1)):
            if hints <= steps:
                assert worst_finisher(config, steps, hints, p0) > stall, (steps, hints, p0)


@st.composite
def trajectories(draw: st.DrawFn, max_steps: int, finish: bool) -> tuple:
    steps = draw(st.integers(1, max_steps)) if finish else max_steps
    cap = 1.0 if finish else MAX_STALL_PROGRESS
    progress = draw(st.lists(st.floats(0.0, cap), min_size=steps, max_size=steps))
    if finish:
        progress[-1] = 1.0
    hints_left = MAX_HINTS
    hints, failures = [], []
    for _ in range(steps):
        hint = hints_left > 0 and draw(st.booleans())
        hints_left -= hint
        hints.append(hint)
        failures.append(draw(st.booleans()))
    return progress, hints, failures, (steps if finish else None)


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    max_steps=st.integers(1, 40),
    hint_cost=st.floats(0.0, 0.3),
    failure_cost=st.floats(0.0, 0.1),
    step_cost=st.floats(0.0, 0.1),
    weight=st.floats(0.1, 5.0),
    p0=st.floats(0.0, 0.99),
)
def test_random_finishers_beat_random_stallers(
    data: st.DataObject,
    max_steps: int,
    hint_cost: float,
    failure_cost: float,
    step_cost: float,
    weight: float,
    p0: float,
) -> None:
    bonus = MAX_HINTS * hint_cost + max_steps * failure_cost + 0.01
    config = RewardConfig(
        progress_weight=weight,
        completion_bonus=bonus,
        hint_cost=hint_cost,
        failure_cost=failure_cost,
        help_cost=failure_cost,  # a help page is a no-op priced like a failure
        step_cost=step_cost,
    )
    config.check_finishing_dominates(max_steps, MAX_HINTS)
    finisher = data.draw(trajectories(max_steps, finish=True))
    staller = data.draw(trajectories(max_steps, finish=False))
    assert episode_return(config, *finisher, p0=p0) > episode_return(config, *staller, p0=p0)


def test_progress_terms_telescope() -> None:
    config = RewardConfig(hint_cost=0, failure_cost=0, step_cost=0)
    path = [0.5, 0.2, 0.9, 0.4, 0.7]  # undoing and redoing work earns nothing net
    total = episode_return(config, path, [False] * 5, [False] * 5, None, p0=0.1)
    assert total == pytest.approx(0.7 - 0.1)


def test_step_reward_components() -> None:
    config = RewardConfig()
    hint = step_reward(config, StepOutcome(0.2, 0.2, False, hint=True, failed=False))
    assert hint == pytest.approx(-config.hint_cost - config.step_cost)
    failed = step_reward(config, StepOutcome(0.2, 0.2, False, hint=False, failed=True))
    assert failed == pytest.approx(-config.failure_cost - config.step_cost)
    finish = step_reward(config, StepOutcome(0.5, 1.0, True, hint=False, failed=False))
    assert finish == pytest.approx(0.5 + config.completion_bonus - config.step_cost)
    # A help page is no free no-op: it costs as much as trying a command that fails.
    page = step_reward(config, StepOutcome(0.2, 0.2, False, False, False, help_page=True))
    assert page == pytest.approx(failed) and page < -config.step_cost


def test_help_pages_count_like_failures_in_the_dominance_check() -> None:
    # 15 steps x 0.02 + 3 hints x 0.1 = 0.6 < 1: fine; a help cost of 0.05 makes it 1.05.
    RewardConfig().check_finishing_dominates(15, 3)
    with pytest.raises(ValueError, match="help_cost"):
        RewardConfig(help_cost=0.05).check_finishing_dominates(15, 3)


def test_configs_that_let_stalling_win_are_rejected_with_the_fix() -> None:
    with pytest.raises(ValueError, match="Raise completion_bonus"):
        RewardConfig(completion_bonus=0.5, failure_cost=0.05).check_finishing_dominates(15, 3)
    with pytest.raises(ValueError, match="stalls beat one that finishes"):
        EpisodeConfig(max_steps=100)
    EpisodeConfig(max_steps=100, reward=RewardConfig(completion_bonus=3.0))
