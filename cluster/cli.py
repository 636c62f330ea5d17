"""The ``rlfarm`` command line. Parses arguments first and imports torch/vLLM/Ray only inside
the chosen command, so ``rlfarm --help`` is instant."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_build_tiny(args: argparse.Namespace) -> int:
    from cluster.models import build_default_model

    print(build_default_model(home=args.home))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from cluster.models import resolve_model
    from serving.openai_server import exec_server, serve_command

    model = resolve_model(args.model) if args.model else None
    argv = serve_command(
        Path(args.adapter), model=model, name=args.name, host=args.host, port=args.port
    )
    print("exec:", " ".join(argv), flush=True)
    exec_server(argv)
    return 0


def _cmd_bench_hotswap(args: argparse.Namespace) -> int:
    from cluster.bench_hotswap import main

    return main(args)


def _cmd_train(args: argparse.Namespace) -> int:
    from cluster.main import train

    return train(args)


def _cmd_scale(args: argparse.Namespace) -> int:
    import json

    from cluster.control import scale

    try:
        status = scale(args.run, args.env_workers, address=args.address)
    except (RuntimeError, ValueError) as exc:
        print(f"rlfarm scale: {exc}", file=sys.stderr)
        return 2
    if args.env_workers is not None:
        print(f"run {args.run}: env workers -> {args.env_workers}")
    print(json.dumps(status, indent=1))
    return 0


def _resolve(model: str) -> str:
    from cluster.models import resolve_model

    return resolve_model(model)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlfarm", description="Rollout farm for multi-turn LLM RL (GRPO + LoRA)."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    model = sub.add_parser("model", help="the built-in tiny model").add_subparsers(
        dest="model_command", required=True
    )
    tiny = model.add_parser("build-tiny", help="build (or find cached) the built-in tiny model")
    tiny.add_argument("--home", type=Path, default=None, help="cache dir (default $RLFARM_HOME)")
    tiny.set_defaults(func=_cmd_build_tiny)

    serve = sub.add_parser("serve", help="OpenAI-compatible endpoint for a trained adapter (vLLM)")
    serve.add_argument("--adapter", required=True, help="adapter dir (peft save_pretrained layout)")
    serve.add_argument("--model", default=None, help="base model (default: the adapter's own)")
    serve.add_argument("--name", default="rlfarm", help="model name clients ask for")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(func=_cmd_serve)

    from cluster.bench_rollout import register_bench as register_rollout_bench
    from cluster.evaluation import register as register_eval
    from cluster.main import add_train_arguments
    from env.catalog import register_tasks
    from env.commands import register_bench as register_env_bench
    from env.commands import register_env_group, register_serve
    from env.sft_export import register_export
    from learner.commands import register as register_learner
    from learner.commands import register_bench as register_learner_bench

    train = sub.add_parser("train", help="run the farm (GRPO with async rollouts) from a config")
    add_train_arguments(train)
    train.set_defaults(func=_cmd_train)

    scale = sub.add_parser("scale", help="change the env worker count of a running farm")
    scale.add_argument("--env-workers", type=int, default=None, help="new env worker count")
    scale.add_argument("--run", default="local", help="the run's run.name (default: local)")
    scale.add_argument("--address", default="auto", help="Ray cluster address")
    scale.set_defaults(func=_cmd_scale)

    register_tasks(sub)
    register_eval(sub)
    env_group = register_env_group(sub)
    register_serve(env_group)
    register_export(env_group)
    register_learner(sub, resolve_model=_resolve)

    bench = sub.add_parser("bench", help="throughput benchmarks").add_subparsers(
        dest="bench_command", required=True
    )
    register_learner_bench(bench, resolve_model=_resolve)
    register_env_bench(bench)
    register_rollout_bench(bench)
    hotswap = bench.add_parser("hotswap", help="adapter swap latency under load")
    hotswap.add_argument("--json", action="store_true", help="print one JSON object")
    hotswap.add_argument("--versions", type=int, default=10, help="adapter versions to publish")
    hotswap.add_argument("--concurrency", type=int, default=8, help="client loops in flight")
    hotswap.add_argument("--gap", type=float, default=1.0, help="seconds between versions")
    hotswap.set_defaults(func=_cmd_bench_hotswap)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
