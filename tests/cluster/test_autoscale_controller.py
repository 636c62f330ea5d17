"""env.workers: auto's controller against simulated farms whose best worker count is known.

The farm itself is tested in test_autoscale_farm.py; here the controller must find the best count
of a throughput curve from below and from above, through noise, and follow a changed curve.
"""

from __future__ import annotations

import random

import pytest

from cluster.base.config import load_config
from cluster.farm.autoscale import Window, WorkerAutoscaler, autoscaler_for, ladder

# Episodes/s by env workers on a box where the env's sandboxes compete with the engine for
# cores: rises, peaks at 4, falls (the shape of the rollout bench's worker sweep).
PEAKED = {1: 2.0, 2: 3.4, 3: 4.1, 4: 4.5, 6: 4.3, 8: 3.8}
# The same farm after its env got slower: concurrency now hides env latency, more is better.
SLOW_ENV = {1: 0.8, 2: 1.6, 3: 2.4, 4: 3.1, 6: 3.9, 8: 4.2}


def drive(scaler: WorkerAutoscaler, curve: dict[int, float], windows: int, rng, noise=0.05,
          full=lambda n: False) -> list[int]:  # fmt: skip
    """Feed ``windows`` windows of 10 s at the controller's count; the counts it ran at."""
    counts = []
    for _ in range(windows):
        n = scaler.current
        rate = curve[n] * (1 + rng.uniform(-noise, noise))
        window = Window(n, 10.0, round(10 * rate), 1.0 if full(n) else 0.5, 3 if full(n) else 0)
        counts.append(n)
        scaler.observe(window)
    return counts


def test_ladder_spans_the_range_in_steps_of_about_one_and_a_half():
    assert ladder(1, 8) == [1, 2, 3, 4, 6, 8]
    assert ladder(2, 2) == [2]
    wide = ladder(1, 224)
    assert wide[-1] == 224 and wide == sorted(set(wide))


@pytest.mark.parametrize("start", [1, 8])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_settles_within_ten_percent_of_the_best_count_from_either_end(start, seed):
    scaler = WorkerAutoscaler(1, 8, start)
    counts = drive(scaler, PEAKED, 80, random.Random(seed))
    settled = counts[-40:]  # after the climb; a probe of the neighbours every 30 windows
    best = max(PEAKED.values())
    held = max(set(settled), key=settled.count)
    assert PEAKED[held] >= 0.9 * best and settled.count(held) >= 30, counts
    assert sum(PEAKED[n] for n in settled) / len(settled) >= 0.9 * best, counts


def gauss_windows(scaler: WorkerAutoscaler, curve: dict[int, float], windows: int, rng,
                  noise: float) -> tuple[list[int], list[str]]:  # fmt: skip
    """Windows as noisy as the tiny farm's update windows (one count ran 3.95 to 10.35
    episodes/s there): the counts run at and the reasons of every move."""
    counts, moves = [], []
    for _ in range(windows):
        n = scaler.current
        rate = curve[n] * max(0.05, 1 + rng.gauss(0, noise))
        counts.append(n)
        decision = scaler.observe(Window(n, 10.0, round(10 * rate), 0.5, 0))
        if decision is not None:
            moves.append(decision.why)
    return counts, moves


def test_through_real_farm_noise_it_settles_near_the_best_and_stops_chasing_noise():
    # Windows of +-30% (one standard deviation), merged into samples of >= 100 episodes; 40 runs.
    # The controller before samples and sustained drift settled within 10% of the best in 28 of
    # these 40 runs and re-probed on noise 19 times a run; this one: 37 of 40, 0.5 a run (the
    # simulation is seeded: the same numbers every time).
    held_ok, reprobes = 0, 0
    for start in (1, 8):
        for seed in range(20):
            scaler = WorkerAutoscaler(1, 8, start, sample_episodes=100)
            counts, moves = gauss_windows(scaler, PEAKED, 300, random.Random(seed), 0.3)
            last = counts[-60:]
            held = max(set(last), key=last.count)
            held_ok += PEAKED[held] >= 0.9 * max(PEAKED.values())
            reprobes += sum("moved from" in why for why in moves)
    assert held_ok >= 36, held_ok
    assert reprobes / 40 <= 2, reprobes


