"""Measuring what one learner update really holds, to check ``learner.memory``'s estimate.

A random-weight decoder of a ``ModelShape`` (Qwen2 architecture, built on the device in the
learner's dtype, so a 7B shape needs no download), adapted exactly as the learner adapts its
model (``trainer.adapt_for_training``, LoRA and optimizer state in float32), runs optimizer steps
on one micro-batch of ``micro_batch_tokens`` tokens through the learner's own forward
(``forward.trained_token_logprobs``) and GRPO loss. The second step is measured (the first
allocates AdamW's moments):

- on CUDA, ``torch.cuda.max_memory_allocated`` (every tensor the caching allocator handed out);
- on CPU, the C heap's bytes in use (glibc ``mallinfo2``: torch's CPU tensors are malloc'd)
  read after every torch op, forward and backward, via a dispatch mode; the peak above the
  bytes in use before the model was built. Temporaries an op frees before it returns are not
  seen, as on CUDA's allocator they would be.

Slow in pure terms (an op-level hook on CPU), meant for a check, not a run.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from dataclasses import dataclass, replace

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from learner.config import LearnerConfig
from learner.memory import MemoryEstimate, ModelShape, estimate


@dataclass(frozen=True)
class MemoryReading:
    """One measured update against the estimate for the same shape and config (bytes)."""

    device: str
    measured: int
    estimate: MemoryEstimate

    @property
    def ratio(self) -> float:
        """Estimate over measured: >= 1 means the estimate covers what the update held."""
        return self.estimate.total / self.measured


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]  # fmt: skip


_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
if hasattr(_LIBC, "mallinfo2"):
    _LIBC.mallinfo2.restype = _MallInfo2


def heap_in_use() -> int:
    """Bytes the C heap has handed out and not taken back (small blocks plus mmapped ones)."""
    if not hasattr(_LIBC, "mallinfo2"):
        raise RuntimeError("measuring CPU memory needs glibc >= 2.33 (mallinfo2)")
    info = _LIBC.mallinfo2()
    return int(info.uordblks + info.hblkhd)


class _HeapPeak(TorchDispatchMode):
    """The largest ``heap_in_use`` seen after any torch op while active."""

    def __init__(self) -> None:
        super().__init__()
        self.peak = heap_in_use()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.peak = max(self.peak, heap_in_use())
        return out


def random_model(shape: ModelShape, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    """A Qwen2 causal LM of ``shape`` with random weights, made directly on ``device``."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=32768,
        tie_word_embeddings=shape.tied_embeddings,
    )
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model


def adapted_random_model(
    shape: ModelShape, config: LearnerConfig, device: torch.device, lora_seed: int = 0
) -> torch.nn.Module:
    """A random model of ``shape`` (the same base weights every call) adapted exactly as the
    learner adapts its model, LoRA (initialised from ``lora_seed``) in float32, in train mode."""
    from learner.trainer import DTYPES, adapt_for_training

    torch.manual_seed(0)
    base = random_model(shape, DTYPES[config.dtype], device)
    torch.manual_seed(lora_seed)
    model = adapt_for_training(base, config).to(device).train()
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    return model


def update_once(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ids: torch.Tensor,
    mask: torch.Tensor,
    config: LearnerConfig,
) -> None:
    """One learner optimizer step on one row: its forward (``trained_token_logprobs``), the GRPO
    loss at advantage 1, backward, gradient clipping and AdamW."""
    from learner import grpo
    from learner.forward import trained_token_logprobs

    device = ids.device
    optimizer.zero_grad(set_to_none=True)
    logprobs = trained_token_logprobs(
        model.get_base_model(), ids, mask, mask, 0, config.temperature, config.logit_chunk_tokens
    )
    parts = grpo.grpo_token_loss(
        logprobs, logprobs.detach(), logprobs.detach(), torch.ones(1, 1, device=device),
        eps_low=config.clip_eps_low, eps_high=config.clip_eps_high, is_cap=config.is_cap,
    )  # fmt: skip
    grpo.weighted_sum(parts["loss"], mask, torch.ones(1, device=device)).backward()
    trained = [p for p in model.parameters() if p.requires_grad]
    torch.nn.utils.clip_grad_norm_(trained, config.grad_clip)
    optimizer.step()


def random_batch(
    vocab: int, tokens: int, device: torch.device, seed: int = 0, prompt: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [1, tokens], loss mask): random tokens, the first ``prompt`` untrained."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (1, tokens), generator=generator).to(device)
    mask = torch.ones_like(ids)
    mask[:, :prompt] = 0
    return ids, mask


def measure_update(
    shape: ModelShape, config: LearnerConfig, device: str = "cpu", seed: int = 0
) -> MemoryReading:
    """The peak memory of one learner optimizer step on a micro-batch of
    ``config.micro_batch_tokens`` tokens (one row, every token trained but the first)."""
    dev = torch.device(device)
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        baseline = torch.cuda.memory_allocated(dev)
    else:
        baseline = heap_in_use()
    model = adapted_random_model(shape, config, dev, lora_seed=seed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    ids, mask = random_batch(shape.vocab, config.micro_batch_tokens, dev, seed)
    update_once(model, optimizer, ids, mask, config)  # AdamW's moments exist from here on
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        update_once(model, optimizer, ids, mask, config)
        torch.cuda.synchronize(dev)
        peak = torch.cuda.max_memory_allocated(dev)
    else:
        with _HeapPeak() as probe:
            update_once(model, optimizer, ids, mask, config)
        peak = probe.peak
    # The estimate for the model as built (its parameter count, not a rounded published one).
    built = replace(shape, params=sum(p.numel() for p in model.parameters()))
    return MemoryReading(str(dev), measured=peak - baseline, estimate=estimate(built, config))
