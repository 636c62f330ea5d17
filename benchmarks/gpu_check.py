"""The learner's GPU check: what can only be measured on a GPU, prepared to run in minutes.

    python benchmarks/gpu_check.py                 # first GPU: Qwen2.5 3B and 7B shapes
    python benchmarks/gpu_check.py --device cpu    # the same code on a CPU (SmolLM2's shape)

Needs torch, transformers and peft only (no vLLM, no Ray, no downloads: every model is made on
the device with random weights, in the shape of a published one). Prints one JSON object; each
check carries its numbers, its pass criterion and ``passed``; the exit status is 0 only when no
check failed and every shape's memory was measured (a plan whose estimate exceeds the GPU's
free memory is reported as not run, ``passed`` None: the 7B shape at 8192 tokens without
checkpointing needs an H200).

1. ``memory``: one learner update's peak memory (``learner.memory_probe``) against the
   estimate the learner's fit check trusts (``learner.memory``), for the shipped GPU configs'
   learner settings. Passes when the estimate covers the measured peak and is within 1.5x of it.
2. ``bf16_logprobs``: the learner's logprobs at trained tokens (its own forward,
   ``learner.forward``) in bf16 against float32 for the same weights and adapter. Passes when
   the mean gap is inside the bf16 swap probe's tolerance (``serving.probes``): what the
   engine's numbers are judged against must be that close to exact.
3. ``update_speed``: trained tokens/s of full learner updates (forward, GRPO loss, backward,
   AdamW) after a warm-up, with the achieved TFLOP/s. Passes above a floor per device.
4. ``state_round_trip``: export the training state after an update, import it into a fresh
   learner of the same shape, step both: adapters, optimizer state and the next step's weights
   must be identical.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: the repo root holds learner/ and serving/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from learner.config import LearnerConfig
from learner.memory import GIB, ModelShape
from learner.memory_probe import (
    adapted_random_model,
    measure_update,
    random_batch,
    random_model,
    update_once,
)
from serving.probes import tolerances

# Published shapes (each model's config.json).
SHAPES = {
    "3b": ModelShape(params=3_085_938_688, layers=36, hidden=2048, intermediate=11008,
                     vocab=151936, heads=16, kv_heads=2, tied_embeddings=True),
    "7b": ModelShape(params=7_615_616_512, layers=28, hidden=3584, intermediate=18944,
                     vocab=152064, heads=28, kv_heads=4, tied_embeddings=False),
    # SmolLM2-135M: the CPU runs it in seconds (the same code path, for the suite). Far smaller
    # shapes measure the C heap's own overheads more than the update.
    "135m": ModelShape(params=134_515_008, layers=30, hidden=576, intermediate=1536,
                       vocab=49152, heads=9, kv_heads=3, tied_embeddings=True),
}  # fmt: skip

ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
# Trained tokens/s an update must reach: an H100 does several thousand on the 3B shape.
SPEED_FLOOR = {"cuda": 1000.0, "cpu": 20.0}


EVERY_LINEAR = [*ATTENTION, "gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class Plan:
    """A learner setting to check memory under. On a GPU they mirror configs/h100-8x.yaml and
    configs/gpu-1x.yaml, plus every linear layer adapted without dropout."""

    label: str
    tokens: int
    checkpointing: bool
    chunk: int
    modules: tuple[str, ...] = tuple(ATTENTION)
    dropout: float = 0.05


GPU_PLANS = [
    Plan("h100-8x learner", 8192, False, 1024),
    Plan("gpu-1x learner", 4096, True, 512),
    Plan("every linear, no dropout, checkpointed", 4096, True, 1024, tuple(EVERY_LINEAR), 0.0),
]
CPU_PLANS = [
    Plan("no checkpointing", 512, False, 0),
    Plan("checkpointed", 512, True, 0),
    Plan("every linear, no dropout", 512, False, 0, tuple(EVERY_LINEAR), 0.0),
]


def learner_config(plan: Plan, dtype: str) -> LearnerConfig:
    return LearnerConfig(
        model_path="random", micro_batch_tokens=plan.tokens, dtype=dtype,
        gradient_checkpointing=plan.checkpointing, logit_chunk_tokens=plan.chunk,
        target_modules=list(plan.modules), lora_r=8, lora_alpha=16, lora_dropout=plan.dropout,
    )  # fmt: skip


def _free(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def check_memory(shape_name: str, device: torch.device, dtype: str) -> list[dict[str, Any]]:
    """One entry per plan; a plan whose estimate exceeds what the GPU has free is not run and
    says so (``passed`` None: neither a pass nor a failure)."""
    from learner.memory import estimate

    plans = GPU_PLANS if device.type == "cuda" else CPU_PLANS
    out = []
    for plan in plans:
        config = learner_config(plan, dtype)
        entry: dict[str, Any] = {"check": "memory", "shape": shape_name, "plan": plan.label}
        if device.type == "cuda":
            need = estimate(SHAPES[shape_name], config).total
            free = torch.cuda.mem_get_info(device)[0]
            if need > 0.9 * free:
                out.append(entry | {
                    "estimate_gib": round(need / GIB, 3), "free_gib": round(free / GIB, 3),
                    "skipped": "the estimate exceeds 90% of the GPU's free memory",
                    "passed": None,
                })  # fmt: skip
                continue
        reading = measure_update(SHAPES[shape_name], config, str(device))
        _free(device)
        out.append(entry | {
            "measured_gib": round(reading.measured / GIB, 3),
            "estimate_gib": round(reading.estimate.total / GIB, 3),
            "estimate": reading.estimate.describe(), "ratio": round(reading.ratio, 3),
            "criterion": "1.0 <= estimate / measured < 1.5",
            "passed": 1.0 <= reading.ratio < 1.5,
        })  # fmt: skip
    return out


def check_bf16_logprobs(shape_name: str, device: torch.device) -> dict[str, Any]:
    from peft import LoraConfig, get_peft_model

    from learner.forward import trained_token_logprobs

    shape = SHAPES[shape_name]
    torch.manual_seed(1)
    base = random_model(shape, torch.float32, device)
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=ATTENTION, init_lora_weights=False)
    model = get_peft_model(base, lora).eval()
    ids, mask = random_batch(shape.vocab, 1024, device, seed=2, prompt=256)
    with torch.no_grad():
        exact = trained_token_logprobs(model.get_base_model(), ids, mask, mask)
        model.to(torch.bfloat16)
        half = trained_token_logprobs(model.get_base_model(), ids, mask, mask)
    del model, base
    _free(device)
    trained = mask.bool()
    trained[:, 0] = False
    gaps = (exact - half.float()).abs()[trained]
    mean_atol, max_atol = tolerances("bfloat16")
    mean, worst = float(gaps.mean()), float(gaps.max())
    return {
        "check": "bf16_logprobs", "shape": shape_name, "tokens": int(trained.sum()),
        "mean_abs_gap": round(mean, 5), "max_abs_gap": round(worst, 5),
        "criterion": f"mean <= {mean_atol} and max <= {max_atol} (the bf16 swap probe's)",
        "passed": mean <= mean_atol and worst <= max_atol,
    }  # fmt: skip


def check_update_speed(shape_name: str, device: torch.device, dtype: str) -> dict[str, Any]:
    shape = SHAPES[shape_name]
    plan = GPU_PLANS[1] if device.type == "cuda" else CPU_PLANS[0]
    config = learner_config(plan, dtype)
    model = adapted_random_model(shape, config, device, lora_seed=3)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    ids, mask = random_batch(shape.vocab, plan.tokens, device, seed=4, prompt=plan.tokens // 4)
    update_once(model, optimizer, ids, mask, config)  # warm-up: kernels, allocator, Adam state
    steps = 3
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        update_once(model, optimizer, ids, mask, config)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = (time.perf_counter() - start) / steps
    params = sum(p.numel() for p in model.parameters())
    del model, optimizer
    _free(device)
    # Frozen weights: forward 2N and backward 2N (input gradients only) FLOPs per token, plus
    # the forward recomputed under checkpointing.
    flops = (6 if plan.checkpointing else 4) * params * plan.tokens
    tokens_per_s = plan.tokens / seconds
    floor = SPEED_FLOOR[device.type]
    return {
        "check": "update_speed", "shape": shape_name, "plan": plan.label, "dtype": dtype,
        "tokens_per_update": plan.tokens, "update_s": round(seconds, 3),
        "tokens_per_s": round(tokens_per_s, 1), "tflops": round(flops / seconds / 1e12, 2),
        "criterion": f"tokens_per_s >= {floor}", "passed": tokens_per_s >= floor,
    }  # fmt: skip


def check_state_round_trip(shape_name: str, device: torch.device, dtype: str) -> dict[str, Any]:
    from learner.checkpoint import TrainingState, export_state, import_state

    shape = SHAPES[shape_name]
    config = learner_config(CPU_PLANS[0] if device.type == "cpu" else GPU_PLANS[1], dtype)
    config = config.model_copy(update={"micro_batch_tokens": 512, "lora_dropout": 0.0})
    ids, mask = random_batch(shape.vocab, 512, device, seed=5, prompt=128)

    def learner(seed: int) -> TrainingState:
        model = adapted_random_model(shape, config, device, seed)
        trained = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trained, lr=1e-4)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
        return TrainingState(model, optimizer, scheduler, config, device)

    first = learner(seed=6)
    update_once(first.model, first.optimizer, ids, mask, config)
    first.step = 1
    blobs = export_state(first, {"check": "round trip"})
    blobs = pickle.loads(pickle.dumps(blobs))  # as Ray carries it to a restarted learner
    second = learner(seed=7)  # other LoRA init: everything must come from the state
    extra = import_state(second, blobs)

    def lora(state: TrainingState) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in state.model.named_parameters() if "lora_" in n}

    same_before = _same(lora(first), lora(second))
    same_moments = all(
        torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
        for a, b in zip(
            first.optimizer.state.values(), second.optimizer.state.values(), strict=True
        )
    )
    for state in (first, second):
        update_once(state.model, state.optimizer, ids, mask, config)
    same_after = _same(lora(first), lora(second))
    del first, second
    _free(device)
    return {
        "check": "state_round_trip", "shape": shape_name,
        "state_bytes": sum(map(len, blobs.values())), "adapter_equal": same_before,
        "adam_moments_equal": same_moments, "next_step_equal": same_after,
        "extra_equal": extra == {"check": "round trip"},
        "criterion": "adapter, AdamW moments, the caller's extra and the next step identical",
        "passed": same_before and same_moments and same_after and extra == {"check": "round trip"},
    }  # fmt: skip


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def run(device_name: str, shapes: list[str], dtype: str) -> dict[str, Any]:
    device = torch.device(device_name)
    started = time.perf_counter()
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    checks: list[dict[str, Any]] = []
    for shape in shapes:
        checks += check_memory(shape, device, dtype)
    first = shapes[0]
    checks.append(check_bf16_logprobs(first, device))
    checks.append(check_update_speed(first, device, dtype))
    checks.append(check_state_round_trip(first, device, dtype))
    # Every check judged that ran, none failed, and every shape's memory measured at least once.
    measured = {c["shape"] for c in checks if c["check"] == "memory" and c["passed"] is not None}
    passed = all(c["passed"] is not False for c in checks) and measured == set(shapes)
    return {
        "device": machine, "torch": torch.__version__, "dtype": dtype, "shapes": shapes,
        "checks": checks, "passed": passed,
        "wall_s": round(time.perf_counter() - started, 1),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shapes", default=None, help="comma-separated: 3b, 7b, 135m")
    parser.add_argument("--dtype", default=None, help="learner weights (bfloat16 on a GPU)")
    args = parser.parse_args(argv)
    on_gpu = args.device.startswith("cuda")
    shapes = (args.shapes or ("3b,7b" if on_gpu else "135m")).split(",")
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        parser.error(f"--shapes {unknown}: choose from {', '.join(SHAPES)}")
    dtype = args.dtype or ("bfloat16" if on_gpu else "float32")
    result = run(args.device, shapes, dtype)
    print(json.dumps(result, indent=1))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
