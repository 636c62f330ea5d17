"""``rlfarm bench rollout``: the sequential baseline vs the farm generating only, and in sync and
in async mode.

One run, one model (the config's: the warm tiny model by default, SmolLM2 with
``--config configs/smollm2-cpu.yaml``), one task list and seed, one machine, stage after stage:

(a) ``benchmarks.sequential_baseline``: transformers ``generate`` one turn at a time behind a lock,
    the env in-process, no learning;
(b) the real ``Farm`` (vLLM engines, rollout workers) generating rollouts only, the learner idle,
    then the engines' offline peak on the same work (the stage's turns replayed with no env
    between them, the same number of sequences at once: what fraction of this machine's limit
    the farm reaches), the engines' decode-only rate beside it, and the 4000-generation epoch
    both ways;
(c) the same farm with the GRPO+LoRA learner in ``sync`` mode for N updates, and (d) in ``async``
    mode for N updates, the learner training throughout;
then, optionally, sweeps of env workers and of G on the async farm, drawn as PNG curves.

The farm stages share one ``Farm`` (engines, learner and workers are started once, as a real run
does); each stage is a further ``main_loop`` with a new update target. A stage is measured in
steady state: its first update (``settle_updates``) is not counted, and the window runs from that
update's completion to the last one's, using the running totals of the per-update metrics rows
(episodes, tokens, env steps, engine busy time) and the ledger. So no stage pays first-use costs
or, in async mode, the one-off filling of the pipeline, and the groups still in flight when a stage
stops (a real run would train on them) are not charged to it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path

from cluster.base.config import ConfigError, FarmConfig, load_config
from cluster.models.warm_start import NARROW_WARM_START

DEFAULT_CONFIG = Path(__file__).parents[1] / "configs" / "local.yaml"

# The narrow warm start (cluster.models.warm_start.NARROW_WARM_START), every task trained.
NARROW_TASKS = [
    *NARROW_WARM_START,
    "curriculum.holdout_fraction=0.0",
    "run.eval_episodes=0",
]
# --quick: the smallest farm that still exercises every stage (tests use it; speed is meaningless).
QUICK = [
    "rollout.group_size=4",
    "rollout.max_steps=3",
    "rollout.max_new_tokens=24",
    "train.groups_per_update=2",
    "env.workers=1",
    "env.groups_per_worker=2",
]

TARGETS = {
    "rollout_vs_sequential": 10.0,
    "engine_peak_fraction": 0.8,
    "sync_vs_sequential": 30.0,
    "async_vs_sync": 1.6,
    "engine_idle_async": 0.10,
}
# Generate calls in one epoch of the background documents' training: G=8 x 100 prompts x 5 steps.
EPOCH_CALLS = 4000


def bench_settings(args: argparse.Namespace) -> dict:
    """Sizes of every stage: defaults bound each stage to a few minutes on 2 cores."""
    quick = args.quick
    return {
        "updates": args.updates or (2 if quick else 4),
        "rounds": args.rounds or (1 if quick else 2),
        "settle_updates": 0 if quick else 1,
        # None: two waves of the farm's capacity (workers x groups per worker).
        "rollout_groups": args.rollout_groups or (2 if quick else None),
        "baseline_groups": args.baseline_groups or (1 if quick else 2),
        "sweep_workers": args.sweep_workers or ([1, 2] if quick else [1, 2, 4, 8]),
        "sweep_group_sizes": args.sweep_group_sizes or ([2, 4] if quick else [4, 8, 16]),
        "sweep_updates": args.sweep_updates or (1 if quick else 3),
        "sweep": not args.no_sweep and not args.modes_only,
        # Sticky vs least-loaded routing on a second farm with this many engines (0: skip).
        "routing_engines": 2
        if args.routing_only or not (quick or args.no_routing or args.modes_only)
        else 0,
        "routing_only": args.routing_only,
        # Only the sync and async learning stages (ABBA rounds): the async/sync ratio alone.
        "modes_only": args.modes_only,
    }


def bench_config(args: argparse.Namespace) -> FarmConfig:
    out = Path(args.out)
    overrides = [
        *NARROW_TASKS,
        *(QUICK if args.quick else []),
        f"run.out_dir={out}",
        # A fresh control-actor name per run: the name is global on the Ray cluster.
        f"run.name=farm-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",
        *args.overrides,
    ]
    return load_config(args.config or DEFAULT_CONFIG, overrides)


def _log(message: str) -> None:
    print(f"[bench rollout {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---- the farm stages ----------------------------------------------------------------------------


async def _farm_stage(
    farm, updates: int, mode: str, workers: int, group_size: int, settle: int = 0
) -> dict:
    """Run ``settle + updates`` more updates in ``mode``; return the rates of the last ``updates``
    (from the completion of the settle updates to the completion of the last one)."""
    # New worker actors load a tokenizer and start a sandbox process: ``scale`` waits for them
    # before the clock starts, so a sweep point measures rollouts, not actor start-up.
    await farm.scale(workers)
    farm.player.set_group_size(group_size)
    rows_before = len(farm.metrics.history)
    staleness_before, ledger_before = dict(farm.state.staleness), farm.ledger.summary()
    start = await farm.totals()
    await farm.main_loop(updates=settle + updates, mode=mode)
    rows = farm.metrics.history[rows_before:]
    end = rows[-1]
    first = rows[settle - 1].totals() if settle else start
    return {
        "mode": mode,
        "env_workers": workers,
        "group_size": group_size,
        "settle_updates": settle,
        **first.rates(end.totals(), engines=farm.config.run.engines),
        # Over the last (up to) 256 env steps of the stage: the driver's rolling window.
        "env_step_ms_p50": end.env_step_ms_p50,
        "env_step_ms_p99": end.env_step_ms_p99,
        # The staleness histogram and the ledger cover the whole stage (settle updates and the
        # groups dropped when it stopped included), so every episode's fate is in them.
        "staleness_histogram": {
            str(k): v - staleness_before.get(k, 0)
            for k, v in sorted(farm.state.staleness.items())
            if v - staleness_before.get(k, 0) > 0
        },
        "ledger": {k: v - ledger_before[k] for k, v in farm.ledger.summary().items()},
        "final_version": farm.state.version,
    }


async def _rollout_only_stage(farm, groups: int, played: list | None = None) -> dict:
    """The farm generating rollouts with the learner idle, timed over ``groups`` whole groups
    from the start, tail included, as an epoch would be. Groups of equally long episodes run in
    lockstep waves of the farm's capacity (a base model plays every episode to ``max_steps``), so
    the window spans whole waves: one that started or ended mid-wave would time a burst of
    completions instead of the work behind them. The groups played are appended to ``played``
    (the engine replay re-runs their work)."""
    ledger_before = farm.ledger.summary()
    marks = {0: await farm.totals()}

    async def on_group(finished: int, group) -> None:
        if played is not None:
            played.append(group)
        if finished == groups:
            marks[groups] = await farm.totals()

    await farm.play_only(groups, on_group)
    return {
        "mode": "rollout_only",
        "env_workers": farm.workers.size,
        "group_size": farm.player.group_size,
        "groups": groups,
        "concurrent_groups": farm.workers.size * farm.config.env.groups_per_worker,
        **marks[0].rates(marks[groups], engines=farm.config.run.engines),
        "ledger": {k: v - ledger_before[k] for k, v in farm.ledger.summary().items()},
    }


async def _engine_replay(farm, groups: list, concurrent_groups: int) -> dict:
    """The engines' own rate on exactly the work of the rollout-only stage, offline: every
    episode of ``groups`` replayed turn by turn with its recorded prompt-side tokens (task,
    observations, template) and as many generated tokens as it sampled, at most
    ``concurrent_groups`` groups at once in the order the farm finished them, from a cold prefix
    cache like the stage's. No env, no rollout workers, no waiting between turns: the machine's
    limit for this workload at this batch size, which the farm's rate is measured against.

    Each replayed turn extends the replay's own conversation (its sampled tokens, then the
    recorded observation turn), so prompt lengths, prefix-cache reuse and the tokens each turn
    must prefill are those of the rollouts, and so is the attention cost of their contexts."""
    from serving.types import SamplingSpec

    cfg = farm.config
    slots = asyncio.Semaphore(concurrent_groups)

    async def episode(traj) -> int:
        context: list[int] = []
        generated = 0
        for turn in traj.turns:
            context += turn.prompt_token_ids
            spec = SamplingSpec(
                max_tokens=max(1, len(turn.completion_token_ids)),
                temperature=cfg.rollout.temperature,
                top_p=cfg.rollout.top_p,
                ignore_eos=True,
            )
            key = traj.group_id  # the farm's routing key: one engine per group
            out = await farm.engine_pool.generate(context, spec, route_key=key)
            context += out.token_ids
            generated += len(out.token_ids)
        return generated

    async def group(g) -> int:
        async with slots:
            return sum(await asyncio.gather(*(episode(t) for t in g.trajectories)))

    await farm.engine_pool.reset_prefix_cache()
    before = await farm.totals()
    started = time.perf_counter()
    tokens = sum(await asyncio.gather(*(group(g) for g in groups)))
    wall = time.perf_counter() - started
    # The farm's own window arithmetic gives the hit rate (its token rates count rollouts only).
    window = before.rates(await farm.totals(), engines=cfg.run.engines)
    return {
        "groups": len(groups),
        "episodes": sum(len(g.trajectories) for g in groups),
        "turns": sum(len(t.turns) for g in groups for t in g.trajectories),
        "concurrent_groups": concurrent_groups,
        "generated_tokens": tokens,
        "wall_s": wall,
        "tokens_per_s": tokens / wall,
        "prefix_cache_hit_rate": window["prefix_cache_hit_rate"],
    }


async def _engine_decode_peak(farm, tokenizer_path: str, sequences: int, rounds: int = 2) -> dict:
    """The engines' decode-only rate with ``sequences`` requests at once, each exactly
    ``rollout.max_new_tokens`` long (no early stop), all on one task's first prompt (prefilled
    once, then cached), nothing else running. Best of ``rounds``. A multi-turn workload cannot
    reach it: every turn must first read its new observation, which this rate contains none of."""
    from transformers import AutoTokenizer

    from env.catalog import load_catalog
    from env.prompts import render_task
    from rollout.aws_backend import AwsSession
    from rollout.chat import Conversation
    from serving.types import SamplingSpec

    cfg = farm.config
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    catalog = load_catalog()
    task = catalog.by_id(cfg.curriculum.tasks[0]) if cfg.curriculum.tasks else catalog.tasks[0]
    conv, _ = Conversation.start(tokenizer, AwsSession.system_prompt, render_task(task))
    prompt = list(conv.token_ids)
    sampling = SamplingSpec(
        max_tokens=cfg.rollout.max_new_tokens, temperature=cfg.rollout.temperature, ignore_eos=True
    )
    best = 0.0
    for _ in range(rounds):
        started = time.perf_counter()
        calls = [farm.engine_pool.generate(prompt, sampling) for _ in range(sequences)]
        done = await asyncio.gather(*calls)
        tokens = sum(len(c.token_ids) for c in done)
        best = max(best, tokens / (time.perf_counter() - started))
    return {
        "sequences": sequences,
        "prompt_tokens": len(prompt),
        "max_new_tokens": cfg.rollout.max_new_tokens,
        "tokens_per_s": best,
    }


async def _engine_stages(farm, settings: dict, model_path: str, results: dict) -> None:
    """Rollouts only (learner idle), their offline replay and the decode-only peak."""
    cfg = farm.config
    groups = settings["rollout_groups"] or 2 * farm.workers.size * cfg.env.groups_per_worker
    _log(f"farm rollout-only: {groups} groups, learner idle")
    played: list = []
    rollout = results["rollout_only"] = await _rollout_only_stage(farm, groups, played)
    _log(f"farm rollout-only: {_brief(rollout)}")
    concurrent = rollout["concurrent_groups"]
    _log(f"engine replay: the same {len(played)} groups' turns, offline, {concurrent} at once")
    replay = results["engine_replay"] = await _engine_replay(farm, played, concurrent)
    _log(f"engine replay: {replay['tokens_per_s']:.0f} generated tokens/s, prefix-cache hit "
         f"rate {replay['prefix_cache_hit_rate'] or 0:.0%}")  # fmt: skip
    sequences = concurrent * farm.config.rollout.group_size
    results["engine_decode_peak"] = await _engine_decode_peak(farm, model_path, sequences)
    _log(f"engine decode-only peak: {results['engine_decode_peak']['tokens_per_s']:.0f} "
         f"generated tokens/s with {sequences} sequences at once")  # fmt: skip


async def _farm_stages(farm, settings: dict, model_path: str) -> dict:
    cfg = farm.config
    workers, size = cfg.env.workers, cfg.rollout.group_size
    results: dict = {}
    settle = settings["settle_updates"]
    if not settings["modes_only"]:
        await _engine_stages(farm, settings, model_path, results)
    stages: dict[str, list[dict]] = {"sync": [], "async": []}
    for index in range(settings["rounds"]):
        # ABBA order: a drift over the run (the policy learns, episodes change length) weighs on
        # both modes alike instead of favouring the one measured later.
        for mode in ("sync", "async") if index % 2 == 0 else ("async", "sync"):
            _log(
                f"farm {mode} (round {index + 1}/{settings['rounds']}): {settle} + "
                f"{settings['updates']} updates (the first {settle} not measured), "
                f"{workers} env workers, G={size}"
            )
            stage = await _farm_stage(farm, settings["updates"], mode, workers, size, settle)
            _log(f"farm {mode}: {_brief(stage)}")
            stages[mode].append(stage)
    for mode, parts in stages.items():
        results[mode] = combine_stages(parts)
    if settings["sweep"]:
        results["sweep_env_workers"] = []
        for n in settings["sweep_workers"]:
            row = await _farm_stage(farm, settings["sweep_updates"], "async", n, size, settle)
            _log(f"sweep env workers={n}: {_brief(row)}")
            results["sweep_env_workers"].append(row)
        results["sweep_group_size"] = []
        for g in settings["sweep_group_sizes"]:
            row = await _farm_stage(farm, settings["sweep_updates"], "async", workers, g, settle)
            _log(f"sweep G={g}: {_brief(row)}")
            results["sweep_group_size"].append(row)
    return results


def combine_stages(stages: list[dict]) -> dict:
    """One mode's stages of several rounds as one measurement: totals over the summed windows."""
    if len(stages) == 1:
        return stages[0]
    wall = sum(s["wall_s"] for s in stages)
    updates = sum(s["updates"] for s in stages)
    episodes = sum(s["episodes"] for s in stages)

    def total(rate: str) -> float:
        return sum(s[rate] * s["wall_s"] for s in stages)

    staleness: dict[str, int] = {}
    for stage in stages:
        for key, count in stage["staleness_histogram"].items():
            staleness[key] = staleness.get(key, 0) + count
    last = stages[-1]
    return {
        **{k: last[k] for k in ("mode", "env_workers", "group_size", "settle_updates")},
        "updates": updates,
        "wall_s": wall,
        "episodes": episodes,
        "episodes_per_s": episodes / wall,
        "generated_tokens_per_s": total("generated_tokens_per_s") / wall,
        "env_steps_per_s": total("env_steps_per_s") / wall,
        "grpo_steps_per_hour": updates * 3600 / wall,
        "engine_idle_fraction": total("engine_idle_fraction") / wall,
        "prefix_cache_hit_rate": _mean_of(stages, "prefix_cache_hit_rate"),
        "env_step_ms_p50": last["env_step_ms_p50"],
        "env_step_ms_p99": last["env_step_ms_p99"],
        "staleness_histogram": dict(sorted(staleness.items())),
        "ledger": {k: sum(s["ledger"][k] for s in stages) for k in last["ledger"]},
        "final_version": last["final_version"],
        "rounds": stages,
    }


