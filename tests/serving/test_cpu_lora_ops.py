"""The grouped CPU LoRA ops give what vLLM's PyTorch-native ops give, and are what vLLM loads.

Compared on random tensors shaped like a mixed batch: several adapters, tokens of the base model
(index -1), 3-D and 4-D stacked weights, add and assign, slices, output padding.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest
import torch
from vllm.lora.ops import torch_ops as upstream

from serving import cpu_lora_ops as grouped

ADAPTERS, HIDDEN, RANK, OUT = 4, 32, 8, 48


def _indices(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(-1, ADAPTERS, (n,), generator=gen)


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("stacked_dims", [3, 4])
@pytest.mark.parametrize("tokens", [1, 7, 64])
def test_shrink_and_expand_match_the_upstream_ops(stacked_dims: int, tokens: int) -> None:
    x = _randn(tokens, HIDDEN, seed=1)
    a = _randn(ADAPTERS, RANK, HIDDEN, seed=2)
    b = _randn(ADAPTERS, OUT, RANK, seed=3)
    if stacked_dims == 4:
        a, b = a.unsqueeze(1), b.unsqueeze(1)
    idx = _indices(tokens, seed=tokens)
    shrunk = {}
    for name, ops in (("up", upstream), ("ours", grouped)):
        out = torch.zeros(tokens, RANK + 2)  # wider than the rank: only [:, :RANK] is written
        ops.bgmv_shrink(x, a, out, idx, 0.5)
        shrunk[name] = out
    torch.testing.assert_close(shrunk["ours"], shrunk["up"])
    h = shrunk["up"][:, :RANK]
    for add in (True, False):
        base = _randn(tokens, OUT + 3, seed=4)  # the model pads its output wider
        results = []
        for ops in (upstream, grouped):
            out = base.clone()
            ops.bgmv_expand(h, b, out, idx, add_inputs=add)
            results.append(out)
        torch.testing.assert_close(results[1], results[0])
        sliced = []
        for ops in (upstream, grouped):
            out = base.clone()
            ops.bgmv_expand_slice(h, b, out, idx, 3, OUT, add_inputs=add)
            sliced.append(out)
        torch.testing.assert_close(sliced[1], sliced[0])


def test_segmented_prefill_ops_match_the_upstream_ops() -> None:
    seq_lens = torch.tensor([5, 1, 9, 3])
    adapters = torch.tensor([2, -1, 0, 2])
    tokens = int(seq_lens.sum())
    starts = torch.cumsum(seq_lens, 0) - seq_lens
    meta = (starts, seq_lens, adapters, 4, int(seq_lens.max()), tokens)
    x = _randn(tokens, HIDDEN, seed=5)
    a = _randn(ADAPTERS, 1, RANK, HIDDEN, seed=6)
    b = _randn(ADAPTERS, 1, OUT, RANK, seed=7)
    outs = []
    for ops in (upstream, grouped):
        shrunk = torch.zeros(tokens, RANK)
        ops.sgmv_shrink(x, a, shrunk, *meta, 2.0)
        full = _randn(tokens, OUT, seed=8)
        ops.sgmv_expand(shrunk, b, full, *meta, add_inputs=True)
        sliced = _randn(tokens, OUT + 8, seed=9)
        ops.sgmv_expand_slice(shrunk, b, sliced, *meta, 4, OUT, add_inputs=True)
        outs.append((shrunk, full, sliced))
    for ours, theirs in zip(outs[1], outs[0], strict=True):
        torch.testing.assert_close(ours, theirs)


def test_vllm_loads_the_plugin_and_it_patches_the_cpu_wrapper(monkeypatch) -> None:
    from vllm.lora.punica_wrapper import punica_cpu

    names = {ep.value for ep in entry_points(group="vllm.general_plugins")}
    assert "serving.cpu_lora_ops:register" in names  # pyproject's entry point is installed
    saved = {name: getattr(punica_cpu, name) for name in grouped.OPS}
    try:
        monkeypatch.setenv(grouped.ENV_SWITCH, "0")
        assert grouped.install() is False and punica_cpu.sgmv_shrink is saved["sgmv_shrink"]
        monkeypatch.setenv(grouped.ENV_SWITCH, "1")
        assert grouped.install() is True
        assert all(getattr(punica_cpu, name) is op for name, op in grouped.OPS.items())
    finally:
        for name, op in saved.items():
            setattr(punica_cpu, name, op)
