"""``rlfarm bench autoscale``: does ``env.workers: auto`` find the worker count a sweep would?

One async farm (the config's model: the warm tiny model by default, the rollout bench's narrow
task set), stage after stage, each a further ``main_loop`` on the same engines and learner:

1. the fixed sweep: every rung of the controller's ladder between ``env.min_workers`` and the
   most workers the farm can keep busy, walked up and then down (``settle`` + half of
   ``updates`` each way, the settle updates not measured), episodes/s and GRPO steps/hour;
2. auto from the fewest workers and 3. from the most, ``--auto-updates`` each: the counts it ran
   at, the count it held most over the last ``--tail`` updates and that tail's measured rate; the
   held count is then measured fixed against the sweep's best count side by side, in the order
   held, best, best, held (target: the held count within 10% of the best, by that measurement);
4. a slower env: auto from stage 2's held count, every env step ``--latency`` s slower from
   half-way on (the ``slow_env`` fault's path); the count it held before and after, and, with the
   latency, the old count and the new one measured fixed side by side (the gain of reacting).

The farm's rate drifts over a run (episodes shorten as the policy learns its tasks): a rung
measured later reads faster. Walking the ladder both ways and measuring each comparison in a
held-best-best-held order cancels a steady drift; a ladder walked once does not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import statistics
import sys
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path

from cluster.base.config import ConfigError, FarmConfig, load_config

DEFAULT_CONFIG = Path(__file__).parents[1] / "configs" / "local.yaml"
WITHIN = 0.10  # the held count's swept rate must be at least 90% of the best swept rate


def bench_config(args: argparse.Namespace) -> FarmConfig:
    from benchmarks.rollout import NARROW_TASKS

    overrides = [
        *NARROW_TASKS, "train.mode=async", f"run.out_dir={args.out}",
        f"run.name=autoscale-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}", *args.overrides,
    ]  # fmt: skip
    return load_config(args.config or DEFAULT_CONFIG, overrides)


def _log(message: str) -> None:
    print(f"[bench autoscale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def _fixed(farm, workers: int, settle: int, updates: int) -> dict:
    from benchmarks.rollout import _farm_stage

    farm.autoscale_with(None)
    size = farm.config.rollout.group_size
    first = len(farm.metrics.history) + settle
    stage = await _farm_stage(farm, updates, "async", workers, size, settle)
    stage["per_update"] = spread(farm.metrics.history[first - 1 if first else 0 :])
    return stage


async def _sweep(farm, rungs: list[int], settle: int, updates: int) -> dict[int, dict]:
    """Every rung twice, up the ladder and then down it, half of ``updates`` each time: a steady
    drift then lifts every rung alike instead of favouring the rungs measured last."""
    first = max(1, updates // 2)
    passes: dict[int, list[dict]] = {n: [] for n in rungs}
    for order, count in ((rungs, first), (rungs[::-1], max(1, updates - first))):
        for n in order:
            stage = await _fixed(farm, n, settle, count)
            passes[n].append(stage)
            _log(f"fixed {n}: {stage['episodes_per_s']:.2f} episodes/s")
    return {n: merged(stages) for n, stages in passes.items()}


def merged(stages: list[dict]) -> dict:
    """One count's fixed stages as one measurement: totals over their summed windows, and the
    spread of every update window among them."""
    from benchmarks.rollout import combine_stages

    out = combine_stages(stages)
    windows = [w for stage in stages for w in stage["per_update"]["windows"]]
    out["per_update"] = _spread_of(windows)
    return out


async def _side_by_side(farm, a: int, b: int, settle: int, updates: int) -> dict:
    """Counts ``a`` and ``b`` measured fixed in the order a, b, b, a: a steady drift over the
    four stages cancels out of ``a_over_b``. Each round's ratio is given too (a b, then b a)."""
    if a == b:
        return {"counts": [a, b], "a_over_b": 1.0, "rounds": [], "order": []}  # one count: no run
    stages: dict[int, list[dict]] = {a: [], b: []}
    for n in (a, b, b, a):
        stages[n].append(await _fixed(farm, n, settle, updates))
    rate = {n: merged(s)["episodes_per_s"] for n, s in stages.items()}
    rounds = [
        x["episodes_per_s"] / y["episodes_per_s"] for x, y in zip(stages[a], stages[b], strict=True)
    ]
    out = {
        "counts": [a, b],
        "episodes_per_s": {str(n): r for n, r in rate.items()},
        "a_over_b": rate[a] / rate[b],
        "rounds": [round(r, 3) for r in rounds],
        "order": [a, b, b, a],
    }
    _log(f"side by side {a} vs {b}: {out['a_over_b']:.3f} (rounds {out['rounds']})")
    return out