def _mean_of(stages: list[dict], key: str) -> float | None:
    values = [s[key] for s in stages if s.get(key) is not None]
    return sum(values) / len(values) if values else None


def _brief(row: dict) -> str:
    return (
        f"{row['episodes_per_s']:.2f} ep/s, {row['generated_tokens_per_s']:.0f} tok/s, "
        f"{row['env_steps_per_s']:.1f} steps/s, {row['grpo_steps_per_hour']:.0f} updates/h, "
        f"engine idle {row['engine_idle_fraction']:.0%}"
    )


async def _routing_stages(farm, settings: dict) -> dict:
    """Sticky-by-group and least-loaded routing alternated (ABBA) on the same farm, each stage
    the same number of whole groups with the learner idle, from emptied prefix caches: routing
    changes only the engines' work, and on a box the learner shares it would set the pace.
    Prefix-cache hit rate from vLLM's own counts, and throughput, per routing."""
    cfg = farm.config
    groups = settings["rollout_groups"] or farm.workers.size * cfg.env.groups_per_worker
    stages: dict[str, list[dict]] = {"sticky": [], "least_loaded": []}
    for index in range(settings["rounds"]):
        order = ("sticky", "least_loaded") if index % 2 == 0 else ("least_loaded", "sticky")
        for routing in order:
            farm.player.set_routing(routing)
            await farm.engine_pool.reset_prefix_cache()
            stage = await _rollout_only_stage(farm, groups)
            _log(f"routing {routing}: prefix-cache hit rate "
                 f"{stage['prefix_cache_hit_rate']:.1%}, {_brief(stage)}")  # fmt: skip
            stages[routing].append(stage)
    return {routing: combine_routing(parts) for routing, parts in stages.items()}