def test_a_rung_is_judged_on_samples_of_enough_episodes():
    scaler = WorkerAutoscaler(1, 8, 1, samples=3, sample_episodes=50)
    assert scaler.observe(Window(1, 10.0, 30)) is None  # the window the start lands in
    for _ in range(5):  # 5 windows of 30 episodes: 2 samples of 60 episodes, 1 pending
        assert scaler.observe(Window(1, 10.0, 30)) is None
    assert scaler.rates == {} and len(scaler._recent) == 2
    decision = scaler.observe(Window(1, 10.0, 30))  # the third sample: judged, climb
    assert decision is not None and decision.workers == 2
    assert scaler.rates == {1: pytest.approx(3.0)}


def test_prefers_fewer_workers_when_more_buy_nothing():
    flat = {1: 3.0, 2: 3.0, 3: 3.05, 4: 3.0, 6: 2.9, 8: 2.8}
    scaler = WorkerAutoscaler(1, 8, 8)
    counts = drive(scaler, flat, 60, random.Random(0), noise=0.01)
    settled = counts[-40:]
    assert max(set(settled), key=settled.count) == 1, counts


def test_follows_a_slower_env_to_more_workers():
    scaler = WorkerAutoscaler(1, 8, 1)
    rng = random.Random(3)
    before = drive(scaler, PEAKED, 40, rng)
    assert before[-1] in (3, 4, 6), before
    after = drive(scaler, SLOW_ENV, 60, rng)
    assert after[-1] >= 6, after  # 6 and 8 are within 10% of each other on this curve
    assert SLOW_ENV[after[-1]] >= 0.9 * max(SLOW_ENV.values())


def test_does_not_climb_while_the_engines_are_full_and_queueing():
    scaler = WorkerAutoscaler(1, 8, 2)
    counts = drive(scaler, SLOW_ENV, 30, random.Random(0), full=lambda n: True)
    assert max(counts) == 2, counts  # it tries fewer (1 is worse) and stays


def test_a_count_set_by_hand_is_the_new_start():
    scaler = WorkerAutoscaler(1, 8, 2)
    assert scaler.observe(Window(5, 10.0, 30)) is None
    assert scaler.current == 5 and 5 in scaler.rungs and scaler.rates == {}


def test_workers_auto_in_a_config_starts_sized_from_the_engines():
    config = load_config("configs/local.yaml", ["env.workers=auto"])
    # 1 engine x 64 sequences / (G 8 x 2 groups per worker) = 4; the cap 2 x 64 / 8 = 16 groups
    assert (config.env.workers, config.env.autoscale) == (4, True)
    assert config.inflight_groups == 16 and config.env_worker_range == (1, 8)
    scaler = autoscaler_for(config)
    assert (scaler.low, scaler.high, scaler.current) == (1, 8, 4)
    assert scaler.sample_episodes == 16 * 8  # one in-flight cap's worth of episodes
    assert autoscaler_for(load_config("configs/local.yaml")) is None


def test_bad_autoscale_settings_name_the_fields():
    with pytest.raises(Exception, match=r"env\.max_workers=2 < env\.min_workers=3"):
        load_config("configs/local.yaml", ["env.min_workers=3", "env.max_workers=2"])
    with pytest.raises(Exception, match=r"env.workers=9 \(autoscale's start\) is above"):
        load_config("configs/local.yaml", ["env.workers=9", "env.autoscale=true"])
    with pytest.raises(Exception, match=r"latency_s=0\.0 belongs to slow_env"):
        load_config("configs/local.yaml", ["run.faults=[{at_update: 2, kind: slow_env}]"])
    with pytest.raises(Exception, match=r"max_num_batched_tokens=32 < engine\.max_num_seqs=64"):
        load_config("configs/local.yaml", ["engine.max_num_batched_tokens=32"])
