"""``rlfarm bench learner``: how fast the learner updates and publishes, on synthetic groups.

The groups are engine-shaped (prompt mask 0, completion mask 1, behaviour logprobs) with seeded
random token ids and rewards, so the numbers measure the learner alone: recomputing logprobs,
the GRPO loss, backward, AdamW, and writing an adapter version with its probe. The first update
is a warm-up and is not counted.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass

import torch

from learner.config import LearnerConfig
from learner.trainer import Learner
from learner.types import Sample, SampleGroup


@dataclass(frozen=True)
class BenchOptions:
    model: str
    updates: int = 5
    groups: int = 4
    group_size: int = 8
    prompt_tokens: int = 192
    completion_tokens: int = 64
    micro_batch_tokens: int = 8192
    device: str = "auto"
    dtype: str = "float32"
    autocast: str = "off"
    seed: int = 0


def synthetic_groups(
    options: BenchOptions, vocab_size: int, rng: random.Random
) -> list[SampleGroup]:
    groups = []
    for g in range(options.groups):
        samples = []
        for _ in range(options.group_size):
            n_prompt, n_completion = options.prompt_tokens, options.completion_tokens
            ids = [rng.randrange(vocab_size) for _ in range(n_prompt + n_completion)]
            mask = [0] * n_prompt + [1] * n_completion
            logprobs = [0.0] * n_prompt + [rng.uniform(-3.0, -0.1) for _ in range(n_completion)]
            samples.append(Sample(ids, mask, logprobs, reward=float(rng.random() < 0.5)))
        if len({s.reward for s in samples}) == 1:  # keep every group trainable
            samples[0] = Sample(*_fields(samples[0]), reward=1.0 - samples[0].reward)
        groups.append(SampleGroup(f"bench-{g}", "bench", samples))
    return groups


def _fields(sample: Sample) -> tuple[list[int], list[int], list[float]]:
    return sample.token_ids, sample.loss_mask, sample.behaviour_logprobs


def run_bench(options: BenchOptions) -> dict:
    """Run ``updates`` timed train+publish rounds after one warm-up; return the summary."""
    if options.updates < 1:
        raise ValueError(f"updates={options.updates}: run at least one timed update")
    config = LearnerConfig(
        model_path=options.model,
        device=options.device,
        dtype=options.dtype,
        micro_batch_tokens=options.micro_batch_tokens,
        keep_last=2,
        seed=options.seed,
        autocast=options.autocast,
    )
    learner = Learner(config)
    vocab = learner.model.get_input_embeddings().num_embeddings
    rng = random.Random(options.seed)
    update_s, publish_s, trained, processed = [], [], 0, 0
    with tempfile.TemporaryDirectory(prefix="rlfarm-bench-") as out:
        for i in range(options.updates + 1):
            groups = synthetic_groups(options, vocab, rng)
            metrics, adapter = learner.train_and_publish(groups, out)
            if i == 0 or adapter is None:
                continue  # warm-up: allocator, kernels and file-system caches
            update_s.append(metrics.update_s)
            publish_s.append(metrics.publish_s or 0.0)
            trained += metrics.trained_tokens
            processed += sum(len(s.token_ids) for g in groups for s in g.samples)
    total_update_s = sum(update_s)
    params = sum(p.numel() for p in learner.model.parameters())
    # Frozen weights: about 2N FLOPs per processed token forward and 2N backward (input
    # gradients only); how much of the device's matmul peak the update turns into work.
    model_tflops = 4 * params * processed / total_update_s / 1e12
    return {
        "tokens_per_s": trained / total_update_s,
        "processed_tokens_per_s": processed / total_update_s,
        "autocast": str(learner.autocast).removeprefix("torch.") if learner.autocast else "off",
        "autocast_gap": learner.autocast_gap,
        "model_tflops": model_tflops,
        "update_s_p50": statistics.median(update_s),
        "update_s_max": max(update_s),
        "publish_s_p50": statistics.median(publish_s),
        "publish_s_max": max(publish_s),
        "updates": len(update_s),
        "samples_per_update": options.groups * options.group_size,
        "trained_tokens_per_update": trained // len(update_s),
        "device": str(learner.device),
        "torch_threads": torch.get_num_threads(),
        "timestamp": time.time(),
        "options": asdict(options),
    }


def matmul_peak(device: str, dtype: torch.dtype, size: int = 2048, seconds: float = 2.0) -> float:
    """TFLOP/s of square ``size`` matmuls in ``dtype`` on ``device``: the box's measured peak."""
    from learner.trainer import resolve_device

    dev = resolve_device(device)
    a = torch.randn(size, size, device=dev).to(dtype)
    b = torch.randn(size, size, device=dev).to(dtype)
    torch.mm(a, b)  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        done += 1
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return 2 * size**3 * done / (time.perf_counter() - start) / 1e12