def combine_routing(stages: list[dict]) -> dict:
    """One routing's rollout-only stages as one measurement: totals over the summed windows."""
    wall = sum(s["wall_s"] for s in stages)
    episodes = sum(s["episodes"] for s in stages)
    return {
        "groups": sum(s["groups"] for s in stages),
        "wall_s": wall,
        "episodes": episodes,
        "episodes_per_s": episodes / wall,
        "generated_tokens_per_s": sum(s["generated_tokens_per_s"] * s["wall_s"] for s in stages)
        / wall,
        "engine_idle_fraction": sum(s["engine_idle_fraction"] * s["wall_s"] for s in stages) / wall,
        "prefix_cache_hit_rate": _mean_of(stages, "prefix_cache_hit_rate"),
        "rounds": stages,
    }


def run_routing(config: FarmConfig, model_path: str, settings: dict) -> dict:
    """A farm with ``routing_engines`` engines, run under both routings."""
    from cluster.farm.driver import Farm

    engines = settings["routing_engines"]
    data = config.model_dump(mode="json")
    data["run"] |= {"engines": engines, "name": f"{config.run.name}-routing"}
    routed = FarmConfig.model_validate(data)
    _log(f"routing: a farm with {engines} engines, sticky vs least-loaded")
    farm = Farm.start(routed, model_path)
    try:
        return asyncio.run(_routing_stages(farm, settings))
    finally:
        farm.shutdown()


