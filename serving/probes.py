"""Judging a swap: does the engine serve the adapter the learner published?

After loading version v, an engine computes teacher-forced logprobs of the probe (a fixed prompt
and a fixed continuation, the same tokens for every version) and compares them with the
learner's. Two questions, both robust to 16-bit numerics:

1. Close enough? The mean |engine - learner| gap must be within ``atol`` and the largest within
   ``max_atol`` (float32: 1e-3 both, engine and learner agree to ~1e-6; 16-bit: a mean of 0.1
   and a max of 0.5, since bf16 logits differ by a few hundredths from run to run and a single
   token can differ more).
2. The new version, not the previous one? When the learner's own numbers for v and v-1 differ
   by more than the tolerance, the engine's answer must be nearer v's than v-1's; a swap that
   silently kept serving the old weights fails here even when both are "close" in 16-bit. When
   the two versions are closer than the tolerance (a tiny step), logprobs cannot tell them
   apart.
3. The weights the kernels use? Where the engine reads its LoRA slot back
   (``serving.lora_readback``), the served weights must equal the published files' weights in
   the engine's dtype. One bf16 step of one element shows there, so a stale or wrong adapter
   fails in bf16 however small the update; the version is ``distinguishable`` whenever its
   weights differ from the previous version's at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from serving.lora_readback import READBACK_RTOL
from serving.types import AdapterProbe, ProbeResult

MAX_ATOL_FACTOR = 5.0  # 16-bit: one token may differ this many times the mean tolerance


def tolerances(dtype: str, atol: float = 0.0) -> tuple[float, float]:
    """(mean, max) tolerances for an engine dtype; ``atol`` > 0 overrides the mean one."""
    if dtype == "float32":
        mean = atol or 1e-3
        return mean, mean
    mean = atol or 0.1
    return mean, mean * MAX_ATOL_FACTOR


@dataclass(frozen=True)
class Readback:
    """What an engine's weight readback found: the served weights' relative gap to this
    version's files, and this version's files' gap to the previous version's (None: no
    previous version to compare)."""

    gap: float
    step: float | None = None


def judge_probe(
    version: int,
    engine_id: str,
    probe: AdapterProbe,
    served: Sequence[float],
    previous: AdapterProbe | None,
    dtype: str,
    atol: float = 0.0,
    weights_ok: bool = True,
    readback: Readback | None = None,
) -> ProbeResult:
    """The verdict on ``served`` (the engine's logprobs of ``probe``'s continuation)."""
    mean_atol, max_atol = tolerances(dtype, atol)
    gaps = [abs(a - b) for a, b in zip(served, probe.logprobs, strict=True)]
    reference_gap = max(
        (abs(a - b) for a, b in zip(probe.logprobs, probe.reference_logprobs, strict=False)),
        default=0.0,
    )
    distinguishable, nearer_previous = False, False
    if previous is not None and _same_tokens(probe, previous):
        step = _mean_gap(probe.logprobs, previous.logprobs)
        distinguishable = step > mean_atol
        if distinguishable:
            nearer_previous = _mean_gap(served, previous.logprobs) <= _mean_gap(
                served, probe.logprobs
            )
    if readback is not None and readback.step is not None and readback.step > READBACK_RTOL:
        distinguishable = True
    return ProbeResult(
        version=version,
        engine_id=engine_id,
        max_abs_diff=max(gaps, default=0.0),
        mean_abs_diff=sum(gaps) / len(gaps) if gaps else 0.0,
        reference_gap=reference_gap,
        atol=mean_atol,
        max_atol=max_atol,
        distinguishable=distinguishable,
        nearer_previous=nearer_previous,
        weights_ok=weights_ok,
        weights_read=readback is not None,
        weights_gap=readback.gap if readback is not None else 0.0,
        weights_rtol=READBACK_RTOL if readback is not None else 0.0,
    )


def _same_tokens(a: AdapterProbe, b: AdapterProbe) -> bool:
    return (a.prompt_token_ids, a.completion_token_ids) == (
        b.prompt_token_ids,
        b.completion_token_ids,
    )


def _mean_gap(a: Sequence[float], b: Sequence[float]) -> float:
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / max(1, len(a))
