"""``rlfarm bench autoscale``'s verdict: the count auto held, judged by the fixed sweep's rates."""

from __future__ import annotations

import pytest

from benchmarks.autoscale import judge

SWEEP = {1: {"episodes_per_s": 2.0}, 2: {"episodes_per_s": 3.8}, 3: {"episodes_per_s": 4.0}}


@pytest.mark.parametrize(("held", "within"), [(3, True), (2, True), (1, False)])
def test_the_held_count_is_judged_by_its_swept_rate_against_the_best(held, within):
    auto = {"held": held, "tail": {"episodes_per_s": 3.0}}
    verdict = judge(SWEEP, auto)
    assert verdict["best_fixed"] == 3 and verdict["within_10pct"] is within
    assert verdict["held_swept_over_best"] == pytest.approx(SWEEP[held]["episodes_per_s"] / 4.0)
    assert verdict["tail_over_best"] == pytest.approx(0.75)


def test_a_count_the_sweep_never_ran_is_not_within():
    verdict = judge(SWEEP, {"held": 5, "tail": {"episodes_per_s": 4.0}})
    assert verdict["held_swept_over_best"] is None and not verdict["within_10pct"]