def run_farm(config: FarmConfig, model_path: str, settings: dict) -> dict:
    from cluster.farm.driver import Farm

    _log("farm: starting engines, learner and rollout workers")
    farm = Farm.start(config, model_path)
    try:
        return asyncio.run(_farm_stages(farm, settings, model_path))
    finally:
        farm.shutdown()


# ---- the whole bench ----------------------------------------------------------------------------


def run_rollout_bench(config: FarmConfig, settings: dict, out_dir: Path) -> dict:
    """All stages in order (or only the routing or the modes stages); returns the JSON-ready
    result (also written to ``out_dir``)."""
    from cluster.models.warm_start import prepare_model

    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = prepare_model(config, log=_log)
    if settings["routing_only"]:
        routing = run_routing(config, model_path, settings)
        result = routing_result(config, routing, model_path, settings)
    elif settings["modes_only"]:
        result = modes_result(run_farm(config, model_path, settings), config, settings, model_path)
    else:
        result = _whole_bench(config, settings, out_dir, model_path)
    (out_dir / "result.json").write_text(json.dumps(result, indent=1))
    return result


def _whole_bench(config: FarmConfig, settings: dict, out_dir: Path, model_path: str) -> dict:
    from benchmarks.sequential_baseline import run_sequential_baseline

    groups, size = settings["baseline_groups"], config.rollout.group_size
    _log(f"sequential baseline: {groups} group(s) of G={size}")
    sequential = run_sequential_baseline(model_path, config, groups, log=_log)
    _log(f"sequential: {sequential['episodes_per_s']:.3f} ep/s")
    farm = run_farm(config, model_path, settings)
    result = summarize(sequential, farm, config, settings, model_path)
    if settings["routing_engines"]:
        routing = run_routing(config, model_path, settings)
        result["routing"] = routing
        for name, stage in routing.items():
            result[f"prefix_cache_hit_rate_{name}"] = stage["prefix_cache_hit_rate"]
    if settings["sweep"]:
        result["plots"] = plot_sweeps(farm, out_dir)
    return result


