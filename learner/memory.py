"""How much GPU memory a learner config needs, estimated before the first update.

The arithmetic, per part (bytes; ``b`` = bytes per element of the base dtype, T = the
micro-batch's padded tokens, ``learner.micro_batch_tokens``):

- weights: every base parameter, ``params x b`` (frozen, never copied; a tied LM head once);
- LoRA state: trainable parameters in float32 with their gradient and AdamW's two moments,
  ``lora_params x 16``;
- activations kept for backward, per token and decoder layer:
  - the base model's: about ``9 h + 4 i`` elements (q/k/v/o projections and their inputs, two
    norms, the residuals, and the SwiGLU MLP's gate, up, activation and product; SDPA/flash
    attention keeps no T x T matrix), ``x b``;
  - each adapted projection's own (peft): with ``lora_dropout`` > 0 a float32 copy of the
    projection's input after dropout and the dropout mask (counted at 4 bytes: float on CPU,
    1 byte on CUDA), ``8 x d_in``; without dropout only ``down_proj`` adds its input
    (``i x b``: nothing else keeps the SwiGLU product);
  so ``T x layers x per_layer``. With ``gradient_checkpointing`` only each layer's input is kept
  (``T x layers x h x b``) plus, while one layer is recomputed, its activations and their
  gradients (``2 x T x per_layer``);
- logits: ``logit_chunk_tokens`` trained positions at a time, float32, with the copies a
  log-softmax's backward holds at its peak (logits, their exponent, the gradient, the gather's
  scatter and one temporary): ``chunk x vocab x 4 x 5`` (without chunking, up to every position
  of the micro-batch at once).

``learner.memory_probe`` measures one real update of a random model of the same shape;
``benchmarks/gpu_check.py`` fails if this estimate is below the measurement (on a GPU at 3B and
7B shapes; in the suite on CPU at SmolLM2-135M's, where it was 1.04-1.27x the measured peak).
What it leaves out (CUDA's context, the allocator's fragmentation) is what ``memory_headroom``
is for.
"""

from __future__ import annotations

from dataclasses import dataclass

from learner.config import LearnerConfig

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
LOGIT_COPIES = 5  # [chunk x vocab] float32 tensors alive at the log-softmax backward's peak
DROPOUT_BYTES = 8  # per input element of an adapted projection: its float32 copy and the mask
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
    tied_embeddings: bool = False  # the LM head is the embedding matrix (one copy)

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
            tied_embeddings=bool(getattr(cfg, "tie_word_embeddings", False)),
        )

    def projections(self) -> dict[str, tuple[int, int]]:
        """(input, output) width of each projection a LoRA can adapt."""
        kv = self.kv_heads * (self.hidden // self.heads)
        return {
            "q_proj": (self.hidden, self.hidden), "k_proj": (self.hidden, kv),
            "v_proj": (self.hidden, kv), "o_proj": (self.hidden, self.hidden),
            "gate_proj": (self.hidden, self.intermediate),
            "up_proj": (self.hidden, self.intermediate),
            "down_proj": (self.intermediate, self.hidden),
        }  # fmt: skip

    def lora_params(self, rank: int, modules: list[str]) -> int:
        """Trainable LoRA parameters: r x (in + out) per adapted projection and layer."""
        shapes = self.projections()
        per_layer = sum(rank * sum(shapes[m]) for m in modules if m in shapes)
        return per_layer * self.layers

    def layer_bytes_per_token(self, config: LearnerConfig) -> int:
        """Activation bytes one decoder layer keeps for backward, per token (module docstring)."""
        b = BYTES[config.dtype]
        base = (9 * self.hidden + 4 * self.intermediate) * b
        shapes = self.projections()
        adapted = [m for m in config.target_modules if m in shapes]
        if config.lora_dropout > 0:
            return base + DROPOUT_BYTES * sum(shapes[m][0] for m in adapted)
        return base + (self.intermediate * b if "down_proj" in adapted else 0)


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
    per_layer = shape.layer_bytes_per_token(config)
    if config.gradient_checkpointing:
        activations = tokens * (shape.layers * shape.hidden * b + 2 * per_layer)
    else:
        activations = tokens * shape.layers * per_layer
    chunk = config.logit_chunk_tokens or tokens
    return MemoryEstimate(
        weights=shape.params * b,
        lora_state=shape.lora_params(config.lora_r, config.target_modules) * 16,
        activations=activations,
        logits=min(chunk, tokens) * shape.vocab * 4 * LOGIT_COPIES,
    )


class LearnerMemoryError(ValueError):
    """The config cannot fit the device the learner got."""


def check_fits(shape: ModelShape, config: LearnerConfig, given_bytes: int) -> MemoryEstimate:
    """The estimate, or an error naming the fields to change when it exceeds the budget:
    ``memory_headroom`` of the ``given_bytes`` the learner was given on its device."""
    need = estimate(shape, config)
    budget = int(given_bytes * config.memory_headroom)
    if need.total <= budget:
        return need
    fixes = [f"lower learner.micro_batch_tokens (now {config.micro_batch_tokens})"]
    if not config.gradient_checkpointing:
        fixes.append("set learner.gradient_checkpointing: true")
    if config.logit_chunk_tokens == 0 or config.logit_chunk_tokens > 1024:
        fixes.append("set learner.logit_chunk_tokens: 1024")
    raise LearnerMemoryError(
        f"the learner needs about {need.describe()} but has {budget / GIB:.1f} GiB "
        f"({config.memory_headroom:.0%} of the {given_bytes / GIB:.1f} GiB it was given): "
        + "; or ".join(fixes)
    )