def main(args: argparse.Namespace) -> int:
    """``rlfarm bench learner``: one run, or with ``--compare-autocast`` float32 and bf16
    autocast side by side (alternating, ``--rounds`` each) with their ratio."""
    from cluster.models.registry import resolve_model

    options = BenchOptions(
        model=resolve_model(args.model),
        updates=args.updates,
        groups=args.groups,
        group_size=args.group_size,
        prompt_tokens=args.prompt_tokens,
        completion_tokens=args.completion_tokens,
        micro_batch_tokens=args.micro_batch_tokens,
        device=args.device,
        dtype=args.dtype,
        autocast=args.autocast,
    )
    compare = args.compare_autocast
    result = compare_autocast(options, args.rounds) if compare else run_bench(options)
    result["matmul_peak_tflops"] = {
        "float32": matmul_peak(options.device, torch.float32),
        "bfloat16": matmul_peak(options.device, torch.bfloat16),
    }
    from benchmarks.records import record

    record("learner", result)
    if args.json:
        print(json.dumps(result))
    elif args.compare_autocast:
        print(f"learner: bf16 autocast {result['ratio']:.2f}x float32 in trained tokens/s "
              f"({result['autocast']['tokens_per_s']:.0f} vs "
              f"{result['float32']['tokens_per_s']:.0f}; {args.rounds} rounds each)")  # fmt: skip
    else:
        print(f"learner: {result['tokens_per_s']:.0f} trained tokens/s, update p50 "
              f"{result['update_s_p50']:.3f} s, publish p50 {result['publish_s_p50']:.3f} s "
              f"({result['device']})")  # fmt: skip
    return 0


def compare_autocast(options: BenchOptions, rounds: int) -> dict:
    """float32 and ``autocast: bfloat16`` runs in turn, ``rounds`` each; per mode the pooled
    tokens/s, and the ratio with the spread of the per-round ratios."""
    from dataclasses import replace

    runs: dict[str, list[dict]] = {"float32": [], "autocast": []}
    for _ in range(rounds):
        runs["float32"].append(run_bench(replace(options, autocast="off")))
        runs["autocast"].append(run_bench(replace(options, autocast="bfloat16")))

    def pooled(results: list[dict]) -> dict:
        return {
            "tokens_per_s": statistics.fmean(r["tokens_per_s"] for r in results),
            "model_tflops": statistics.fmean(r["model_tflops"] for r in results),
            "update_s_p50": statistics.median(r["update_s_p50"] for r in results),
            "rounds": [r["tokens_per_s"] for r in results],
        }

    ratios = [a["tokens_per_s"] / f["tokens_per_s"]
              for f, a in zip(runs["float32"], runs["autocast"], strict=True)]  # fmt: skip
    return {
        "float32": pooled(runs["float32"]),
        "autocast": pooled(runs["autocast"]),
        "ratio": statistics.fmean(ratios),
        "ratio_range": [min(ratios), max(ratios)],
        "device": runs["float32"][0]["device"],
        "options": asdict(options),
        "timestamp": time.time(),
    }
