"""bf16 autocast for the learner's decoder layers, chosen where the learner runs.

Many x86 CPUs here have bf16 matrix instructions (AVX-512 BF16, AMX) that run a bf16 matmul
several times faster than float32; GPUs always do. ``learner.autocast: auto`` uses them when the
device has them: the decoder's matmuls run in bf16 under ``torch.autocast`` while the weights,
the LoRA and its optimizer state stay float32, and the LM head and log-softmax stay float32
(``grpo.masked_token_logprobs`` leaves autocast for them), so the logprobs the loss and the
importance weights read lose only what bf16 hidden states lose. The choice is checked at
start-up: the learner's logprobs of a fixed sequence with and without autocast must agree within
``MAX_MEAN_GAP``, or the learner says so and stays in float32. The swap probe is computed
without autocast, so it stays exact against a float32 engine.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

# Mean |bf16 - float32| logprob gap ``auto`` accepts: importance weights then move by ~5%, the
# order of the bf16 learner/engine mismatch every GPU trainer lives with and truncated importance
# sampling absorbs (SmolLM2-135M on AMX here: 0.038, for 1.77x the trained tokens/s).
MAX_MEAN_GAP = 0.05


def cpu_has_bf16() -> bool:
    """This CPU executes bf16 matmuls natively (Linux flags ``avx512_bf16`` or ``amx_bf16``)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return False
    flags = cpuinfo.read_text()
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_autocast(
    setting: str, device: torch.device, weights: torch.dtype
) -> torch.dtype | None:
    """The autocast dtype for ``learner.autocast`` on ``device`` (None: no autocast). Weights
    already in 16 bits gain nothing from it."""
    if setting == "off" or weights != torch.float32:
        return None
    if setting == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16()):
        return torch.bfloat16
    return None


def autocast_gap(logprobs: Callable[[bool], torch.Tensor]) -> float:
    """Mean |autocast - float32| of ``logprobs(autocast_on)`` (a fixed sequence's logprobs)."""
    with torch.no_grad():
        exact = logprobs(False).float()
        fast = logprobs(True).float()
    return float((exact - fast).abs().mean())


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` for the learner's forward, or a no-op context when off."""
    return torch.autocast(device_type=device.type, dtype=dtype or torch.bfloat16,
                          enabled=dtype is not None)  # fmt: skip
