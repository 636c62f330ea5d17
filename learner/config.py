"""``LearnerConfig``: every knob of the GRPO+LoRA learner, validated when it is built.

The cluster config embeds this model; the CLI and tests build it directly. Defaults are the
recipe the AWS-CLI task's authors found best for Qwen2.5-Coder-3B (LoRA r=8, alpha=16, dropout
0.05 on q/k/v/o) with the loss choices of Dr.GRPO (no std scaling, token-level aggregation) and
DAPO (clip-higher).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class LearnerConfig(BaseModel):
    """Configuration of one learner. Unknown fields are rejected (a typo is an error)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_path: str = Field(
        description="Base model: a local Hugging Face directory (or hub id where a hub is "
        "reachable). The LoRA adapter sits on top of it; it is never modified."
    )
    lora_r: int = Field(8, gt=0, description="LoRA rank.")
    lora_alpha: float = Field(16.0, gt=0, description="LoRA scaling numerator (scale = alpha/r).")
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        description="Module names that get LoRA adapters (must exist in the base model).",
    )
    lr: float = Field(1e-5, gt=0, description="Peak AdamW learning rate.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW decoupled weight decay.")
    warmup_steps: int = Field(0, ge=0, description="Optimizer steps of linear LR warm-up from 0.")
    lr_schedule: Literal["constant", "linear", "cosine"] = Field(
        "constant",
        description="LR after warm-up: constant, or decayed to 0 at total_steps (linear/cosine).",
    )
    total_steps: int | None = Field(
        None,
        gt=0,
        description="Optimizer steps of the whole run (updates x minibatches); needed by "
        "linear/cosine decay.",
    )
    clip_eps_low: float = Field(
        0.2, gt=0.0, lt=1.0, description="PPO ratio clip below: ratio >= 1 - clip_eps_low."
    )
    clip_eps_high: float = Field(
        0.28,
        gt=0.0,
        description="PPO ratio clip above: ratio <= 1 + clip_eps_high (DAPO clip-higher: larger "
        "than clip_eps_low so low-probability tokens can still gain mass).",
    )
    is_cap: float = Field(
        2.0,
        ge=1.0,
        description="Truncated importance sampling cap C: the weight pi_learner/pi_engine on each "
        "token is min(weight, C). Corrects staleness and engine/learner numeric differences.",
    )
    kl_coef: float = Field(
        0.0,
        ge=0.0,
        description="Weight of the KL penalty to the reference policy (the base model, computed "
        "by disabling the adapter). 0 turns it off and saves a forward pass.",
    )
    scale_by_std: bool = Field(
        False,
        description="Divide group advantages by the group's reward std (original GRPO). Off by "
        "default, per Dr.GRPO: std scaling over-weights near-uniform groups.",
    )
    min_reward_spread: float = Field(
        0.0,
        ge=0.0,
        description="A group whose rewards span (max - min) no more than this carries no "
        "learning signal: skipped by the learner, booked dropped_zero_variance by the farm "
        "(learner.types.lacks_signal). Adam's step does not shrink with the gradient, so without "
        "it a group of failures that differ by a few step costs moves the policy as far as a group "
        "with a success. 0: only exactly equal rewards.",
    )
    loss_norm: Literal["token", "sequence"] = Field(
        "token",
        description="How per-token losses are averaged: 'token' sums over every trained token of "
        "the batch and divides by their count (DAPO/Dr.GRPO: long episodes weigh more); "
        "'sequence' averages each episode over its own tokens, then episodes (the original GRPO: "
        "every episode weighs the same, so long failed episodes cannot dominate the gradient).",
    )
    minibatches: int = Field(
        1,
        ge=1,
        description="Optimizer steps per update: the batch of groups is split into this many "
        "mini-batches. The PPO clip is only active from the second mini-batch on, because the "
        "'old' policy is frozen at the start of the update.",
    )
    temperature: float = Field(
        1.0,
        gt=0.0,
        description="Sampling temperature the engines use: learner logprobs are computed from "
        "logits / temperature so they are comparable with the engine's behaviour logprobs.",
    )
    micro_batch_tokens: int = Field(
        8192,
        gt=0,
        description="Token budget of one forward/backward micro-batch, counted after padding "
        "(rows x longest row). A single longer episode runs alone.",
    )
    share_prefix: bool = Field(
        True,
        description="Run the tokens all episodes of a group share (system prompt, task, any "
        "identical first turns) once per micro-batch instead of once per episode: same loss and "
        "gradients, less compute (with LoRA dropout the rows share one dropout draw on the "
        "prefix). Not combined with gradient_checkpointing (recomputation cannot replay the "
        "shared prefix), which then processes every episode whole.",
    )
    logit_chunk_tokens: int = Field(
        1024,
        ge=0,
        description="Trained positions projected onto the vocabulary at once; each chunk's "
        "logits are recomputed in backward, so [tokens x vocab] never exists whole (0: all at "
        "once, fastest for a small vocabulary).",
    )
    memory_headroom: float = Field(
        0.9,
        gt=0.0,
        le=1.0,
        description="Share of the GPU memory the learner is given that its estimate may use; "
        "a config estimated to need more is refused before training (see learner/memory.py).",
    )
    memory_fraction: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="Share of its GPU's total memory the learner is given. The farm sets it "
        "where engines share the learner's GPU (1 - their gpu_memory_utilization); the fit "
        "check reads this, not whatever happens to be free at the moment it runs.",
    )
    grad_clip: float = Field(1.0, gt=0.0, description="Max global gradient L2 norm.")
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute activations in backward: far less memory for long multi-turn "
        "episodes on big models, about a third more compute.",
    )
    keep_last: int = Field(
        4,
        ge=1,
        description="Published adapter versions kept on disk; older ones are deleted. Keep at "
        "least max_staleness + 2 so an engine never loses a version it may still load.",
    )
    device: str = Field(
        "auto", description="'auto' (cuda if available), 'cpu', 'cuda' or 'cuda:N'."
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32",
        description="Base model weights' dtype. LoRA weights, optimizer state and published "
        "adapters are always float32.",
    )
    autocast: Literal["off", "auto", "bfloat16"] = Field(
        "off",
        description="Run the decoder's matmuls in bf16 under torch.autocast, weights and LoRA "
        "staying float32: 'auto' where the device has bf16 matrix units (a GPU; a CPU with "
        "AVX-512 BF16 or AMX) and only if a start-up check against float32 logprobs passes "
        "(learner/autocast.py); 'bfloat16' whatever the check says (it is printed); 'off' for "
        "exact float32.",
    )
    seed: int = Field(0, description="Seed of LoRA init, dropout and every other learner RNG.")

    def with_model(self, model_path: str) -> LearnerConfig:
        """This config for a resolved model path (validated again, unlike ``model_copy``)."""
        return LearnerConfig.model_validate(self.model_dump() | {"model_path": model_path})

    @field_validator("target_modules")
    @classmethod
    def _nonempty_targets(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError(
                "target_modules is empty: name at least one module, e.g. ['q_proj', 'v_proj']"
            )
        return value

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in value):
            raise ValueError(f"betas={value}: each AdamW beta must be in [0, 1), e.g. (0.9, 0.999)")
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value in ("auto", "cpu", "cuda") or value.startswith("cuda:"):
            return value
        raise ValueError(f"device={value!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")

    @model_validator(mode="after")
    def _schedule_needs_total(self) -> LearnerConfig:
        if self.lr_schedule != "constant" and self.total_steps is None:
            raise ValueError(
                f"lr_schedule={self.lr_schedule!r} decays to 0 at total_steps, which is unset: "
                "set total_steps or use lr_schedule='constant'"
            )
        if self.total_steps is not None and self.warmup_steps >= self.total_steps:
            raise ValueError(
                f"warmup_steps={self.warmup_steps} >= total_steps={self.total_steps}: warm-up "
                "must end before the run does; lower warmup_steps"
            )
        return self