def bench_kind(settings: dict) -> str:
    """The results file a run is recorded in: ``routing``, ``modes`` or ``rollout``."""
    if settings["routing_only"]:
        return "routing"
    return "modes" if settings["modes_only"] else "rollout"


# Issue 23's routing targets, on the SmolLM2 rollout bench with 2 engines.
ROUTING_TARGETS = {"sticky_prefix_cache_hit_rate": 0.85, "sticky_over_least_loaded": 1.15}


def routing_result(config: FarmConfig, routing: dict, model: str, settings: dict) -> dict:
    """``--routing-only``: sticky-by-group vs least-loaded, their hit rates and speed ratio."""
    sticky, least = routing["sticky"], routing["least_loaded"]
    ratio = sticky["episodes_per_s"] / least["episodes_per_s"]
    hit = sticky["prefix_cache_hit_rate"]
    return {
        "model": model,
        "engines": settings["routing_engines"],
        "group_size": config.rollout.group_size,
        "env_workers": config.env.workers,
        "routing": routing,
        "prefix_cache_hit_rate_sticky": hit,
        "prefix_cache_hit_rate_least_loaded": least["prefix_cache_hit_rate"],
        "sticky_over_least_loaded": ratio,
        "routing_targets": ROUTING_TARGETS,
        "targets": {
            "sticky_prefix_cache_hit_rate": hit >= ROUTING_TARGETS["sticky_prefix_cache_hit_rate"],
            "sticky_over_least_loaded": ratio >= ROUTING_TARGETS["sticky_over_least_loaded"],
        },
    }


