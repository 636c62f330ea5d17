"""``rlfarm bench hotswap``: adapter swap latency with a steady stream of requests in flight.

A learner-side peft model publishes N adapter versions (the learner's own ``build_version``:
files in memory, digest, probe) while C client loops keep the engine busy. For each version the
swap latency is the time from "published" to the first completion that reports the new version;
it includes shipping the files, the engine's copy and its probe verification. The engine's pid
and start time are read before and after to count restarts (there must be none). A p99 needs
at least ``MIN_SWAPS_FOR_P99`` swaps (with fewer it would be the maximum): below that it is None.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from cluster.farm.metrics import percentile
from serving.config import EngineConfig
from serving.types import SamplingSpec

MIN_SWAPS_FOR_P99 = 100


@dataclass
class _Stream:
    total: int = 0
    failed: int = 0
    first_seen: dict[int, float] = field(default_factory=dict)
    stop: bool = False


async def _client(pool, prompt: list[int], stream: _Stream, sampling: SamplingSpec) -> None:
    while not stream.stop:
        try:
            out = await pool.generate(prompt, sampling)
        except Exception:
            stream.failed += 1
            continue
        finally:
            stream.total += 1
        stream.first_seen.setdefault(out.adapter_version, time.perf_counter())


async def _run(pool, learner, versions: int, concurrency: int, gap_s: float) -> dict:
    model, tokenizer, _ = learner
    from learner.publish import build_version, probe_prompt_ids, probe_tokens

    prompt = probe_prompt_ids(tokenizer)
    probe_ids = probe_tokens(model, tokenizer, model.device)
    sampling = SamplingSpec(max_tokens=16, temperature=1.0)
    stream = _Stream()
    clients = [
        asyncio.ensure_future(_client(pool, prompt, stream, sampling)) for _ in range(concurrency)
    ]
    before = await pool.health()
    latencies, load_s = [], []
    await asyncio.sleep(gap_s)
    for version in range(1, versions + 1):
        _perturb(model)
        adapter = build_version(model, probe_ids, version, 0, model.device)
        published = time.perf_counter()
        await pool.load_adapter(adapter)
        load_s.append(time.perf_counter() - published)
        while adapter.version not in stream.first_seen:
            await asyncio.sleep(0.002)
        latencies.append(stream.first_seen[adapter.version] - published)
        await asyncio.sleep(gap_s)
    stream.stop = True
    await asyncio.gather(*clients)
    after = await pool.health()
    restarts = sum(a.incarnation != b.incarnation for a, b in zip(before, after, strict=True))
    return {
        "swap_latency_s_p50": statistics.median(latencies),
        "swap_latency_s_p99": (
            percentile(latencies, 0.99) if len(latencies) >= MIN_SWAPS_FOR_P99 else None
        ),
        "swap_latency_s_max": max(latencies),
        "load_and_verify_s_p50": statistics.median(load_s),
        "requests_total": stream.total,
        "requests_failed": stream.failed,
        "engine_restarts": restarts,
        "versions_loaded": len(latencies),
        "concurrency": concurrency,
        "swap_latencies_s": [round(x, 4) for x in latencies],
    }


def _perturb(model) -> None:
    """Stand-in for an optimizer step: move every LoRA B matrix a little."""
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.add_(torch.randn_like(param) * 0.02)


def _learner_model(model_path: str, workdir: Path, engine: EngineConfig):
    """The learner's side on the engine's device and dtype (CUDA and bf16 on a GPU config)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    dtype = getattr(torch, engine.resolved_dtype())
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    model = get_peft_model(base, config).to(engine.resolved_device())
    for param in model.parameters():  # LoRA weights are float32, as the learner keeps them
        if param.requires_grad:
            param.data = param.data.float()
    return model, AutoTokenizer.from_pretrained(model_path), workdir


def run_hotswap_bench(
    versions: int = 100,
    concurrency: int = 8,
    gap_s: float = 0.5,
    engine: EngineConfig | None = None,
) -> dict:
    from cluster.base.ray_runtime import init_ray
    from cluster.models.registry import resolve_model
    from serving.engine_pool import EnginePool

    engine = engine or EngineConfig()
    model_path = resolve_model(engine.model)
    engine = engine.with_model(model_path)
    init_ray()
    pool = EnginePool.start(engine, num_engines=1)
    try:
        with tempfile.TemporaryDirectory(prefix="rlfarm-hotswap-") as tmp:
            learner = _learner_model(model_path, Path(tmp), engine)
            result = asyncio.run(_run(pool, learner, versions, concurrency, gap_s))
    finally:
        pool.shutdown()
    result["model"] = model_path
    return result


def main(args) -> int:
    engine = None
    if args.config is not None:
        from cluster.base.config import ConfigError, load_config

        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 2
        engine = config.engine
    result = run_hotswap_bench(
        versions=args.versions, concurrency=args.concurrency, gap_s=args.gap, engine=engine
    )
    from benchmarks.records import record

    record("hotswap", result)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            if key != "swap_latencies_s":
                print(f"{key:>24}: {value}")
    return 0
