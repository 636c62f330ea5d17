"""``rlfarm bench ...``: the benchmarks' command lines, registered on the ``rlfarm`` parser.

``cluster.commands.cli`` finds this module through the ``rlfarm.commands`` entry point
(``pyproject.toml``), so the command line never imports upward into ``benchmarks``. Parsing
imports nothing heavy: each bench's module is imported only when that bench runs.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from pathlib import Path

from cluster.commands.train import add_overrides


def _runs(module: str) -> Callable[[argparse.Namespace], int]:
    """The handler of one bench: ``benchmarks.<module>.main(args)``, imported when it runs."""

    def handler(args: argparse.Namespace) -> int:
        return importlib.import_module(f"benchmarks.{module}").main(args)

    return handler


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give integers separated by commas") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more integers >= 1")
    return values


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``rlfarm bench ...`` on the ``rlfarm`` parser's subcommands."""
    bench = sub.add_parser("bench", help="throughput benchmarks").add_subparsers(
        dest="bench_command", required=True
    )
    _add_rollout_bench(bench)
    _add_learning_bench(bench)
    _add_autoscale_bench(bench)
    _add_peer_bench(bench)
    _add_chaos_bench(bench)
    _add_component_benches(bench)


def _add_rollout_bench(bench: argparse._SubParsersAction) -> None:
    rollout = bench.add_parser(
        "rollout", help="sequential baseline vs farm sync vs farm async, with sweeps"
    )
    rollout.add_argument("--json", action="store_true", help="print only one JSON object")
    rollout.add_argument("--updates", type=int, default=None,
                         help="measured updates per farm mode and round")  # fmt: skip
    rollout.add_argument(
        "--rounds", type=int, default=None,
        help="sync/async rounds, alternating which mode goes first (ABBA), summed per mode",
    )  # fmt: skip
    rollout.add_argument("--rollout-groups", type=int, default=None,
                         help="groups measured in the rollout-only stage (default: two "
                              "waves of workers x groups per worker)")  # fmt: skip
    rollout.add_argument("--quick", action="store_true", help="tiny sizes (tests): 2 updates, G=4")
    rollout.add_argument("--no-sweep", action="store_true", help="skip the worker and G sweeps")
    rollout.add_argument("--no-routing", action="store_true",
                         help="skip sticky vs least-loaded routing on a 2-engine farm")  # fmt: skip
    rollout.add_argument("--modes-only", action="store_true",
                         help="only the farm's sync and async learning stages (ABBA rounds): "
                              "the async/sync ratio")  # fmt: skip
    rollout.add_argument("--routing-only", action="store_true",
                         help="only sticky-by-group vs least-loaded routing on a 2-engine farm: "
                              "vLLM's prefix-cache hit rates and the speed ratio")  # fmt: skip
    rollout.add_argument("--out", type=Path, default=Path("runs/bench-rollout"), help="output dir")
    rollout.add_argument("--config", type=Path, default=None,
                         help="base farm config (default: configs/local.yaml)")  # fmt: skip
    add_overrides(rollout, "override one config field after the bench's own settings")
    rollout.add_argument("--baseline-groups", type=int, default=None,
                         help="groups the baseline plays")  # fmt: skip
    rollout.add_argument("--sweep-workers", type=_int_list, default=None, help="e.g. 1,2,4,8")
    rollout.add_argument("--sweep-group-sizes", type=_int_list, default=None, help="e.g. 4,8,16")
    rollout.add_argument("--sweep-updates", type=int, default=None, help="updates per sweep point")
    rollout.set_defaults(func=_runs("rollout"))


def _add_learning_bench(bench: argparse._SubParsersAction) -> None:
    learning = bench.add_parser(
        "learning", help="SFT, then GRPO for several seeds; base/sft/grpo on held-out views"
    )
    learning.add_argument("--json", action="store_true", help="print only one JSON object")
    learning.add_argument("--config", type=Path, default=None,
                          help="farm config (default: configs/smollm2-cpu.yaml)")  # fmt: skip
    add_overrides(learning, "override one config field (e.g. train.updates=20)")
    learning.add_argument("--seeds", default="0,1", help="learner seeds, one GRPO run each")
    learning.add_argument("--no-base", action="store_true",
                          help="skip evaluating the model before its warm start")  # fmt: skip
    learning.add_argument("--out", type=Path, default=Path("runs/bench-learning"),
                          help="output dir")  # fmt: skip
    learning.set_defaults(func=_runs("learning"))


def _add_autoscale_bench(bench: argparse._SubParsersAction) -> None:
    auto = bench.add_parser(
        "autoscale", help="env.workers: auto against a fixed-count sweep, and a slower env"
    )
    auto.add_argument("--json", action="store_true", help="print only one JSON object")
    auto.add_argument("--config", type=Path, default=None,
                      help="farm config (default: configs/local.yaml)")  # fmt: skip
    add_overrides(auto, "override one config field (e.g. env.max_workers=6)")
    auto.add_argument("--updates", type=int, default=8,
                      help="measured updates per count of the sweep (half up the ladder, half "
                      "down); half as many per stage of a side-by-side")  # fmt: skip
    auto.add_argument("--settle", type=int, default=1, help="unmeasured updates per fixed count")
    auto.add_argument("--auto-updates", type=int, default=80,
                      help="updates per auto stage (the slow-env stage runs 1.5x)")  # fmt: skip
    auto.add_argument("--tail", type=int, default=20,
                      help="last updates of an auto stage judged as settled")  # fmt: skip
    auto.add_argument("--latency", type=float, default=0.5,
                      help="env step latency added mid slow-env stage (s)")  # fmt: skip
    auto.add_argument("--out", type=Path, default=Path("runs/bench-autoscale"), help="output dir")
    auto.set_defaults(func=_runs("autoscale"))


