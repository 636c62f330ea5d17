"""The ``rlfarm`` command line: every command is registered here, except the groups of packages
above ``cluster`` (``rlfarm bench``, in ``benchmarks.commands``), which register through the
``rlfarm.commands`` entry points.

Parsing imports nothing heavy: each handler imports torch, vLLM, Ray or moto inside itself, so
``rlfarm --help`` (and a mistyped flag) answers at once. Handlers are thin; the work lives in the
package that owns it (``cluster.commands.train`` trains, ``cluster.evaluation`` evaluates,
``benchmarks`` measures, ``env`` serves and exports, ``learner.sft`` fine-tunes).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cluster.commands.train import add_overrides, add_train_arguments


class UsageError(ValueError):
    """A flag's value is wrong; the message names the flag and what it takes."""


# ---- handlers -----------------------------------------------------------------------------------


def _cmd_train(args: argparse.Namespace) -> int:
    from cluster.commands.train import train

    return train(args)


def _cmd_scale(args: argparse.Namespace) -> int:
    from cluster.farm.control import scale

    if args.env_workers is not None and args.env_workers < 1:
        raise UsageError(f"--env-workers must be >= 1, got {args.env_workers}")
    status = scale(args.run, args.env_workers, address=args.address)
    if args.env_workers is not None:
        print(f"run {args.run}: env workers -> {args.env_workers}")
    print(json.dumps(status, indent=1))
    return 0


def _cmd_view(args: argparse.Namespace) -> int:
    from cluster.view.server import resolve_run, serve

    run = args.run_dir or args.run
    if run is None:
        raise UsageError("name the run: `rlfarm view runs/NAME` or `rlfarm view --run NAME`")
    serve(resolve_run(run), host=args.host, port=args.port)
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    from cluster.farm.audit import audit_run, render

    report = audit_run(Path(args.run_dir))
    print(json.dumps(report.as_dict()) if args.json else render(report))
    return 1 if report.defects else 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from cluster.evaluation.command import cmd_eval

    return cmd_eval(args)