def modes_result(farm: dict, config: FarmConfig, settings: dict, model: str) -> dict:
    """``--modes-only``: the farm's sync and async learning stages, their ratio per round."""
    sync, asyn = farm["sync"], farm["async"]
    ratio = asyn["grpo_steps_per_hour"] / sync["grpo_steps_per_hour"]
    return {
        "sync_grpo_steps_per_hour": sync["grpo_steps_per_hour"],
        "async_grpo_steps_per_hour": asyn["grpo_steps_per_hour"],
        "speedup_async_vs_sync": ratio,
        "speedup_async_vs_sync_episodes": asyn["episodes_per_s"] / sync["episodes_per_s"],
        "speedup_async_vs_sync_rounds": _round_ratios(sync, asyn),
        "engine_idle_fraction_sync": sync["engine_idle_fraction"],
        "engine_idle_fraction_async": asyn["engine_idle_fraction"],
        "targets": {"speedup_async_vs_sync >= 1.0": ratio >= 1.0},
        "sync": sync,
        "async": asyn,
        "setup": _setup(config, model, settings),
    }


def _round_ratios(sync: dict, asyn: dict) -> list[float]:
    """Each round's own async/sync ratio (ABBA pairs): how much the summed ratio moves."""
    return [
        a["grpo_steps_per_hour"] / b["grpo_steps_per_hour"]
        for a, b in zip(asyn.get("rounds", [asyn]), sync.get("rounds", [sync]), strict=True)
    ]


