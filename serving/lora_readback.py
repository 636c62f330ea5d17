"""Reading back the LoRA weights an engine actually serves, and what they should be.

A logprob probe cannot tell two adapter versions apart when one small update changes logprobs
less than bf16 noise does. The weights can: after a load, vLLM's worker reports a fingerprint of
the LoRA slot the version runs from (the very tensors its kernels read), and the engine compares
it with the fingerprint of the files the learner published (digest-checked bytes), computed here
with vLLM's own conversions (cast to the engine's dtype, scaling folded into B). A swap that left
stale weights in the slot, or loaded another version's files, differs by whole bf16 steps; two
runs over identical tensors differ only by float64 summation order.

The fingerprint of a module is its LoRA delta applied to a few fixed random vectors,
``B @ (A @ R)`` in float64: independent of rank padding and of how vLLM packs q/k/v or gate/up
into one layer, and small enough to travel back through ``collective_rpc``.
"""

from __future__ import annotations

import json
import math

import torch

PROBE_COLUMNS = 2  # random input vectors per module
PROBE_SEED = 20261206
# Largest relative gap between served and expected fingerprints that counts as "the same
# weights": float64 over identical low-precision tensors agrees to ~1e-15; one bf16 step of one
# element already moves a module's fingerprint by ~1e-4 relative.
READBACK_RTOL = 1e-9

Fingerprint = dict[str, list[float]]


def probe_matrix(dim: int, seed: int = PROBE_SEED) -> torch.Tensor:
    """The fixed random inputs for a module of input size ``dim`` (float64, [dim, columns])."""
    generator = torch.Generator().manual_seed(seed + dim)
    return torch.randn(dim, PROBE_COLUMNS, generator=generator, dtype=torch.float64)


def _apply(lora_a: torch.Tensor, lora_b: torch.Tensor, seed: int) -> list[float]:
    a = lora_a.detach().to("cpu", torch.float64)
    b = lora_b.detach().to("cpu", torch.float64)
    return (b @ (a @ probe_matrix(a.shape[1], seed))).flatten().tolist()


def expected_fingerprint(
    files: dict[str, bytes], dtype: str, seed: int = PROBE_SEED
) -> Fingerprint:
    """The fingerprint of a peft adapter's files as an engine of ``dtype`` would hold them."""
    from safetensors.torch import load as load_safetensors

    config = json.loads(files["adapter_config.json"])
    tensors = load_safetensors(files["adapter_model.safetensors"])
    rank, alpha = int(config["r"]), float(config["lora_alpha"])
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise ValueError("per-module rank or alpha patterns are not read back (rlfarm makes none)")
    scaling = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    torch_dtype = getattr(torch, dtype)
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        for part in ("lora_A", "lora_B"):
            marker = f".{part}."
            if marker in name:
                module = name.split(marker)[0].removeprefix("base_model.model.")
                pairs.setdefault(module, {})[part] = tensor
    out: Fingerprint = {}
    for module, pair in sorted(pairs.items()):
        a = pair["lora_A"].to(torch_dtype)
        b = pair["lora_B"].to(torch_dtype)
        if scaling != 1:
            b *= scaling  # vLLM folds the scaling into B in the engine's dtype, in place
        out[module] = _apply(a, b, seed)
    return out


def relative_gap(served: Fingerprint, expected: Fingerprint) -> float:
    """The largest per-module ``|served - expected| / |expected|`` (a module one side lacks
    counts as zeros on that side; both zero: no gap)."""
    worst = 0.0
    for module in served.keys() | expected.keys():
        s = torch.tensor(served.get(module) or [0.0] * len(expected[module]), dtype=torch.float64)
        e = torch.tensor(expected.get(module) or [0.0] * len(served[module]), dtype=torch.float64)
        diff, scale = float((s - e).norm()), float(e.norm())
        if diff == 0.0:
            continue
        worst = max(worst, diff / scale if scale > 0 else math.inf)
    return worst


class LoraReadback:
    """Mixed into vLLM's worker (``worker_extension_cls``): fingerprints of a LoRA's slot."""

    def rlfarm_lora_fingerprint(self, lora_id: int, seed: int = PROBE_SEED) -> dict:
        """``{"slot": bool, "modules": Fingerprint}`` for adapter ``lora_id`` on this worker:
        read from the active slot when the adapter has one (what the kernels use), else from
        the registered copy vLLM will activate. Tensor parallelism shards the slot, so only a
        whole (tp 1) worker answers; others say ``tp`` > 1 and answer nothing."""
        runner = self.model_runner  # type: ignore[attr-defined]
        manager = runner.lora_manager._adapter_manager
        tp = int(getattr(self, "parallel_config", runner.parallel_config).tensor_parallel_size)
        if tp > 1:
            return {"slot": False, "tp": tp, "modules": {}}
        if lora_id in manager.lora_index_to_id:
            index = manager.lora_index_to_id.index(lora_id)
            return {"slot": True, "tp": tp, "modules": self._slot(manager, index, seed)}
        lora_model = manager._registered_adapters.get(lora_id)
        if lora_model is None:
            return {"slot": False, "tp": tp, "modules": None}
        modules: Fingerprint = {}
        for name, weights in lora_model.loras.items():
            subs = manager.packed_modules_mapping.get(name.rsplit(".", 1)[-1])
            a_list = weights.lora_a if isinstance(weights.lora_a, list) else [weights.lora_a]
            b_list = weights.lora_b if isinstance(weights.lora_b, list) else [weights.lora_b]
            for i, (a, b) in enumerate(zip(a_list, b_list, strict=True)):
                if a is None or b is None:
                    continue
                key = name if len(a_list) == 1 else f"{name.rsplit('.', 1)[0]}.{subs[i]}"
                modules[key] = _apply(a, b, seed)
        return {"slot": False, "tp": tp, "modules": modules}

    @staticmethod
    def _slot(manager, index: int, seed: int) -> Fingerprint:
        modules: Fingerprint = {}
        for name, layer in manager.modules.items():
            stacked_a = getattr(layer, "lora_a_stacked", None)
            stacked_b = getattr(layer, "lora_b_stacked", None)
            if stacked_a is None or stacked_b is None:
                continue
            prefix, short = name.rsplit(".", 1)
            subs = manager.packed_modules_mapping.get(short) or [short]
            if len(stacked_a) != len(subs):  # a packing this does not know: name the slices
                subs = [f"{short}[{i}]" for i in range(len(stacked_a))]
            for sub, a, b in zip(subs, stacked_a, stacked_b, strict=True):
                # [slots, 1, rank, in] and [slots, 1, out, rank]; rank padding is zeros.
                fingerprint = _apply(a[index, 0], b[index, 0], seed)
                if any(fingerprint):
                    modules[f"{prefix}.{sub}"] = fingerprint
        return modules