def _add_peer_bench(bench: argparse._SubParsersAction) -> None:
    peer = bench.add_parser(
        "peer", help="TRL's GRPOTrainer vs the farm (sync, async) on the same model and tasks"
    )
    peer.add_argument("--json", action="store_true", help="print only one JSON object")
    peer.add_argument("--config", type=Path, default=None,
                      help="farm config (default: configs/local.yaml)")  # fmt: skip
    add_overrides(peer, "override one config field (e.g. run.warm_start=false)")
    peer.add_argument("--trl-steps", type=int, default=2, help="timed TRL optimizer steps")
    peer.add_argument("--updates", type=int, default=4, help="timed farm updates per mode")
    peer.add_argument("--settle", type=int, default=1,
                      help="untimed first steps/updates of each side")  # fmt: skip
    peer.add_argument("--trl-format", choices=("farm", "tool-call"), default="farm",
                      help="TRL in the farm's text format (equal work, the default) or in "
                      "Qwen2.5's JSON tool calls")  # fmt: skip
    peer.add_argument("--quick", action="store_true", help="tiny sizes (tests): G=4, 3 turns")
    peer.add_argument("--out", type=Path, default=Path("runs/bench-peer"), help="output dir")
    peer.set_defaults(func=_runs("peer"))


def _add_chaos_bench(bench: argparse._SubParsersAction) -> None:
    chaos = bench.add_parser(
        "chaos", help="a farm run with workers, sandboxes, engine, learner and driver killed"
    )
    chaos.add_argument("--json", action="store_true", help="print one JSON object")
    chaos.add_argument("--out", type=Path, default=Path("runs/bench-chaos"), help="output dir")
    chaos.set_defaults(func=_runs("chaos"))

    soak = bench.add_parser(
        "soak", help="the farm for N minutes with faults repeating: memory, fds, the audit"
    )
    soak.add_argument("--minutes", type=float, default=60.0, help="how long (default 60)")
    soak.add_argument("--fault-every", type=int, default=5, help="updates between faults")
    soak.add_argument("--sample-s", type=float, default=30.0, help="seconds between samples")
    soak.add_argument("--warmup-minutes", type=float, default=10.0,
                      help="growth is measured from here on (default 10)")  # fmt: skip
    soak.add_argument("--json", action="store_true", help="print one JSON object")
    soak.add_argument("--out", type=Path, default=Path("runs/bench-soak"), help="output dir")
    soak.set_defaults(func=_runs("soak"))


def _add_component_benches(bench: argparse._SubParsersAction) -> None:
    hotswap = bench.add_parser("hotswap", help="adapter swap latency under load")
    hotswap.add_argument("--json", action="store_true", help="print one JSON object")
    hotswap.add_argument("--versions", type=int, default=100,
                         help="adapter versions to publish (a p99 needs >= 100)")  # fmt: skip
    hotswap.add_argument("--concurrency", type=int, default=8, help="client loops in flight")
    hotswap.add_argument("--gap", type=float, default=0.5, help="seconds between versions")
    hotswap.add_argument(
        "--config", type=Path, default=None, help="farm config whose engine settings to use"
    )
    hotswap.set_defaults(func=_runs("hotswap"))

    learner = bench.add_parser(
        "learner", help="GRPO update and adapter publish throughput on synthetic groups"
    )
    learner.add_argument("--json", action="store_true", help="print one JSON object")
    learner.add_argument("--model", default="builtin:tiny", help="base model (%(default)s)")
    learner.add_argument("--updates", type=int, default=5, help="timed updates after a warm-up")
    learner.add_argument("--groups", type=int, default=4, help="groups per update")
    learner.add_argument("--group-size", type=int, default=8, help="episodes per group")
    learner.add_argument("--prompt-tokens", type=int, default=192, help="mask-0 tokens/episode")
    learner.add_argument("--completion-tokens", type=int, default=64, help="mask-1 tokens/episode")
    learner.add_argument("--micro-batch-tokens", type=int, default=8192)
    learner.add_argument("--device", default="auto")
    learner.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    learner.add_argument(
        "--autocast",
        choices=["off", "auto", "bfloat16"],
        default="off",
        help="learner.autocast for a single run (%(default)s)",
    )
    learner.add_argument(
        "--compare-autocast",
        action="store_true",
        help="float32 and bf16 autocast side by side, with their ratio",
    )
    learner.add_argument(
        "--rounds", type=int, default=2, help="alternating runs per mode with --compare-autocast"
    )
    learner.set_defaults(func=_runs("learner_update"))

    env = bench.add_parser(
        "env", help="env step latency vs a subprocess `aws` baseline, and sandbox scaling"
    )
    env.add_argument("--json", action="store_true", help="print one JSON object")
    env.add_argument("--steps", type=int, default=300, help="steps timed for latency")
    env.add_argument("--subprocess-runs", type=int, default=3, help="runs of the mix via `aws`")
    env.add_argument("--duration", type=float, default=5.0, help="seconds per throughput round")
    env.add_argument("--rounds", type=int, default=3, help="alternating throughput rounds")
    env.add_argument("--envs-per-process", type=int, default=4,
                     help="concurrent episodes per sandbox process")  # fmt: skip
    env.add_argument("--memory-episodes", type=int, default=100,
                     help="open episodes for the memory probe")  # fmt: skip
    env.set_defaults(func=_runs("env_step"))
