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


def _drifting_farm(monkeypatch, true_rate: dict[int, float], drift: float) -> list[int]:
    """``_fixed`` stood in by a farm whose every count runs ``drift`` faster per stage than the
    one before (as the real farm does when its episodes shorten); returns the order it ran."""
    import benchmarks.autoscale as bench

    ran: list[int] = []

    async def fixed(farm, workers, settle, updates):
        rate = true_rate[workers] * (1 + drift * len(ran))
        ran.append(workers)
        return {
            "mode": "async", "env_workers": workers, "group_size": 8, "settle_updates": settle,
            "updates": updates, "wall_s": 10.0, "episodes": rate * 10.0, "episodes_per_s": rate,
            "generated_tokens_per_s": 1.0, "env_steps_per_s": 1.0, "grpo_steps_per_hour": 1.0,
            "engine_idle_fraction": 0.0, "prefix_cache_hit_rate": None, "env_step_ms_p50": 1.0,
            "env_step_ms_p99": 1.0, "staleness_histogram": {}, "ledger": {"trained": 1},
            "final_version": 1, "per_update": {"windows": [rate, rate]},
        }  # fmt: skip

    monkeypatch.setattr(bench, "_fixed", fixed)
    return ran


def test_a_drifting_farm_ranks_its_rungs_right_when_the_ladder_is_walked_both_ways(monkeypatch):
    import asyncio

    from benchmarks.autoscale import _sweep, best_of

    flat = {1: 4.0, 2: 6.0, 3: 6.0, 4: 6.0}  # 2 workers are as good as any more
    ran = _drifting_farm(monkeypatch, flat, drift=0.05)
    sweep = asyncio.run(_sweep(None, [1, 2, 3, 4], settle=1, updates=8))
    assert ran == [1, 2, 3, 4, 4, 3, 2, 1]
    # Walked up once, 4 would have read 6.0 x 1.15 against 2's 6.0 x 1.05: "best" by drift alone.
    # Both ways, every rung shares the same mean drift: the flat rungs read alike.
    rates = {n: row["episodes_per_s"] for n, row in sweep.items()}
    assert rates[2] == pytest.approx(rates[3]) == pytest.approx(rates[4])
    assert rates[1] == pytest.approx(rates[2] * 4 / 6)
    assert sweep[2]["updates"] == 8 and sweep[2]["per_update"]["windows"]
    assert best_of(sweep) in (2, 3, 4)


def test_the_verdict_is_the_side_by_side_ratio_which_a_steady_drift_does_not_move(monkeypatch):
    import asyncio

    from benchmarks.autoscale import _side_by_side

    rate = {2: 5.0, 4: 6.0}
    ran = _drifting_farm(monkeypatch, rate, drift=0.10)
    side = asyncio.run(_side_by_side(None, 2, 4, settle=1, updates=4))
    assert ran == [2, 4, 4, 2] and side["counts"] == [2, 4]
    # Stages at drift 1.0, 1.1, 1.2, 1.3: held 5 x (1.0 + 1.3), best 6 x (1.1 + 1.2).
    assert side["a_over_b"] == pytest.approx(5.0 / 6.0)
    assert side["rounds"] == [round(5.0 / 6.6, 3), round(6.5 / 7.2, 3)]
    # The verdict uses it: the sweep said 4.8/5.0 (within), side by side 5/6 is not.
    sweep = {2: {"episodes_per_s": 4.8}, 4: {"episodes_per_s": 5.0}}
    verdict = judge(sweep, {"held": 2, "tail": {"episodes_per_s": 5.0}}, side)
    assert verdict["held_swept_over_best"] == pytest.approx(0.96)
    assert verdict["held_over_best_side_by_side"] == pytest.approx(5 / 6)
    assert verdict["within_10pct"] is False
    with pytest.raises(ValueError, match="not held 4"):
        judge(sweep, {"held": 4, "tail": {"episodes_per_s": 5.0}}, side)
    assert asyncio.run(_side_by_side(None, 4, 4, 1, 4))["a_over_b"] == 1.0 and len(ran) == 4