def summarize(sequential: dict, farm: dict, config: FarmConfig, settings: dict, model: str) -> dict:
    sync, asyn = farm["sync"], farm["async"]
    rollout, replay = farm["rollout_only"], farm["engine_replay"]
    decode = farm["engine_decode_peak"]
    speedup_sync = sync["episodes_per_s"] / sequential["episodes_per_s"]
    speedup_async = asyn["grpo_steps_per_hour"] / sync["grpo_steps_per_hour"]
    speedup_rollout = rollout["episodes_per_s"] / sequential["episodes_per_s"]
    peak_fraction = rollout["generated_tokens_per_s"] / replay["tokens_per_s"]
    result = {
        "sequential_episodes_per_s": sequential["episodes_per_s"],
        "rollout_only_episodes_per_s": rollout["episodes_per_s"],
        "speedup_rollout_vs_sequential": speedup_rollout,
        "sequential_generated_tokens_per_s": sequential["generated_tokens_per_s"],
        "rollout_only_generated_tokens_per_s": rollout["generated_tokens_per_s"],
        "sequential_env_steps_per_s": sequential["env_steps_per_s"],
        "rollout_only_env_steps_per_s": rollout["env_steps_per_s"],
        # The engine's offline peak on the rollouts' own work (their turns replayed with no env
        # between them), and the decode-only rate no multi-turn workload can reach.
        "engine_peak_tokens_per_s": replay["tokens_per_s"],
        "engine_peak_fraction": peak_fraction,
        "engine_decode_peak_tokens_per_s": decode["tokens_per_s"],
        "engine_decode_peak_fraction": rollout["generated_tokens_per_s"] / decode["tokens_per_s"],
        # The background documents' epoch: G=8 x 100 prompts x 5 steps = 4000 generate calls,
        # one per env step. The farm's figure is rollout-only, like the sequential loop.
        "epoch_4000_s_sequential": EPOCH_CALLS / sequential["env_steps_per_s"],
        "epoch_4000_s_farm": EPOCH_CALLS / rollout["env_steps_per_s"],
        "epoch_4000_s_farm_async_learning": EPOCH_CALLS / asyn["env_steps_per_s"],
        "sync_episodes_per_s": sync["episodes_per_s"],
        "async_episodes_per_s": asyn["episodes_per_s"],
        "sync_grpo_steps_per_hour": sync["grpo_steps_per_hour"],
        "async_grpo_steps_per_hour": asyn["grpo_steps_per_hour"],
        "speedup_sync_vs_sequential": speedup_sync,
        "speedup_async_vs_sync": speedup_async,
        "speedup_async_vs_sync_episodes": asyn["episodes_per_s"] / sync["episodes_per_s"],
        # Each round's own ratio (ABBA pairs): how much the summed ratio moves round to round.
        "speedup_async_vs_sync_rounds": _round_ratios(sync, asyn),
        "engine_idle_fraction_sync": sync["engine_idle_fraction"],
        "engine_idle_fraction_async": asyn["engine_idle_fraction"],
        "staleness_histogram_async": asyn["staleness_histogram"],
        "targets": _targets(speedup_rollout, peak_fraction, speedup_sync, speedup_async, asyn),
        "sequential": sequential,
        "rollout_only": rollout,
        "engine_replay": replay,
        "engine_decode_peak": decode,
        "sync": sync,
        "async": asyn,
        "setup": _setup(config, model, settings),
    }
    if settings["sweep"]:
        result["sweep_env_workers"] = farm["sweep_env_workers"]
        result["sweep_group_size"] = farm["sweep_group_size"]
    return result


def _targets(
    speedup_rollout: float,
    peak_fraction: float,
    speedup_sync: float,
    speedup_async: float,
    asyn: dict,
) -> dict[str, bool]:
    """Each throughput target, met or not."""
    return {
        "speedup_rollout_vs_sequential >= 10": speedup_rollout >= TARGETS["rollout_vs_sequential"],
        "engine_peak_fraction >= 0.8": peak_fraction >= TARGETS["engine_peak_fraction"],
        "speedup_sync_vs_sequential >= 30": speedup_sync >= TARGETS["sync_vs_sequential"],
        "speedup_async_vs_sync >= 1.6": speedup_async >= TARGETS["async_vs_sync"],
        "engine_idle_fraction_async < 0.10": asyn["engine_idle_fraction"]
        < TARGETS["engine_idle_async"],
    }  # fmt: skip


