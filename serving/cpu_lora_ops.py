"""Grouped LoRA matmuls for vLLM's CPU engines, installed as a vLLM general plugin.

vLLM's CPU punica wrapper (``vllm.lora.punica_wrapper.punica_cpu``) uses its PyTorch-native ops,
which gather one LoRA weight matrix *per token* (``weights[indices]``, a [tokens, out, in] copy)
and then run a batched einsum. A prefill of a few thousand tokens copies megabytes of identical
weights per layer: profiling our CPU engine (py-spy, async farm) put ~32% of its time in those ops.
A batch only ever uses a handful of adapters, so these versions run one matmul per adapter over
that adapter's tokens instead. Same signatures, same results (indices follow the upstream ops'
indexing, -1 included), tested against the upstream ops in ``tests/serving``.

``register`` is the ``vllm.general_plugins`` entry point (pyproject.toml): vLLM calls it in every
process it starts, and it patches the CPU wrapper only on the CPU platform. Set
``RLFARM_GROUPED_CPU_LORA=0`` to keep vLLM's own ops.
"""

from __future__ import annotations

import os

import torch

ENV_SWITCH = "RLFARM_GROUPED_CPU_LORA"


def per_adapter_matmul(
    inputs: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """``out[t] = inputs[t] @ weights[indices[t]].T`` computed with one matmul per adapter.

    ``weights`` is [adapters, out, in] or [adapters, 1, out, in]; indices index it like Python
    (so -1 is the last slot, as in the upstream ops).
    """
    if weights.dim() == 4:
        weights = weights.squeeze(1)
    inputs = inputs.to(dtype)
    adapters = torch.unique(indices).tolist()
    if len(adapters) == 1:
        return inputs @ weights[adapters[0]].to(dtype).T
    out = inputs.new_empty(inputs.shape[0], weights.shape[1])
    for adapter in adapters:
        rows = indices == adapter
        out[rows] = inputs[rows] @ weights[adapter].to(dtype).T
    return out


def bgmv_shrink(inputs, lora_a_weights, output_tensor, lora_indices_tensor, scaling=1.0):
    outputs = per_adapter_matmul(inputs, lora_a_weights, lora_indices_tensor, output_tensor.dtype)
    output_tensor[:, : outputs.shape[1]] = scaling * outputs


def bgmv_expand(inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs=True):
    outputs = per_adapter_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    limit = output_tensor.shape[0]
    if outputs.shape[0] == 1 and output_tensor.shape[0] != 1:
        limit = 1
    # The adapter and the model may pad their output widths differently.
    common = min(outputs.shape[1], output_tensor.shape[1])
    if add_inputs:
        output_tensor[:, :common] += outputs[:limit, :common]
    else:
        output_tensor[:, :common] = outputs[:limit, :common]


def bgmv_expand_slice(
    inputs,
    lora_b_weights,
    output_tensor,
    lora_indices_tensor,
    slice_offset,
    slice_size,
    add_inputs=True,
):
    outputs = per_adapter_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if add_inputs:
        output_tensor[:, slice_offset : slice_offset + slice_size] += outputs
    else:
        output_tensor[:, slice_offset : slice_offset + slice_size] = outputs


def _per_token(lora_indices_tensor: torch.Tensor, seq_len_tensor: torch.Tensor) -> torch.Tensor:
    return torch.repeat_interleave(lora_indices_tensor, seq_len_tensor)


def sgmv_shrink(
    inputs,
    lora_a_weights,
    output_tensor,
    b_seq_start_loc,
    seq_len_tensor,
    lora_indices_tensor,
    batches,
    max_seq_length,
    token_nums,
    scaling,
):
    indices = _per_token(lora_indices_tensor, seq_len_tensor)
    bgmv_shrink(inputs, lora_a_weights, output_tensor, indices, scaling)


def sgmv_expand(
    inputs,
    lora_b_weights,
    output_tensor,
    b_seq_start_loc,
    seq_len_tensor,
    lora_indices_tensor,
    batches,
    max_seq_length,
    token_nums,
    add_inputs=False,
):
    indices = _per_token(lora_indices_tensor, seq_len_tensor)
    bgmv_expand(inputs, lora_b_weights, output_tensor, indices, add_inputs)


def sgmv_expand_slice(
    inputs,
    lora_b_weights,
    output_tensor,
    b_seq_start_loc,
    seq_len_tensor,
    lora_indices_tensor,
    batches,
    max_seq_length,
    token_nums,
    slice_offset,
    slice_size,
    add_inputs=False,
):
    indices = _per_token(lora_indices_tensor, seq_len_tensor)
    bgmv_expand_slice(
        inputs, lora_b_weights, output_tensor, indices, slice_offset, slice_size, add_inputs
    )


OPS = {
    "bgmv_shrink": bgmv_shrink,
    "bgmv_expand": bgmv_expand,
    "bgmv_expand_slice": bgmv_expand_slice,
    "sgmv_shrink": sgmv_shrink,
    "sgmv_expand": sgmv_expand,
    "sgmv_expand_slice": sgmv_expand_slice,
}


def install() -> bool:
    """Point vLLM's CPU punica wrapper at the grouped ops; returns whether it did."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return False
    from vllm.lora.punica_wrapper import punica_cpu

    missing = [name for name in OPS if not hasattr(punica_cpu, name)]
    if missing:  # a vLLM whose CPU wrapper changed shape: leave it alone
        return False
    for name, op in OPS.items():
        setattr(punica_cpu, name, op)
    return True


def register() -> None:
    """vLLM general-plugin entry point: install on the CPU platform only."""
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        install()
