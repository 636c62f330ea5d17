"""How much GPU memory a learner config needs, estimated before the first update.

The arithmetic, per part (bytes; ``b`` = bytes per element of the base dtype, T = the
micro-batch's padded tokens, ``learner.micro_batch_tokens``):

- weights: every base parameter, ``params x b`` (frozen, never copied);
- LoRA state: trainable parameters in float32 with their gradient and AdamW's two moments,
  ``lora_params x 16``;
- activations kept for backward: per token and decoder layer about ``9 h + 4 i`` elements
  (q/k/v/o projections and their inputs, two norms, the residuals, and the SwiGLU MLP's gate,
  up, activation and product; SDPA/flash attention keeps no T x T matrix), so
  ``T x layers x (9h + 4i) x b``. With ``gradient_checkpointing`` only each layer's input is
  kept (``T x layers x h x b``) plus one layer's activations while it is recomputed;
- logits: ``logit_chunk_tokens`` trained positions at a time, float32, with softmax and
  gradient: ``chunk x vocab x 4 x 3`` (without chunking, up to every position of the
  micro-batch at once).

It is an estimate from the model's shape, not a measurement: ``memory_headroom`` leaves room for
CUDA's own context, the allocator's fragmentation and what the estimate leaves out.
"""

from __future__ import annotations

from dataclasses import dataclass

from learner.config import LearnerConfig

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
GIB = 1024**3


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs to know of a model: its size and a decoder layer's widths."""

    params: int
    layers: int
    hidden: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int

    @classmethod
    def from_hf_config(cls, cfg, params: int) -> ModelShape:
        return cls(
            params=params,
            layers=cfg.num_hidden_layers,
            hidden=cfg.hidden_size,
            intermediate=cfg.intermediate_size,
            vocab=cfg.vocab_size,
            heads=cfg.num_attention_heads,
            kv_heads=getattr(cfg, "num_key_value_heads", cfg.num_attention_heads),
        )

    def lora_params(self, rank: int, modules: list[str]) -> int:
        """Trainable LoRA parameters: r x (in + out) per adapted projection and layer."""
        head_dim = self.hidden // self.heads
        kv = self.kv_heads * head_dim
        shapes = {
            "q_proj": (self.hidden, self.hidden), "k_proj": (self.hidden, kv),
            "v_proj": (self.hidden, kv), "o_proj": (self.hidden, self.hidden),
            "gate_proj": (self.hidden, self.intermediate),
            "up_proj": (self.hidden, self.intermediate),
            "down_proj": (self.intermediate, self.hidden),
        }  # fmt: skip
        per_layer = sum(rank * sum(shapes[m]) for m in modules if m in shapes)
        return per_layer * self.layers


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    lora_state: int
    activations: int
    logits: int

    @property
    def total(self) -> int:
        return self.weights + self.lora_state + self.activations + self.logits

    def describe(self) -> str:
        parts = ("weights", "lora_state", "activations", "logits")
        inner = ", ".join(f"{p.replace('_', ' ')} {getattr(self, p) / GIB:.1f}" for p in parts)
        return f"{self.total / GIB:.1f} GiB ({inner})"


def estimate(shape: ModelShape, config: LearnerConfig) -> MemoryEstimate:
    """The learner's peak memory for one micro-batch of ``config.micro_batch_tokens`` tokens."""
    b = BYTES[config.dtype]
    tokens = config.micro_batch_tokens
    per_token_layer = 9 * shape.hidden + 4 * shape.intermediate
    if config.gradient_checkpointing:
        activations = tokens * b * (shape.layers * shape.hidden + per_token_layer)
    else:
        activations = tokens * b * shape.layers * per_token_layer
    chunk = config.logit_chunk_tokens or tokens
    return MemoryEstimate(
        weights=shape.params * b,
        lora_state=shape.lora_params(config.lora_r, config.target_modules) * 16,
        activations=activations,
        logits=min(chunk, tokens) * shape.vocab * 4 * 3,
    )


class LearnerMemoryError(ValueError):
    """The config cannot fit the device the learner got."""


def check_fits(shape: ModelShape, config: LearnerConfig, free_bytes: int) -> MemoryEstimate:
    """The estimate, or an error naming the fields to change when it exceeds the budget."""
    need = estimate(shape, config)
    budget = int(free_bytes * config.memory_headroom)
    if need.total <= budget:
        return need
    fixes = [f"lower learner.micro_batch_tokens (now {config.micro_batch_tokens})"]
    if not config.gradient_checkpointing:
        fixes.append("set learner.gradient_checkpointing: true")
    if config.logit_chunk_tokens == 0 or config.logit_chunk_tokens > 1024:
        fixes.append("set learner.logit_chunk_tokens: 1024")
    raise LearnerMemoryError(
        f"the learner needs about {need.describe()} but has {budget / GIB:.1f} GiB "
        f"({config.memory_headroom:.0%} of {free_bytes / GIB:.1f} GiB free on its device): "
        + "; or ".join(fixes)
    )
