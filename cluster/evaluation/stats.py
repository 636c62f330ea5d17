"""Is B better than A? A paired, task-stratified comparison of success rates that can say no.

Two policies evaluated on the same tasks (and, with seeded sampling, on common random numbers)
are compared task by task: each stratum (a task, or a task under one learner seed when several
runs are pooled) contributes ``d = rate_B - rate_A``, its difference in success rate, and the
effect is the mean of ``d`` over strata, so every task weighs the same whatever its episode count.

- 95% interval: percentile bootstrap over strata (resampling tasks, the unit the conclusion is
  about; episodes of one task are not independent evidence about other tasks).
- p-value: two-sided sign-flip (paired permutation) test over strata. Under "A and B are the same
  policy" the labels of a stratum's two rates are exchangeable, so each ``d`` is as likely
  negative as positive; the p-value is the share of sign assignments whose mean is at least as
  far from 0 as the observed one. Exact when few strata differ, else Monte Carlo (seeded).

Pure functions of counts; no engine, no env.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

# Strata that differ, up to this many, are tested by enumerating every sign assignment.
EXACT_MAX = 16
RESAMPLES = 20_000

# stratum -> (successes, episodes); or (sum of a [0, 1]-bounded score, episodes) for mean scores
Counts = Mapping[str, tuple[float, int]]


@dataclass(frozen=True)
class PairedDifference:
    """B minus A on the strata both played. Rates are means of per-stratum rates."""

    a: str
    b: str
    strata: int
    episodes_a: int
    episodes_b: int
    rate_a: float
    rate_b: float
    difference: float
    ci95: tuple[float, float]
    p_value: float
    b_better: int  # strata where B's rate is higher
    a_better: int

    def as_dict(self) -> dict:
        out = asdict(self)
        out["ci95"] = list(self.ci95)
        return out

    def describe(self) -> str:
        low, high = self.ci95
        return (
            f"{self.b} - {self.a}: {100 * self.difference:+.1f} points "
            f"[{100 * low:+.1f}, {100 * high:+.1f}], p = {self.p_value:.3g} "
            f"({self.strata} tasks; better on {self.b_better}, worse on {self.a_better})"
        )


def paired_difference(
    a: Counts, b: Counts, names: tuple[str, str] = ("A", "B"), seed: int = 0
) -> PairedDifference:
    """Compare B with A over the strata both have episodes of (see the module docstring)."""
    strata = sorted(k for k in a.keys() & b.keys() if a[k][1] > 0 and b[k][1] > 0)
    if not strata:
        raise ValueError(f"{names[0]} and {names[1]} share no evaluated task: nothing to pair")
    rate_a = np.array([a[k][0] / a[k][1] for k in strata])
    rate_b = np.array([b[k][0] / b[k][1] for k in strata])
    diffs = rate_b - rate_a
    rng = np.random.default_rng(seed)
    return PairedDifference(
        a=names[0],
        b=names[1],
        strata=len(strata),
        episodes_a=sum(a[k][1] for k in strata),
        episodes_b=sum(b[k][1] for k in strata),
        rate_a=float(rate_a.mean()),
        rate_b=float(rate_b.mean()),
        difference=float(diffs.mean()),
        ci95=bootstrap_ci(diffs, rng),
        p_value=sign_flip_p(diffs, rng),
        b_better=int((diffs > 0).sum()),
        a_better=int((diffs < 0).sum()),
    )


def sign_flip_p(diffs: np.ndarray, rng: np.random.Generator, resamples: int = RESAMPLES) -> float:
    """Two-sided p-value of mean(diffs) = 0 by flipping the signs of the strata's differences."""
    nonzero = diffs[diffs != 0]
    n = len(nonzero)
    if n == 0:
        return 1.0
    observed = abs(nonzero.sum()) - 1e-12  # ties count as at least as extreme
    if n <= EXACT_MAX:
        bits = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
        return float((np.abs((1 - 2 * bits) @ nonzero) >= observed).mean())
    signs = rng.choice(np.array([-1.0, 1.0]), size=(resamples, n))
    extreme = int((np.abs(signs @ nonzero) >= observed).sum())
    return (extreme + 1) / (resamples + 1)


def bootstrap_ci(
    diffs: np.ndarray, rng: np.random.Generator, resamples: int = RESAMPLES // 2
) -> tuple[float, float]:
    """95% percentile-bootstrap interval of mean(diffs), resampling strata."""
    means = diffs[rng.integers(0, len(diffs), size=(resamples, len(diffs)))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(low), float(high)