def spread(rows: list) -> dict:
    """Episodes/s of each update window in ``rows`` (after the first row): their mean, the
    standard error of that mean, and the windows themselves. A rung's rate is known to this
    standard error, no better: the sweep's ranking of near rungs is only as good."""
    return _spread_of(
        [
            (b.episodes_total - a.episodes_total) / (b.time_s - a.time_s)
            for a, b in pairwise(rows)
            if b.time_s > a.time_s
        ]
    )


def _spread_of(rates: list[float]) -> dict:
    if len(rates) < 2:
        return {"windows": rates}
    return {
        "mean": statistics.fmean(rates),
        "se": statistics.stdev(rates) / math.sqrt(len(rates)),
        "windows": [round(r, 3) for r in rates],
    }


async def _auto(farm, start: int, updates: int, tail: int, latency_at: int | None = None,
                latency_s: float = 0.0) -> dict:  # fmt: skip
    """``updates`` updates under the controller from ``start`` workers; with ``latency_at``,
    every env step ``latency_s`` slower after that many of them."""
    from cluster.farm.autoscale import WorkerAutoscaler, sample_episodes

    low, high = farm.config.env_worker_range
    await farm.scale(start)
    farm.autoscale_with(
        WorkerAutoscaler(low, high, start, sample_episodes=sample_episodes(farm.config))
    )
    first = len(farm.metrics.history)
    if latency_at is None:
        await farm.main_loop(updates=updates, mode="async")
    else:
        await farm.main_loop(updates=latency_at, mode="async")
        await asyncio.gather(*farm.workers.set_step_latency(latency_s))
        _log(f"every env step {latency_s:g} s slower from update {farm.state.updates}")
        await farm.main_loop(updates=updates - latency_at, mode="async")
    farm.autoscale_with(None)
    rows = farm.metrics.history[first:]
    engines = farm.config.run.engines
    out = {"start": start, "path": [[row.update, row.env_workers] for row in rows]}
    out |= _tail(rows, tail, engines)
    if latency_at is not None:
        out["before_latency"] = _tail(rows[:latency_at], tail, engines)
    return out


def _tail(rows: list, tail: int, engines: int) -> dict:
    """The last ``tail`` updates: the worker count held most, and the rates measured."""
    window = rows[-(tail + 1) :]
    held = Counter(row.env_workers for row in window[1:]).most_common(1)[0][0]
    rates = window[0].totals().rates(window[-1].totals(), engines=engines)
    return {"held": held, "tail_updates": len(window) - 1, "tail": rates}


def best_of(sweep: dict[int, dict]) -> int:
    return max(sweep, key=lambda n: sweep[n]["episodes_per_s"])


def judge(sweep: dict[int, dict], auto: dict, side: dict | None = None) -> dict:
    """The held count against the sweep's best: by ``side`` (the two measured side by side,
    held first: ``_side_by_side``) when given, else by their swept rates."""
    best = best_of(sweep)
    best_rate = sweep[best]["episodes_per_s"]
    held = auto["held"]
    held_rate = sweep[held]["episodes_per_s"] if held in sweep else None
    ratio = None if held_rate is None else held_rate / best_rate
    verdict = {
        "best_fixed": best,
        "best_fixed_episodes_per_s": best_rate,
        "held_swept_over_best": ratio,
        "held_swept_over_best_ci95": _ratio_ci(sweep, held, best),
        "tail_over_best": auto["tail"]["episodes_per_s"] / best_rate,
    }
    if side is not None:
        if side["counts"] != [held, best]:
            raise ValueError(f"side by side measured {side['counts']}, not held {held} vs {best}")
        verdict["held_over_best_side_by_side"] = side["a_over_b"]
        ratio = side["a_over_b"]
    verdict["within_10pct"] = ratio is not None and ratio >= 1 - WITHIN
    return verdict


