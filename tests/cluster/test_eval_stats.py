"""The paired comparison (cluster/evaluation/stats.py) says no when there is nothing, and yes when
there is something, at the rates it claims: checked on simulated evaluations with known truth."""

from __future__ import annotations

import numpy as np
import pytest

from cluster.evaluation.stats import paired_difference, sign_flip_p


def _simulate(rng, tasks: int, episodes: int, gain: float) -> tuple[dict, dict]:
    """A and B on the same tasks; B's per-task success rate is A's plus ``gain`` (capped)."""
    base = rng.uniform(0.0, 0.7, size=tasks)
    a = {f"t{i}": (int(rng.binomial(episodes, p)), episodes) for i, p in enumerate(base)}
    better = np.clip(base + gain, 0.0, 1.0)
    b = {f"t{i}": (int(rng.binomial(episodes, p)), episodes) for i, p in enumerate(better)}
    return a, b


def test_no_difference_is_rejected_at_about_the_nominal_rate():
    rng = np.random.default_rng(0)
    p_values = [paired_difference(*_simulate(rng, 40, 4, 0.0), seed=k).p_value for k in range(200)]
    false_alarms = sum(p < 0.05 for p in p_values) / len(p_values)
    assert 0.01 <= false_alarms <= 0.10, false_alarms


def test_a_real_ten_point_gain_on_sixty_tasks_is_found():
    rng = np.random.default_rng(1)
    results = [paired_difference(*_simulate(rng, 60, 8, 0.10), seed=k) for k in range(40)]
    found = sum(r.p_value < 0.05 for r in results) / len(results)
    assert found >= 0.7, found
    covered = sum(r.ci95[0] <= 0.10 <= r.ci95[1] for r in results) / len(results)
    assert covered >= 0.85, covered


def test_identical_results_and_the_exact_small_sample_p_value():
    same = {f"t{i}": (i % 3, 4) for i in range(12)}
    diff = paired_difference(same, same)
    assert diff.difference == 0 and diff.p_value == 1.0 and diff.ci95 == (0.0, 0.0)
    # Better on 6 tasks and equal on the rest: the exact two-sided p-value is 2 / 2^6.
    a = {f"t{i}": (0, 4) for i in range(10)}
    b = {f"t{i}": (2 if i < 6 else 0, 4) for i in range(10)}
    result = paired_difference(a, b, ("sft", "grpo"))
    assert result.p_value == pytest.approx(2 / 64)
    assert result.b_better == 6 and result.a_better == 0 and result.strata == 10
    assert result.difference == pytest.approx(6 * 0.5 / 10)
    assert "grpo - sft: +30.0 points" in result.describe()


def test_only_tasks_both_played_are_paired():
    a = {"x": (1, 2), "y": (0, 2), "z": (0, 0)}
    b = {"x": (2, 2), "w": (2, 2), "z": (1, 2)}
    result = paired_difference(a, b)
    assert result.strata == 1 and result.episodes_a == 2 and result.episodes_b == 2
    with pytest.raises(ValueError, match="share no evaluated task"):
        paired_difference({"x": (1, 2)}, {"y": (1, 2)})


def test_monte_carlo_p_value_agrees_with_the_exact_one():
    rng = np.random.default_rng(3)
    diffs = rng.normal(0.2, 1.0, size=16)
    exact = sign_flip_p(diffs, rng)  # 16 strata: enumerated
    sampled = sign_flip_p(np.concatenate([diffs, [0.0]]), rng)  # a tie changes nothing
    assert sampled == exact
    many = np.tile(diffs, 2)[:17]  # 17 strata: Monte Carlo
    assert 0.0 < sign_flip_p(many, rng) < 1.0
