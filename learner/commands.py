"""The learner's ``rlfarm`` subcommands: ``sft`` and ``bench learner``.

``cluster/cli.py`` calls ``register`` and ``register_bench``. Only argparse is imported here;
torch and trl load inside the command functions, so ``rlfarm --help`` stays instant. Model names
such as ``builtin:tiny`` are resolved by the caller's ``resolve_model`` (the cluster knows how the
built-in model is built); without one, ``--model`` must be a path or hub id.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

ModelResolver = Callable[[str], str]
DEFAULT_MODEL = "builtin:tiny"


def _resolver(args: argparse.Namespace) -> ModelResolver:
    resolve = getattr(args, "resolve_model", None)
    if resolve is not None:
        return resolve

    def literal(model: str) -> str:
        if model.startswith("builtin:"):
            raise ValueError(
                f"--model {model}: this entry point cannot build built-in models; pass a model "
                "directory (e.g. the path `rlfarm model build-tiny` prints)"
            )
        return model

    return literal


def register(subparsers: argparse._SubParsersAction, resolve_model: ModelResolver | None = None):
    """Add ``sft`` to the ``rlfarm`` subcommands."""
    sft = subparsers.add_parser(
        "sft",
        help="SFT warm start on chat messages JSONL (trl)",
        description="Fine-tune on {'messages': [...]} JSONL rendered with the model's own chat "
        "template, loss on assistant tokens only. full: writes a new base model dir (needed for "
        "the randomly initialised built-in model); lora: writes an adapter (or --merge a model).",
    )
    sft.add_argument("--data", type=Path, required=True, help="training messages JSONL")
    sft.add_argument("--out", type=Path, required=True, help="output directory (replaced)")
    sft.add_argument("--model", default=DEFAULT_MODEL, help="base model (default: %(default)s)")
    sft.add_argument(
        "--mode",
        choices=["auto", "full", "lora"],
        default="auto",
        help="auto: full for models under 200M parameters, else lora",
    )
    sft.add_argument("--epochs", type=float, default=3.0, help="passes over the data")
    sft.add_argument("--max-steps", type=int, default=-1, help="optimizer steps; overrides epochs")
    sft.add_argument("--lr", type=float, default=None, help="default 1e-3 full, 2e-4 lora")
    sft.add_argument("--batch-size", type=int, default=16)
    sft.add_argument("--max-length", type=int, default=1024, help="longest conversation, tokens")
    sft.add_argument("--lora-r", type=int, default=8)
    sft.add_argument("--lora-alpha", type=float, default=16.0)
    sft.add_argument(
        "--merge",
        action="store_true",
        help="lora: save a merged full model (what GRPO's model_path needs)",
    )
    sft.add_argument("--eval-data", type=Path, default=None, help="held-out JSONL: exact match")
    sft.add_argument("--seed", type=int, default=0)
    sft.add_argument("--json", action="store_true", help="print the result as one JSON object")
    sft.set_defaults(func=cmd_sft, resolve_model=resolve_model)


def register_bench(
    bench_subparsers: argparse._SubParsersAction, resolve_model: ModelResolver | None = None
):
    """Add ``learner`` to the ``rlfarm bench`` subcommands."""
    bench = bench_subparsers.add_parser(
        "learner", help="GRPO update and adapter publish throughput on synthetic groups"
    )
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument("--model", default=DEFAULT_MODEL, help="base model (default: %(default)s)")
    bench.add_argument("--updates", type=int, default=5, help="timed updates after a warm-up")
    bench.add_argument("--groups", type=int, default=4, help="groups per update")
    bench.add_argument("--group-size", type=int, default=8, help="episodes per group")
    bench.add_argument("--prompt-tokens", type=int, default=192, help="mask-0 tokens per episode")
    bench.add_argument("--completion-tokens", type=int, default=64, help="mask-1 tokens/episode")
    bench.add_argument("--micro-batch-tokens", type=int, default=8192)
    bench.add_argument("--device", default="auto")
    bench.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    bench.set_defaults(func=cmd_bench_learner, resolve_model=resolve_model)


def cmd_sft(args: argparse.Namespace) -> int:
    from learner.sft import SftOptions, run_sft

    result = run_sft(
        SftOptions(
            data=args.data,
            out=args.out,
            model=_resolver(args)(args.model),
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
        )
    )
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(f"sft ({result.mode}): {result.steps} steps, loss {result.train_loss:.4f}, "
              f"{result.seconds:.0f} s -> {result.out}")  # fmt: skip
        if result.exact_match_after is not None:
            print(f"held-out exact match: {result.exact_match_before:.3f} -> "
                  f"{result.exact_match_after:.3f}")  # fmt: skip
    return 0


def cmd_bench_learner(args: argparse.Namespace) -> int:
    from learner.bench import BenchOptions, run_bench

    result = run_bench(
        BenchOptions(
            model=_resolver(args)(args.model),
            updates=args.updates,
            groups=args.groups,
            group_size=args.group_size,
            prompt_tokens=args.prompt_tokens,
            completion_tokens=args.completion_tokens,
            micro_batch_tokens=args.micro_batch_tokens,
            device=args.device,
            dtype=args.dtype,
        )
    )
    if args.json:
        print(json.dumps(result))
    else:
        print(f"learner: {result['tokens_per_s']:.0f} trained tokens/s, update p50 "
              f"{result['update_s_p50']:.3f} s, publish p50 {result['publish_s_p50']:.3f} s "
              f"({result['device']})")  # fmt: skip
    return 0
