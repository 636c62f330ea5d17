"""Entry point of a training run, locally or under ``ray job submit``.

    python -m cluster.main --config configs/local.yaml [--set train.updates=5 ...]

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

from cluster.config import ConfigError, FarmConfig, load_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cluster.main", description=__doc__)
    add_train_arguments(parser)
    return parser.parse_args(argv)


def add_overrides(parser: argparse.ArgumentParser, what: str = "override one config field") -> None:
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
        help=f"{what}, e.g. --set train.updates=5 (repeatable)",
    )  # fmt: skip


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """``rlfarm train`` and ``python -m cluster.main`` take the same flags."""
    parser.add_argument("--config", type=Path, default=None, help="YAML file (see configs/)")
    add_overrides(parser)
    parser.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS/local)")
    parser.add_argument(
        "--resume", action="store_true",
        help="continue the run in <run.out_dir>/<run.name> from its newest checkpoint",
    )  # fmt: skip


async def run(config: FarmConfig, model_path: str, resume: bool = False) -> dict:
    """The whole run: held-out eval, GRPO, held-out eval again, ``summary.json``. A run that stops
    early (an error, a limit, the watchdog, SIGTERM/SIGINT) still writes its summary, with why,
    after the farm checkpointed it and balanced its ledger."""
    from cluster.farm.driver import Farm
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
        await farm.begin()
        periodic = config.train.eval_every > 0
        if farm.before is None:
            farm.before = await farm.evaluate(version=0)
            farm.metrics.event(f"held-out before: {json.dumps(farm.before)}")
            if periodic:
                await farm.periodic_eval(0, heldout=farm.before)
        try:
            await farm.main_loop()
            summary["stopped"] = {"kind": "completed", "message": ""}
            summary["after"] = await farm.evaluate(version=farm.state.version)
            farm.metrics.event(f"held-out after: {json.dumps(summary['after'])}")
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


def _outcome(farm, started: float) -> dict:
    return {
        "updates": farm.state.updates,
        "final_version": farm.state.version,
        "wall_s": round(time.time() - started, 1),
        "heldout_tasks": len(farm.split.heldout),
        "before": farm.before,
        "ledger": farm.ledger.summary(),
        "ledger_balanced": farm.ledger.balanced,
        "staleness_histogram": farm.state.staleness,
        "worker_restarts": farm.workers.restarts,
        "engine_restarts": farm.engine_restarts,
        "learner_restarts": farm.recovery.learner_restarts,
    }


def summary_table(summary: dict) -> str:
    """Held-out results before -> after GRPO, one line per tier, for the terminal."""
    lines = [
        f"held-out ({summary['heldout_tasks']} tasks, greedy), before -> after "
        f"{summary['updates']} GRPO updates:",
        f"{'tier':<14}{'completion':>16}{'reward':>18}{'progress':>16}",
    ]
    for tier, before in (summary["before"] or {}).items():
        after = summary.get("after", {}).get(tier, {})
        cells = [
            f"{before.get(key) or 0:.2f} -> {after.get(key) or 0:.2f}"
            for key in ("completion_rate", "reward", "max_progress")
        ]
        lines.append(f"{tier:<14}{cells[0]:>16}{cells[1]:>18}{cells[2]:>16}")
    return "\n".join(lines)


def train(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"rlfarm train: {exc}", file=sys.stderr)
        return 2
    from cluster.farm.wiring import RunDirectoryError, check_run_dir, run_directory
    from cluster.task_split import task_split

    try:
        run_dir = run_directory(config)
        check_run_dir(run_dir, args.resume)  # before minutes of set-up, not after
        task_split(config)  # the env's tasks fit the curriculum
    except (RunDirectoryError, ConfigError) as exc:
        print(f"rlfarm train: {exc}", file=sys.stderr)
        return 2
    from cluster.ray_runtime import farm_cpus, init_ray
    from cluster.warm_start import prepare_model

    init_ray(args.address, farm_cpus(config.run.engines, config.env.workers))
    model_path = prepare_model(config)
    summary = asyncio.run(run(config, model_path, resume=args.resume))
    stopped = summary["stopped"]
    if stopped["kind"] != "completed":
        print(f"rlfarm: the run stopped early ({stopped['kind']}): {stopped['message']}",
              file=sys.stderr)  # fmt: skip
        print(f"ledger: {json.dumps(summary['ledger'])} (balanced: {summary['ledger_balanced']})")
        print(f"summary: {run_dir / 'summary.json'}; continue with --resume")
        return 130 if stopped["kind"] == "signal" else 1
    print(summary_table(summary))
    print(f"ledger: {json.dumps(summary['ledger'])} (balanced: {summary['ledger_balanced']})")
    print(f"run directory: {run_dir}")
    print(f"summary: {run_dir / 'summary.json'}  reward curve: {run_dir / 'reward_curve.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(train(parse_args()))
