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


def test_a_rung_s_spread_is_its_update_windows_and_the_ratio_carries_both_spreads():
    from types import SimpleNamespace

    from benchmarks.autoscale import spread

    rows = [SimpleNamespace(time_s=t, episodes_total=e) for t, e in
            [(0.0, 0), (4.0, 32), (8.0, 56), (12.0, 96), (16.0, 128)]]  # fmt: skip
    per = spread(rows)
    assert per["windows"] == [8.0, 6.0, 10.0, 8.0]
    assert per["mean"] == pytest.approx(8.0)
    assert per["se"] == pytest.approx((8 / 3) ** 0.5 / 2)  # stdev sqrt(8/3) over sqrt(4)
    assert spread(rows[:2]) == {"windows": [8.0]}  # one window: no spread claimed

    sweep = {n: dict(row, per_update={"mean": row["episodes_per_s"], "se": 0.1 * row[
        "episodes_per_s"]}) for n, row in SWEEP.items()}  # fmt: skip
    verdict = judge(sweep, {"held": 2, "tail": {"episodes_per_s": 3.0}})
    low, high = verdict["held_swept_over_best_ci95"]
    assert low < 3.8 / 4.0 < high  # 10% standard errors on both: the interval spans ~+-26%
    assert high - low == pytest.approx(2 * 1.96 * 0.95 * 2**0.5 * 0.1, abs=2e-3)
    assert judge(sweep, {"held": 3, "tail": {"episodes_per_s": 3.0}})[
        "held_swept_over_best_ci95"] == [1.0, 1.0]  # fmt: skip
