"""The env's ``rlfarm`` sub-commands: ``env serve`` and ``bench env``.

Wiring for ``cluster/cli.py``:

    env_group = register_env_group(sub)   # the `env` group's subparsers (created once)
    register_serve(env_group)             # rlfarm env serve --port P ...
    register_bench(bench_subparsers)      # rlfarm bench env --json

``register(sub)`` does the first two. Imports stay light here: the server and the
benchmark modules (FastAPI, moto, awscli) load only when their command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register_env_group(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The subparsers of the ``env`` command group, created on first call, reused after."""
    parser = subparsers.choices.get("env")
    if parser is None:
        parser = subparsers.add_parser("env", help="the AWS agent environment")
        return parser.add_subparsers(dest="env_command", required=True)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest="env_command", required=True)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``serve`` flags (defaults match ``env.server.ServerSettings``)."""
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=2, help="sandbox worker processes")
    parser.add_argument("--max-sessions", type=int, default=256, help="session cap")
    parser.add_argument(
        "--idle-timeout", type=float, default=600.0, help="close sessions idle this long (s)"
    )
    parser.add_argument("--catalog", type=Path, default=None, help="task file or directory")
    parser.add_argument("--max-steps", type=int, default=15, help="steps per episode")
    parser.add_argument("--chaos", action="store_true", help="enable chaos injection")
    parser.add_argument("--no-prewarm", action="store_true", help="skip worker warm-up")


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``bench env`` flags."""
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--steps", type=int, default=300, help="steps timed for latency")
    parser.add_argument(
        "--subprocess-runs", type=int, default=3, help="runs of the mix through `aws`"
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per throughput round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating throughput rounds")
    parser.add_argument("--envs-per-worker", type=int, default=4, help="concurrent episodes")
    parser.add_argument(
        "--memory-episodes", type=int, default=100, help="open episodes for the memory probe"
    )


def register_serve(env_subparsers: argparse._SubParsersAction) -> None:
    """Add ``serve`` to the ``env`` group."""
    serve = env_subparsers.add_parser(
        "serve", help="run the OpenEnv-compatible env server (FastAPI, many sessions)"
    )
    add_serve_arguments(serve)
    serve.set_defaults(func=_cmd_serve)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``env`` group (if missing) with ``env serve``."""
    register_serve(register_env_group(subparsers))


def register_bench(bench_subparsers: argparse._SubParsersAction) -> None:
    """Add ``env`` to the ``bench`` group: step latency, subprocess baseline, scaling."""
    bench = bench_subparsers.add_parser(
        "env", help="env step latency vs a subprocess `aws` baseline, and worker scaling"
    )
    add_bench_arguments(bench)
    bench.set_defaults(func=_cmd_bench)


def _cmd_serve(args: argparse.Namespace) -> int:
    from env.server import serve, settings_from_args

    serve(settings_from_args(args))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from env.bench import bench_from_args

    return bench_from_args(args)