def _setup(config: FarmConfig, model: str, settings: dict) -> dict:
    """What was measured, on what: the workload's settings and the machine's load."""
    return {
        "model": model,
        "group_size": config.rollout.group_size,
        "max_steps": config.rollout.max_steps,
        "max_new_tokens": config.rollout.max_new_tokens,
        "temperature": config.rollout.temperature,
        "env_workers": config.env.workers,
        "groups_per_worker": config.env.groups_per_worker,
        "groups_per_update": config.train.groups_per_update,
        "engines": config.run.engines,
        "tasks": config.curriculum.tasks,
        "seed": config.run.seed,
        "cpu_count": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
        **settings,
    }


SWEEP_METRICS = (
    ("episodes_per_s", "episodes/s"),
    ("generated_tokens_per_s", "generated tokens/s"),
    ("env_steps_per_s", "env steps/s"),
    ("engine_idle_fraction", "engine idle fraction"),
)


def plot_sweeps(farm: dict, out_dir: Path) -> dict:
    """One PNG per sweep: each rate against the swept size. Returns the files' paths."""
    paths = {}
    for key, xkey, label in (
        ("sweep_env_workers", "env_workers", "env workers"),
        ("sweep_group_size", "group_size", "G (episodes per group)"),
    ):
        path = out_dir / f"{key}.png"
        plot_curves(farm[key], xkey, label, path)
        paths[key] = str(path)
    return paths


def plot_curves(rows: list[dict], xkey: str, xlabel: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SWEEP_METRICS), figsize=(4 * len(SWEEP_METRICS), 3.4))
    xs = [r[xkey] for r in rows]
    for ax, (metric, title) in zip(axes, SWEEP_METRICS, strict=True):
        ax.plot(xs, [r[metric] for r in rows], marker="o")
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        ax.set_xticks(xs)
        ax.grid(alpha=0.3)
    fig.suptitle(f"rlfarm async farm: sweep of {xlabel}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@contextlib.contextmanager
def _stdout_reserved_for_json():
    """Send everything written to fd 1 (ours, Ray's, vLLM's) to stderr; yield the real stdout.

    With ``--json`` stdout must hold the JSON object alone, but the farm's progress lines and
    child processes write to stdout; they are redirected at the file-descriptor level.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    real = os.fdopen(saved, "w")
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield real
    finally:
        sys.stderr.flush()
        os.dup2(saved, 1)
        real.close()


def main(args: argparse.Namespace) -> int:
    try:
        config = bench_config(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    settings = bench_settings(args)
    out = Path(args.out)
    with _stdout_reserved_for_json() if args.json else contextlib.nullcontext(sys.stdout) as real:
        from cluster.base.ray_runtime import farm_cpus, init_ray

        most_workers = max([config.env.workers, *settings["sweep_workers"]])
        engines = max(config.run.engines, settings["routing_engines"])
        init_ray(min_cpus=farm_cpus(engines, most_workers))
        result = run_rollout_bench(config, settings, out)
        from benchmarks.records import record

        record(f"{bench_kind(settings)}-{Path(args.config or 'configs/local.yaml').stem}", result)
        if args.json:
            real.write(json.dumps(result) + "\n")
            real.flush()
        else:
            _print_table(result)
    _log(f"result: {out / 'result.json'}")
    return 0


def _print_table(result: dict) -> None:
    for key, value in result.items():
        if not isinstance(value, dict | list):
            print(f"{key:>34}: {value:.4g}" if isinstance(value, float) else f"{key:>34}: {value}")
    for key, ok in result["targets"].items():
        print(f"{'target ' + key:>48}: {'met' if ok else 'MISSED'}")
    for name, path in result.get("plots", {}).items():
        print(f"{name:>34}: {path}")
