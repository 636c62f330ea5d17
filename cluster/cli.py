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

    bench = sub.add_parser("bench", help="throughput benchmarks").add_subparsers(
        dest="bench_command", required=True
    )
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
