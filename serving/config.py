"""Typed configuration of the inference engines (embedded in the farm's config by cluster/)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serving.devices import actor_device

# vLLM's accepted max_lora_rank values (vllm.config.lora.MaxLoRARanks, vLLM 0.32).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def vllm_lora_rank(rank: int) -> int:
    """The smallest max_lora_rank vLLM accepts that holds ``rank``."""
    return next((r for r in VLLM_LORA_RANKS if r >= rank), VLLM_LORA_RANKS[-1])


class EngineConfig(BaseModel):
    """How each vLLM engine is built. One config serves CPU (tiny model) and GPU (real models)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(
        default="builtin:tiny",
        description="HF model id or local path; 'builtin:tiny' is the project's own tiny model.",
    )
    device: str = Field(default="auto", description="'cpu', 'cuda' or 'auto' (cuda if present).")
    dtype: str = Field(
        default="auto",
        description="Weights dtype; 'auto' = float32 on CPU (exact probes), bfloat16 on GPU.",
    )
    max_model_len: int = Field(default=4096, ge=64, description="Context window in tokens.")
    max_loras: int = Field(
        default=2,
        ge=1,
        description="Adapter versions resident at once; older unused versions are evicted.",
    )
    max_lora_rank: int = Field(
        default=8,
        ge=1,
        description="Largest LoRA rank accepted; one of vLLM's: "
        + ", ".join(map(str, VLLM_LORA_RANKS)),
    )
    lora_target_modules: list[str] | None = Field(
        default=None,
        description="peft module names the adapters train (e.g. q_proj, o_proj); vLLM then runs "
        "LoRA only on the layers holding them (an adapter touching any other is refused at load). "
        "None: every layer vLLM supports, which on CPU costs ~1.6x the decode time of the four "
        "attention projections alone. The farm fills it from learner.target_modules.",
    )
    tensor_parallel_size: int = Field(default=1, ge=1, description="GPUs per engine (GPU only).")
    gpu_share: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Fraction of a GPU Ray reserves per engine when tensor_parallel_size is 1 "
        "(e.g. 0.5 to share one GPU with the learner; pair with gpu_memory_utilization).",
    )
    gpu_memory_utilization: float = Field(
        default=0.85, gt=0, le=1, description="Fraction of GPU memory vLLM may use (GPU only)."
    )
    cpu_kv_cache_gib: float = Field(
        default=0.25, gt=0, description="KV cache size per engine on CPU, in GiB."
    )
    cpu_threads: int = Field(
        default=1,
        ge=1,
        description="Torch threads of an engine on CPU. Ray still books one CPU for it: more "
        "threads let the engine use cores the learner leaves idle (rollouts while it waits for "
        "a batch), at the price of contention while both run.",
    )
    cpu_nice: int = Field(
        default=0,
        ge=0,
        le=19,
        description="Niceness an engine on CPU adds to the one it starts at (Ray starts workers "
        "at 15; the kernel caps it at 19); its engine-core process inherits it. Where the learner "
        "shares the engine's cores (async mode on one CPU box), a nicer engine yields the learner "
        "a larger share of the cores whenever it trains: the learner is async's critical path, "
        "and an engine that outcompetes it starves the updates.",
    )
    block_size: int | None = Field(
        default=None,
        ge=16,
        description="KV-cache block size in tokens (None: vLLM's default, 128 on CPU). The prefix "
        "cache reuses whole blocks only, so each new turn of an episode recomputes its last "
        "partial block; smaller blocks recompute less.",
    )
    enable_prefix_caching: bool = Field(
        default=True, description="Reuse KV of shared prefixes (keyed per adapter version)."
    )
    max_num_seqs: int = Field(default=64, ge=1, description="Sequences batched per engine step.")
    max_num_batched_tokens: int | None = Field(
        default=None,
        ge=16,
        description="Tokens scheduled per engine step, prefill and decode together (None: vLLM's "
        "default for the device). Larger lets long prompts prefill in fewer steps at the cost of "
        "each step's latency.",
    )
    routing: Literal["sticky", "least_loaded"] = Field(
        default="sticky",
        description="'sticky': every turn of every episode of a group goes to one engine (the "
        "least-loaded one when the group starts), so the group's shared prompt is prefilled once "
        "and each episode's prefix stays cached there; 'least_loaded': each turn to the engine "
        "with the fewest requests in flight.",
    )
    seed: int = Field(default=0, description="Engine sampling seed.")
    probe_atol: float = Field(
        default=0.0,
        ge=0,
        description="Largest mean |engine - learner| probe logprob gap accepted after a swap "
        "(a single token may be 5x that in 16-bit); 0 picks 1e-3 for float32 (max too) and 0.1 "
        "for 16-bit dtypes. See serving/probes.py.",
    )
    max_restarts: int = Field(
        default=3,
        ge=0,
        description="Times Ray restarts a dead engine actor (it then reloads the current adapter "
        "and verifies it before serving); past that the engine stays down and its groups fail.",
    )
    request_timeout_s: float = Field(
        default=600.0, gt=0, description="Upper bound on one generate call seen by the caller."
    )
    control_timeout_s: float = Field(
        default=120.0, gt=0, description="Upper bound on adapter loads, probes and health checks."
    )

    def vllm_lora_modules(self) -> list[str] | None:
        """``lora_target_modules`` as vLLM names its (fused) layers: q/k/v -> qkv_proj,
        gate/up -> gate_up_proj."""
        if self.lora_target_modules is None:
            return None
        fused = {"q_proj": "qkv_proj", "k_proj": "qkv_proj", "v_proj": "qkv_proj"}
        fused.update({"gate_proj": "gate_up_proj", "up_proj": "gate_up_proj"})
        return sorted({fused.get(m, m) for m in self.lora_target_modules})

    @model_validator(mode="after")
    def _check(self) -> EngineConfig:
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"engine.device={self.device!r}: use 'cpu', 'cuda' or 'auto'")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(
                f"engine.dtype={self.dtype!r}: use 'auto', 'float32', 'bfloat16' or 'float16'"
            )
        if self.tensor_parallel_size > 1 and self.gpu_share != 1.0:
            raise ValueError(
                "engine.gpu_share applies to single-GPU engines; with tensor_parallel_size>1 "
                "remove gpu_share (each engine takes whole GPUs)"
            )
        if self.max_lora_rank not in VLLM_LORA_RANKS:
            raise ValueError(
                f"engine.max_lora_rank={self.max_lora_rank} is not a rank vLLM accepts "
                f"({', '.join(map(str, VLLM_LORA_RANKS))}): use "
                f"{vllm_lora_rank(self.max_lora_rank)}"
            )
        if self.device == "cpu" and self.tensor_parallel_size != 1:
            raise ValueError(
                "engine.tensor_parallel_size>1 needs GPUs; on CPU set tensor_parallel_size: 1"
            )
        tokens = self.max_num_batched_tokens
        if tokens is not None and tokens < self.max_num_seqs:
            raise ValueError(
                f"engine.max_num_batched_tokens={tokens} < engine.max_num_seqs="
                f"{self.max_num_seqs}: a step could not give every running sequence its next "
                f"token; raise it to at least {self.max_num_seqs} or remove it"
            )
        return self

    def with_model(self, model: str) -> EngineConfig:
        """This config for a resolved model path (validated again, unlike ``model_copy``)."""
        return EngineConfig.model_validate(self.model_dump() | {"model": model})

    def on_device(self, device: str) -> EngineConfig:
        """This config with ``device`` decided (an engine does so where it runs)."""
        if device == self.device:
            return self
        return EngineConfig.model_validate(self.model_dump() | {"device": device})

    def resolved_device(self) -> str:
        """The device, decided where this is called (``serving.devices.actor_device``)."""
        return actor_device(self.device, self.tensor_parallel_size)

    def resolved_dtype(self) -> str:
        if self.dtype != "auto":
            return self.dtype
        return "float32" if self.resolved_device() == "cpu" else "bfloat16"