def _cmd_build_tiny(args: argparse.Namespace) -> int:
    from cluster.models.registry import build_default_model

    print(build_default_model(home=args.home))
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from cluster.models.registry import resolve_model
    from cluster.models.smollm2 import ModelSourceError

    try:
        print(resolve_model(f"builtin:{args.name}", home=args.home))
    except (ModelSourceError, ValueError) as exc:
        print(f"rlfarm model fetch: {exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from cluster.models.registry import resolve_model
    from serving.openai_server import exec_server, serve_command

    model = resolve_model(args.model) if args.model else None
    argv = serve_command(
        Path(args.adapter), model=model, name=args.name, host=args.host, port=args.port
    )
    print("exec:", " ".join(argv), flush=True)
    exec_server(argv)
    return 0


def _cmd_tasks_list(args: argparse.Namespace) -> int:
    from env.catalog import load_catalog

    catalog = load_catalog(args.catalog)
    tasks = catalog.by_tier(args.tier) if args.tier else list(catalog)
    if args.json:
        json.dump([t.summary() for t in tasks], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    width = max((len(t.id) for t in tasks), default=2)
    print(f"{'ID':<{width}}  {'TIER':<12}  DESCRIPTION")
    for t in tasks:
        desc = " ".join(t.description.split())
        desc = desc if len(desc) <= 80 else desc[:77] + "..."
        print(f"{t.id:<{width}}  {t.tier:<12}  {desc}")
    print(f"{len(tasks)} tasks")
    return 0


def _cmd_env_serve(args: argparse.Namespace) -> int:
    from env.server import serve, settings_from_args

    serve(settings_from_args(args))
    return 0


def _cmd_export_sft(args: argparse.Namespace) -> int:
    from env.catalog import load_catalog
    from env.sft_export import export_sft, export_workers

    if not 0.0 <= args.val_fraction < 1.0:
        raise UsageError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    if args.variants < 0:
        raise UsageError(f"--variants must be >= 0, got {args.variants}")
    workers = export_workers() if args.workers is None else args.workers
    if workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    counts = export_sft(
        args.out,
        val_out=args.val_out,
        val_fraction=args.val_fraction,
        seed=args.seed,
        catalog=load_catalog(args.catalog),
        variants=args.variants,
        workers=workers,
    )
    val_out = args.val_out or args.out.with_name(f"{args.out.stem}.val.jsonl")
    extra = f" + {counts['variant_tasks']} renamed variants" if args.variants else ""
    print(
        f"wrote {counts['train_rows']} rows ({counts['train_tasks']} tasks{extra}) to {args.out} "
        f"and {counts['val_rows']} rows ({counts['val_tasks']} tasks) to {val_out}"
    )
    return 0


def _cmd_sft(args: argparse.Namespace) -> int:
    from cluster.base.progress import PhaseProgress
    from cluster.models.registry import resolve_model
    from learner.sft import SftOptions, run_sft

    progress = PhaseProgress("sft", "steps")
    with progress:
        result = run_sft(
            SftOptions(
                data=args.data,
                out=args.out,
                model=resolve_model(args.model),
                mode=args.mode,
                epochs=args.epochs,
                max_steps=args.max_steps,
                lr=args.lr,
                batch_size=args.batch_size,
                max_length=args.max_length,
                lora_r=args.lora_r,
                lora_alpha=args.lora_alpha,
                merge=args.merge,
                seed=args.seed,
                eval_data=args.eval_data,
                eval_before=not args.no_eval_before,
            ),
            on_step=progress.update,
        )
    if args.json:
        print(json.dumps(result.as_dict()))
        return 0
    print(f"sft ({result.mode}): {result.steps} steps, loss {result.train_loss:.4f}, "
          f"{result.seconds:.0f} s -> {result.out}")  # fmt: skip
    if result.exact_match_after is not None:
        print(f"held-out exact match: {result.exact_match_before:.3f} -> "
              f"{result.exact_match_after:.3f}")  # fmt: skip
    return 0


# ---- parser -------------------------------------------------------------------------------------


def _add_farm_commands(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="run the farm (GRPO with async rollouts) from a config")
    add_train_arguments(train)
    train.set_defaults(func=_cmd_train)

    scale = sub.add_parser("scale", help="change the env worker count of a running farm")
    scale.add_argument("--env-workers", type=int, default=None, help="new env worker count")
    scale.add_argument("--run", default="local", help="the run's run.name (default: local)")
    scale.add_argument("--address", default="auto", help="Ray cluster address")
    scale.set_defaults(func=_cmd_scale)

    view = sub.add_parser(
        "view", help="a local web page over a run: curves, ledger, episodes (live or finished)"
    )
    view.add_argument("run_dir", nargs="?", help="the run directory, e.g. runs/local")
    view.add_argument("--run", help="a run directory, or a run name under ./runs")
    view.add_argument("--host", default="127.0.0.1", help="bind address (default: local only)")
    view.add_argument("--port", type=int, default=8300, help="port (default: 8300)")
    view.set_defaults(func=_cmd_view)

    audit = sub.add_parser(
        "audit",
        help="check a run's ledger against its learner's record: lost, duplicated, unaccounted "
        "and contradictory groups and episodes, faults survived (exit 1 on a defect)",
    )
    audit.add_argument("run_dir", help="the run directory, e.g. runs/local (finished or live)")
    audit.add_argument("--json", action="store_true", help="one JSON object instead of text")
    audit.set_defaults(func=_cmd_audit)


def _add_eval_command(sub: argparse._SubParsersAction) -> None:
    from cluster.evaluation.command import MODES
    from cluster.evaluation.command import __doc__ as eval_doc

    p = sub.add_parser(
        "eval", help="dataset and live eval of base/SFT/GRPO models, adapters or endpoints",
        description=eval_doc, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    what = p.add_argument_group(
        "what to evaluate (one of --compare, --model/--adapter, --endpoint)"
    )
    what.add_argument("--compare", default=None, help="comma list of base,sft,grpo (needs --run)")
    what.add_argument("--model", default=None, help="model path or hub id ('builtin:tiny' too)")
    what.add_argument("--adapter", type=Path, default=None, help="LoRA adapter dir on --model")
    what.add_argument("--endpoint", default=None, help="OpenAI-compatible server URL")
    what.add_argument("--endpoint-model", default=None, help="model name the endpoint serves")
    what.add_argument("--name", default=None, help="label of a single target in the report")
    p.add_argument("--run", type=Path, default=None, help="run dir (runs/NAME) or run name")
    p.add_argument("--config", type=Path, default=None, help="config (default: the run's own)")
    add_overrides(p)
    p.add_argument("--mode", choices=MODES, default="both")
    p.add_argument("--out", type=Path, default=None, help="output dir (default: <run>/eval)")
    p.add_argument("--max-rows", type=int, default=None, help="dataset rows to score (spread)")
    p.add_argument("--max-tokens", type=int, default=64, help="reply budget in the dataset eval")
    p.add_argument("--samples", "--episodes", dest="samples", type=int, default=None,
                   help="live episodes per held-out task: independent draws, each its own seed "
                   "(default: run.eval_episodes)")  # fmt: skip
    p.add_argument("--temperature", type=float, default=None,
                   help="sampling temperature of the live eval; 0 is greedy "
                   "(default: run.eval_temperature)")  # fmt: skip
    p.add_argument("--views", default=None,
                   help="held-out views to play: new_names,new_tasks (default: every view the "
                   "env has)")  # fmt: skip
    p.add_argument("--dataset-concurrency", type=int, default=1,
                   help="dataset requests in flight (1: latency is per unloaded call)")  # fmt: skip
    p.add_argument("--live-concurrency", type=int, default=4, help="episodes in flight")
    p.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS/local)")
    p.set_defaults(func=_cmd_eval)


def _add_model_commands(sub: argparse._SubParsersAction) -> None:
    model = sub.add_parser("model", help="the built-in models").add_subparsers(
        dest="model_command", required=True
    )
    tiny = model.add_parser("build-tiny", help="build (or find cached) the built-in tiny model")
    tiny.add_argument("--home", type=Path, default=None, help="cache dir (default $RLFARM_HOME)")
    tiny.set_defaults(func=_cmd_build_tiny)
    fetch = model.add_parser(
        "fetch", help="build or convert a built-in model (smollm2-135m, tiny) into $RLFARM_HOME"
    )
    fetch.add_argument("name", choices=["smollm2-135m", "tiny"], help="the built-in model")
    fetch.add_argument("--home", type=Path, default=None, help="cache dir (default $RLFARM_HOME)")
    fetch.set_defaults(func=_cmd_fetch)

    serve = sub.add_parser("serve", help="OpenAI-compatible endpoint for a trained adapter (vLLM)")
    serve.add_argument("--adapter", required=True, help="adapter dir (peft save_pretrained layout)")
    serve.add_argument("--model", default=None, help="base model (default: the adapter's own)")
    serve.add_argument("--name", default="rlfarm", help="model name clients ask for")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(func=_cmd_serve)

    sft = sub.add_parser(
        "sft", help="SFT warm start on chat messages JSONL (trl)",
        description="Fine-tune on {'messages': [...]} JSONL rendered with the model's own chat "
        "template, loss on assistant tokens only. full: writes a new base model dir (needed for "
        "the randomly initialised built-in model); lora: writes an adapter (or --merge a model).",
    )  # fmt: skip
    sft.add_argument("--data", type=Path, required=True, help="training messages JSONL")
    sft.add_argument("--out", type=Path, required=True, help="output directory (replaced)")
    sft.add_argument("--model", default="builtin:tiny", help="base model (default: %(default)s)")
    sft.add_argument("--mode", choices=["auto", "full", "lora"], default="auto",
                     help="auto: full for models up to 50M parameters, else lora")  # fmt: skip
    sft.add_argument("--epochs", type=float, default=3.0, help="passes over the data")
    sft.add_argument("--max-steps", type=int, default=-1, help="optimizer steps; overrides epochs")
    sft.add_argument("--lr", type=float, default=None, help="default 1e-3 full, 2e-4 lora")
    sft.add_argument("--batch-size", type=int, default=16)
    sft.add_argument("--max-length", type=int, default=1024, help="longest conversation, tokens")
    sft.add_argument("--lora-r", type=int, default=8)
    sft.add_argument("--lora-alpha", type=float, default=16.0)
    sft.add_argument(
        "--merge", action="store_true", help="lora: save a merged model (GRPO's model_path)"
    )
    sft.add_argument("--eval-data", type=Path, default=None, help="held-out JSONL: exact match")
    sft.add_argument(
        "--no-eval-before", action="store_true",
        help="score --eval-data after training only (from random weights it is 0 anyway)",
    )  # fmt: skip
    sft.add_argument("--seed", type=int, default=0)
    sft.add_argument("--json", action="store_true", help="print the result as one JSON object")
    sft.set_defaults(func=_cmd_sft)


def _add_env_commands(sub: argparse._SubParsersAction) -> None:
    from env.server_settings import add_serve_arguments
    from env.tiers import TIERS

    tasks = sub.add_parser("tasks", help="inspect the AWS task catalog")
    tasks_sub = tasks.add_subparsers(dest="tasks_command", required=True)
    lst = tasks_sub.add_parser("list", help="list tasks (a table, or JSON with --json)")
    lst.add_argument("--tier", choices=TIERS, help="only tasks of this tier")
    lst.add_argument("--json", action="store_true", help="print a JSON list of task objects")
    lst.add_argument("--catalog", type=Path, default=None, help="task file or directory")
    lst.set_defaults(func=_cmd_tasks_list)

    env = sub.add_parser("env", help="the AWS agent environment").add_subparsers(
        dest="env_command", required=True
    )
    serve = env.add_parser(
        "serve", help="run the OpenEnv-compatible env server (FastAPI, many sessions)"
    )
    add_serve_arguments(serve)
    serve.set_defaults(func=_cmd_env_serve)

    export = env.add_parser(
        "export-sft", help="write SFT chat rows (JSONL) from the tasks' canonical solutions"
    )
    export.add_argument("--out", type=Path, required=True, help="train JSONL file to write")
    export.add_argument("--val-out", type=Path, default=None,
                        help="validation JSONL (default: <out>.val.jsonl)")  # fmt: skip
    export.add_argument("--val-fraction", type=float, default=0.1,
                        help="share of TASKS held out for validation")  # fmt: skip
    export.add_argument("--seed", type=int, default=0, help="seed for the split and the episodes")
    export.add_argument("--catalog", type=Path, default=None, help="task file or directory")
    export.add_argument(
        "--variants", type=int, default=0,
        help="also play N renamed copies of each train task (fresh resource names, same logic)",
    )  # fmt: skip
    export.add_argument(
        "--workers", type=int, default=None,
        help="sandbox processes playing tasks at once (same rows whatever the number; "
        "default: one per core, at most 4)",
    )  # fmt: skip
    export.set_defaults(func=_cmd_export_sft)


# Command groups that live above this package (``benchmarks``) register themselves under this
# entry-point group (pyproject.toml), so the command line has no import arrow pointing up.
COMMAND_GROUP = "rlfarm.commands"


def _add_registered_commands(sub: argparse._SubParsersAction) -> None:
    from importlib.metadata import entry_points

    found = sorted(entry_points(group=COMMAND_GROUP), key=lambda e: e.name)
    if not found:
        raise RuntimeError(
            f"no '{COMMAND_GROUP}' entry points: rlfarm is not installed (run `make setup`, or "
            "`pip install -e .` in the repo)"
        )
    for entry in found:
        entry.load()(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlfarm", description="Rollout farm for multi-turn LLM RL (GRPO + LoRA)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_farm_commands(sub)
    _add_eval_command(sub)
    _add_model_commands(sub)
    _add_env_commands(sub)
    _add_registered_commands(sub)
    return parser


# Errors a person causes (a wrong path, a missing farm, a bad adapter or config): one sentence
# on stderr, exit status 2, no traceback. Named by module so that none is imported to check.
PERSON_ERRORS = {
    "cluster.base.config": ("ConfigError",),
    "cluster.farm.control": ("NoFarmError",),
    "cluster.farm.wiring": ("RunDirectoryError",),
    "cluster.base.placement": ("PlacementError",),
    "cluster.view.run_data": ("NotARunError",),
    "env.catalog": ("CatalogError",),
    "env.sft_export": ("ExportError",),
    "learner.memory": ("LearnerMemoryError",),
    "rollout.python_backend": ("EnvFactoryError",),
    "serving.adapters": ("AdapterError",),
    "cluster.models.smollm2": ("ModelSourceError",),
}


def is_person_error(exc: BaseException) -> bool:
    if isinstance(exc, UsageError | FileNotFoundError):
        return True
    for module, names in PERSON_ERRORS.items():
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(exc, tuple(getattr(loaded, n) for n in names)):
            return True
    return False


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Exception as exc:
        if not is_person_error(exc):
            raise
        subcommand = next((v for k, v in vars(args).items() if k.endswith("_command")), None)
        command = " ".join(a for a in (args.command, subcommand) if a)
        print(f"rlfarm {command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
