"""LoRA adapter versions inside one engine: validation before load, routing, and eviction.

Each adapter version gets its own vLLM LoRA name and integer id (``rlfarm-v<N>`` / ``N``). vLLM
keys prefix-cache blocks by adapter name, so unique names per version guarantee that KV computed
under one version is never served to another (reusing a name across versions is how stale KV
leaked in vllm#42125). Requests pin the version they start with; a version is evicted only when it
is neither the newest nor in use, and only once more than ``max_loras`` versions are resident.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from serving.types import AdapterProbe

BASE_VERSION = 0


class AdapterError(RuntimeError):
    """An adapter could not be loaded, or a requested version is not available."""


class AdapterVerificationError(AdapterError):
    """The engine's probe disagrees with the learner's: the swap did not land as published."""


def lora_name(version: int) -> str:
    return f"rlfarm-v{version}"


def validate_adapter_dir(
    path: str | Path,
    max_lora_rank: int,
    hidden_size: int | None,
    allowed_modules: list[str] | None = None,
) -> int:
    """Check an adapter directory before handing it to vLLM; return its rank.

    ``allowed_modules``: the peft module names the engine runs LoRA on (None: any).

    vLLM's own failure on a malformed adapter surfaces deep inside the engine process; checking
    the files here turns it into an error that names the file and the fix.
    """
    path = Path(path)
    config_path = path / "adapter_config.json"
    if not config_path.is_file():
        raise AdapterError(f"{path}: no adapter_config.json (expected peft save_pretrained layout)")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise AdapterError(f"{config_path}: not valid JSON ({exc})") from exc
    if config.get("peft_type") != "LORA":
        raise AdapterError(f"{config_path}: peft_type is {config.get('peft_type')!r}, need 'LORA'")
    rank = int(config.get("r", 0))
    if not 0 < rank <= max_lora_rank:
        raise AdapterError(
            f"{config_path}: LoRA rank r={rank} is outside 1..{max_lora_rank}; "
            "raise engine.max_lora_rank or train with a smaller rank"
        )
    targets = config.get("target_modules")
    if allowed_modules is not None and isinstance(targets, list):
        extra = sorted(set(targets) - set(allowed_modules))
        if extra:
            raise AdapterError(
                f"{config_path}: the adapter trains {extra}, but the engine runs LoRA only on "
                f"{sorted(allowed_modules)}: add them to engine.lora_target_modules"
            )
    weights = path / "adapter_model.safetensors"
    if not weights.is_file():
        raise AdapterError(f"{path}: no adapter_model.safetensors")
    _check_weight_shapes(weights, rank, hidden_size)
    return rank


def _check_weight_shapes(weights: Path, rank: int, hidden_size: int | None) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            names = list(f.keys())
            shapes = {name: tuple(f.get_slice(name).get_shape()) for name in names}
    except Exception as exc:  # safetensors raises several types for corrupt headers
        raise AdapterError(f"{weights}: unreadable safetensors file ({exc})") from exc
    if not names:
        raise AdapterError(f"{weights}: contains no tensors")
    for name, shape in shapes.items():
        if "lora_A" in name and (len(shape) != 2 or shape[0] != rank):
            raise AdapterError(f"{weights}: {name} has shape {shape}, expected ({rank}, in)")
        if "lora_B" in name and (len(shape) != 2 or shape[1] != rank):
            raise AdapterError(f"{weights}: {name} has shape {shape}, expected (out, {rank})")
        if hidden_size and "lora_A" in name and "q_proj" in name and shape[1] != hidden_size:
            raise AdapterError(
                f"{weights}: {name} expects hidden size {shape[1]} but the served model has "
                f"{hidden_size}: this adapter was trained for another base model"
            )


@dataclass
class _Resident:
    path: str
    probe: AdapterProbe | None = None  # the learner's numbers, to judge the next version by
    in_flight: int = 0


@dataclass
class AdapterRegistry:
    """Bookkeeping of the versions resident in one engine (no vLLM calls; the engine acts)."""

    max_loras: int
    resident: dict[int, _Resident] = field(default_factory=dict)
    latest: int = BASE_VERSION

    def register(self, version: int, path: str, probe: AdapterProbe | None = None) -> None:
        if version <= BASE_VERSION:
            raise AdapterError(f"adapter version must be >= 1 (0 is the base model), got {version}")
        if version in self.resident:
            raise AdapterError(f"adapter version {version} is already loaded; versions are unique")
        self.resident[version] = _Resident(path=path, probe=probe)
        self.latest = max(self.latest, version)

    def acquire(self, version: int | None) -> int:
        """Pin the version a new request runs with (None = newest) and return it."""
        chosen = self.latest if version is None else version
        if chosen == BASE_VERSION:
            return chosen
        if chosen not in self.resident:
            raise AdapterError(
                f"adapter version {chosen} is not loaded (resident: {sorted(self.resident)})"
            )
        self.resident[chosen].in_flight += 1
        return chosen

    def release(self, version: int) -> None:
        if version != BASE_VERSION and version in self.resident:
            self.resident[version].in_flight -= 1

    def evictable(self) -> list[int]:
        """Versions to unload now: oldest unused ones beyond the ``max_loras`` cap."""
        excess = len(self.resident) - self.max_loras
        if excess <= 0:
            return []
        idle = [v for v in sorted(self.resident) if v != self.latest and not self.in_use(v)]
        return idle[:excess]

    def in_use(self, version: int) -> bool:
        return self.resident[version].in_flight > 0

    def forget(self, version: int) -> None:
        self.resident.pop(version, None)
