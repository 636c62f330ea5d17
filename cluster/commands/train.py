"""Entry point of a training run, locally or under ``ray job submit``.

    python -m cluster.commands.train --config configs/local.yaml [--set train.updates=5 ...]

Parses and validates the config before importing torch, vLLM or Ray (a bad config fails in
milliseconds), connects to Ray (the job's cluster when ``RAY_ADDRESS`` is set, else a local
one), prepares the model (the built-in tiny model is SFT-warmed first when no warm copy is cached),
evaluates the held-out tasks, trains, evaluates again, and writes ``runs/<name>/summary.json``
next to the adapters, metrics, ledger and reward curve.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path

from cluster.base.config import ConfigError, FarmConfig, load_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cluster.commands.train", description=__doc__)
    add_train_arguments(parser)
    return parser.parse_args(argv)


def add_overrides(parser: argparse.ArgumentParser, what: str = "override one config field") -> None:
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
        help=f"{what}, e.g. --set train.updates=5 (repeatable)",
    )  # fmt: skip


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """``rlfarm train`` and ``python -m cluster.commands.train`` take the same flags."""
    parser.add_argument("--config", type=Path, default=None, help="YAML file (see configs/)")
    add_overrides(parser)
    parser.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS/local)")
    parser.add_argument(
        "--resume", action="store_true",
        help="continue the run in <run.out_dir>/<run.name> from its newest checkpoint",
    )  # fmt: skip


async def run(
    config: FarmConfig, model_path: str, resume: bool = False, before: dict | None = None
) -> dict:
    """The whole run: held-out eval, GRPO, held-out eval again, ``summary.json``. A run that stops
    early (an error, a limit, the watchdog, SIGTERM/SIGINT) still writes its summary, with why,
    after the farm checkpointed it and balanced its ledger. ``before``: the held-out eval of this
    very model under this config's eval settings, already made (a bench's earlier run of it)."""
    from cluster.farm.driver import Farm
    from cluster.farm.evaluating import overall
    from cluster.farm.failures import RunStopped

    started = time.time()
    farm = Farm.start(config, model_path, resume=resume)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, farm.request_stop, sig.name)
    summary = {"run": config.run.name, "model": model_path, "mode": config.train.mode,
               "run_dir": str(farm.run_dir), "resumed": resume}  # fmt: skip
    try:
        farm.metrics.event(f"run {config.run.name}: model {model_path}, mode {config.train.mode}")
        periodic = config.train.eval_every > 0
        try:
            # Start-up and the first eval take minutes: a signal stops them as it stops the loop.
            await farm.stoppable(farm.evaluate_before(before))
            await farm.main_loop()
            summary["stopped"] = {"kind": "completed", "message": ""}
            summary["after"] = await farm.evaluate_heldout(version=farm.state.version)
            farm.metrics.event(f"held-out after: {json.dumps(overall(summary['after']))}")
            summary["change"] = heldout_change(farm.before, summary["after"])
            if periodic:
                await farm.periodic_eval(farm.state.updates, heldout=summary["after"])
        except RunStopped as stop:
            summary["stopped"] = {"kind": stop.kind, "message": stop.message}
            farm.metrics.event(f"run stopped ({stop.kind}): {stop.message}")
        summary.update(_outcome(farm, started))
        summary["placement"] = await farm.whereabouts()
        (farm.run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        farm.metrics.plot(farm.run_dir / "reward_curve.png")
        return summary
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        farm.shutdown()


def heldout_change(before: dict[str, dict], after: dict[str, dict]) -> dict[str, dict]:
    """Per held-out view, after minus before: the paired, task-stratified difference in success
    with its 95% interval and p-value (``cluster.evaluation.stats``)."""
    from cluster.evaluation.scoring import task_counts
    from cluster.evaluation.stats import paired_difference

    return {
        view: paired_difference(
            task_counts(before[view]["by_task"]), task_counts(after[view]["by_task"]),
            ("before", "after"),
        ).as_dict()
        for view in after
        if view in before and _played(before[view]) and _played(after[view])
    }  # fmt: skip


def _played(result: dict) -> bool:
    return any(row["episodes"] for row in result["by_task"].values())


def _outcome(farm, started: float) -> dict:
    from cluster.base.task_split import unseen_operations

    return {
        "updates": farm.state.updates,
        "final_version": farm.state.version,
        "wall_s": round(time.time() - started, 1),
        "heldout_tasks": {view: len(tasks) for view, tasks in farm.split.views().items()},
        "eval": {
            "episodes_per_task": farm.config.run.eval_episodes,
            "temperature": farm.config.run.eval_temperature,
        },
        "unseen_operations": unseen_operations(farm.config, farm.split),
        "before": farm.before,
        "ledger": farm.ledger.summary(),
        "ledger_balanced": farm.ledger.balanced,
        "staleness_histogram": farm.state.staleness,
        "worker_restarts": farm.workers.restarts,
        "engine_restarts": farm.engine_restarts,
        "learner_restarts": farm.recovery.learner_restarts,
    }


def summary_table(summary: dict, run_dir: Path | None = None) -> str:
    """Before -> after GRPO on each held-out view (success with 95% intervals, reward, the paired
    difference and its p-value), then the fixed training tasks' curve, for the terminal."""
    from cluster.evaluation.stats import PairedDifference

    spec = summary["eval"]
    draw = "greedy" if spec["temperature"] == 0 else f"sampled at T={spec['temperature']:g}"
    lines = [
        f"held-out success before -> after {summary['updates']} GRPO updates "
        f"({spec['episodes_per_task']} episodes per task, {draw}; 95% Wilson intervals):",
        f"{'view':<11}{'tier':<14}{'tasks':>6}{'episodes':>9}{'success':>30}{'reward':>16}",
    ]
    for view, before in (summary["before"] or {}).items():
        after = summary.get("after", {}).get(view, {}).get("by_tier", {})
        for tier, was in before["by_tier"].items():
            now = after.get(tier, {})
            lines.append(
                f"{view:<11}{tier:<14}{was['tasks']:>6}{was['episodes']:>9}"
                f"{_rate(was) + ' -> ' + _rate(now):>30}"
                f"{_num(was.get('reward')) + ' -> ' + _num(now.get('reward')):>16}"
            )
        if view in summary.get("change", {}):
            change = PairedDifference(**{**summary["change"][view], "ci95": tuple(
                summary["change"][view]["ci95"])})  # fmt: skip
            lines.append(f"{'':<11}paired, by task: {change.describe()}")
    if run_dir is not None:
        lines += _train_curve(run_dir)
    return "\n".join(lines)


