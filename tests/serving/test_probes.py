"""Judging a swap in 16-bit: numeric noise passes, an engine still serving the previous version
fails, and a step too small for logprobs to see is judged by the weight readback.

The learner's numbers come from a real model pair (base vs a LoRA of known weights, via peft);
the engine's answers are those numbers plus noise of bf16 magnitude, since this machine's vLLM
runs float32."""

from __future__ import annotations

import random

import pytest

from serving.probes import Readback, judge_probe
from serving.types import AdapterProbe

BF16_NOISE = 0.03  # a bf16 logit differs from float32 by ~2^-8 relative: a few hundredths


@pytest.fixture(scope="module")
def probes(reference):
    """(previous, new) probes on the same fixed tokens: two real adapters' logprobs."""
    prompt = reference.prompt("probe: list the s3 buckets")
    completion = reference.greedy(None, prompt, 8)
    ids, start = prompt + completion, len(prompt)
    base = reference.logprobs(None, ids, start)

    def probe(seed: int, scale: float) -> AdapterProbe:
        adapter = reference.make_adapter(seed=seed, scale=scale)
        return AdapterProbe(prompt, completion, reference.logprobs(adapter, ids, start), base)

    # One adapter's LoRA B at 30% then at full size: a real step between two versions.
    return probe(65, 0.3), probe(65, 1.0)


def _noisy(values, seed):
    rng = random.Random(seed)
    return [v + rng.gauss(0.0, BF16_NOISE) for v in values]


def test_bf16_noise_passes_and_a_stale_engine_fails(probes):
    previous, new = probes
    for seed in range(20):  # 20 draws of the noise
        good = judge_probe(2, "e", new, _noisy(new.logprobs, seed), previous, "bfloat16")
        assert good.matches and good.distinguishable, good
        stale = judge_probe(2, "e", new, _noisy(previous.logprobs, seed), previous, "bfloat16")
        assert not stale.matches and stale.nearer_previous, stale


def test_a_step_smaller_than_the_noise_is_reported_not_failed(probes):
    _, new = probes
    tiny_step = AdapterProbe(new.prompt_token_ids, new.completion_token_ids,
                             [v + 1e-4 for v in new.logprobs], new.reference_logprobs)  # fmt: skip
    result = judge_probe(3, "e", tiny_step, _noisy(new.logprobs, 0), new, "bfloat16")
    assert result.matches and not result.distinguishable
    assert not judge_probe(
        3, "e", tiny_step, new.logprobs, new, "bfloat16", weights_ok=False
    ).matches
    # The weights can tell the versions apart where logprobs cannot: the readback decides.
    landed = judge_probe(3, "e", tiny_step, _noisy(new.logprobs, 0), new, "bfloat16",
                         readback=Readback(gap=0.0, step=3e-3))  # fmt: skip
    assert landed.matches and landed.distinguishable and landed.weights_read
    stale = judge_probe(3, "e", tiny_step, _noisy(new.logprobs, 0), new, "bfloat16",
                        readback=Readback(gap=3e-3, step=3e-3))  # fmt: skip
    assert not stale.matches


def test_float32_stays_exact(probes):
    previous, new = probes
    assert judge_probe(2, "e", new, [v + 5e-7 for v in new.logprobs], previous, "float32").matches
    off = judge_probe(2, "e", new, [v + 0.01 for v in new.logprobs], previous, "float32")
    assert not off.matches and off.mean_abs_diff == pytest.approx(0.01)