def _ratio_ci(sweep: dict[int, dict], held: int, best: int) -> list[float] | None:
    """95% interval of held / best from the two rungs' per-update spreads (delta method): how
    sure the sweep is that the held count is slower than the best, if it is."""
    if held not in sweep:
        return None
    a, b = sweep[held].get("per_update", {}), sweep[best].get("per_update", {})
    if "se" not in a or "se" not in b:
        return None
    if held == best:
        return [1.0, 1.0]
    # Centred on the ratio the verdict reports (episodes over wall time), widened by the
    # windows' relative spreads.
    ratio = sweep[held]["episodes_per_s"] / sweep[best]["episodes_per_s"]
    rel = math.hypot(a["se"] / a["mean"], b["se"] / b["mean"])
    return [round(ratio * (1 - 1.96 * rel), 3), round(ratio * (1 + 1.96 * rel), 3)]


async def _stages(farm, args: argparse.Namespace) -> dict:
    from cluster.farm.autoscale import ladder

    low, high = farm.config.env_worker_range
    rungs = ladder(low, high)
    _log(f"fixed sweep of {rungs}, up then down: {args.settle} + {args.updates} updates each")
    sweep = await _sweep(farm, rungs, args.settle, args.updates)
    for n, row in sweep.items():
        per = row["per_update"]
        _log(f"fixed {n}: {row['episodes_per_s']:.2f} episodes/s "
             f"(per update {per.get('mean', 0):.2f} +- {per.get('se', 0):.2f}), "
             f"{row['grpo_steps_per_hour']:.0f} updates/h")  # fmt: skip
    result: dict = {"rungs": rungs, "sweep": {str(n): row for n, row in sweep.items()}}
    side_updates = max(1, args.updates // 2)
    for name, start in (("auto_from_low", low), ("auto_from_high", high)):
        _log(f"{name}: auto from {start} workers, {args.auto_updates} updates")
        auto = await _auto(farm, start, args.auto_updates, args.tail)
        side = (
            await _side_by_side(farm, auto["held"], best_of(sweep), args.settle, side_updates)
            if auto["held"] in sweep
            else None
        )
        auto["side_by_side"] = side
        auto["versus_sweep"] = judge(sweep, auto, side)
        _log(f"{name}: held {auto['held']} ({auto['versus_sweep']})")
        result[name] = auto
    start = result["auto_from_low"]["held"]
    half = args.auto_updates // 2
    _log(f"slow env: auto from {start}, every step {args.latency:g} s slower after {half} updates")
    slow = await _auto(farm, start, args.auto_updates + half, args.tail, half, args.latency)
    before, after = slow["before_latency"]["held"], slow["held"]
    # Fixed, both with the latency, side by side: what reacting to it bought.
    side = await _side_by_side(farm, after, before, args.settle, side_updates)
    slow["fixed_with_latency"] = side
    slow["after_over_before"] = side["a_over_b"]
    await asyncio.gather(*farm.workers.set_step_latency(0.0))
    result["slow_env"] = slow
    return result


def run_autoscale_bench(config: FarmConfig, args: argparse.Namespace) -> dict:
    from cluster.base.ray_runtime import farm_cpus, init_ray
    from cluster.farm.driver import Farm
    from cluster.models.warm_start import prepare_model

    init_ray(min_cpus=farm_cpus(config.run.engines, config.env_worker_range[1]))
    model_path = prepare_model(config, log=_log)
    started = time.perf_counter()
    farm = Farm.start(config, model_path)
    try:
        result = asyncio.run(_stages(farm, args))
    finally:
        farm.shutdown()
    return {
        "model": config.model,
        "env_worker_range": list(config.env_worker_range),
        "groups_per_worker": config.env.groups_per_worker,
        "inflight_groups": config.inflight_groups,
        "latency_s": args.latency,
        "wall_s": round(time.perf_counter() - started, 1),
        **result,
        "met": all(
            result[k]["versus_sweep"]["within_10pct"] for k in ("auto_from_low", "auto_from_high")
        ),
    }


def main(args: argparse.Namespace) -> int:
    try:
        config = bench_config(args)
    except ConfigError as exc:
        print(f"rlfarm bench autoscale: {exc}", file=sys.stderr)
        return 2
    from benchmarks.rollout import _stdout_reserved_for_json

    # The farm's progress lines go to stdout: with --json it must hold the JSON object alone.
    with _stdout_reserved_for_json() if args.json else contextlib.nullcontext(sys.stdout) as real:
        result = run_autoscale_bench(config, args)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "autoscale.json").write_text(json.dumps(result, indent=1))
        from benchmarks.records import record

        record("autoscale", result)
        real.write((json.dumps(result) if args.json else json.dumps(result, indent=1)) + "\n")
        real.flush()
    return 0