def _rate(summary: dict) -> str:
    rate = summary.get("completion_rate")
    if rate is None:
        return "-"
    low, high = summary.get("completion_ci95") or (rate, rate)
    return f"{100 * rate:.0f}% [{100 * low:.0f}-{100 * high:.0f}]"


def _num(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _train_curve(run_dir: Path) -> list[str]:
    """The periodic eval's fixed training tasks, update by update (eval.jsonl)."""
    from cluster.farm.eval_curve import EvalCurve

    rows = [r for r in EvalCurve(run_dir).rows() if "all" in (r.get("train") or {})]
    if not rows:
        return []
    out = ["fixed training tasks (periodic eval, all tiers): update: success [95% CI]"]
    out += [f"  {r['update']:>4}: {_rate(r['train']['all'])}" for r in rows]
    return out


def train(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"rlfarm train: {exc}", file=sys.stderr)
        return 2
    from cluster.base.task_split import task_split
    from cluster.farm.wiring import RunDirectoryError, check_run_dir, run_directory

    try:
        run_dir = run_directory(config)
        check_run_dir(run_dir, args.resume)  # before minutes of set-up, not after
        task_split(config)  # the env's tasks fit the curriculum
    except (RunDirectoryError, ConfigError) as exc:
        print(f"rlfarm train: {exc}", file=sys.stderr)
        return 2
    from cluster.base.ray_runtime import farm_cpus, init_ray
    from cluster.models.warm_start import prepare_model

    init_ray(args.address, farm_cpus(config.run.engines, config.most_env_workers))
    model_path = prepare_model(config)
    summary = asyncio.run(run(config, model_path, resume=args.resume))
    stopped = summary["stopped"]
    if stopped["kind"] != "completed":
        print(f"rlfarm: the run stopped early ({stopped['kind']}): {stopped['message']}",
              file=sys.stderr)  # fmt: skip
        print(f"ledger: {json.dumps(summary['ledger'])} (balanced: {summary['ledger_balanced']})")
        print(f"summary: {run_dir / 'summary.json'}; continue with --resume")
        return 130 if stopped["kind"] == "signal" else 1
    print(summary_table(summary, run_dir))
    print(f"ledger: {json.dumps(summary['ledger'])} (balanced: {summary['ledger_balanced']})")
    print(f"run directory: {run_dir}")
    print(f"summary: {run_dir / 'summary.json'}  reward curve: {run_dir / 'reward_curve.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(train(parse_args()))
