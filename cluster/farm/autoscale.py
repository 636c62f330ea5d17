"""``env.workers: auto``: the controller that sizes the env workers from what the farm measures.

Every booked update closes a window: episodes finished per second at the worker count of that
window, with the engines' batch fill and waiting sequences (``cluster.farm.utilisation``). The
best count depends on things no config knows (how long the env takes per step, how many cores the
env's sandboxes take from the engine, the learner's share of the box), so the controller measures
instead of predicting: it climbs a ladder of counts (x1.5 per rung, between ``env.min_workers``
and ``env.max_workers``) and settles on the fewest workers within ``gain`` of the best rung it
measured (fewer workers, fewer sandbox processes competing with the engine for cores).

Update windows are noisy (on the tiny farm one count's windows ran 3.95 to 10.35 episodes/s), so a
rung is judged on ``samples`` samples, each of at least ``sample_episodes`` episodes (whole windows
merged: one in-flight cap's worth of episodes by default, so one slow group weighs little), after
the window its change lands in.

It does not climb while the engines are full and queueing (every batch slot busy, sequences
waiting): more workers would only lengthen the queue. It notices a changed world (a slower env,
another job on the box) when its last ``samples`` samples all sit more than ``drift`` off the
settled rate on the same side (one noisy sample is not enough), or every ``reprobe`` samples
anyway: it forgets what it measured and climbs again from where it is. A count set by hand
(``rlfarm scale``) becomes its new starting point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import fmean, stdev

from cluster.base.config import FarmConfig


@dataclass(frozen=True)
class Window:
    """What the farm did between two booked updates."""

    workers: int
    seconds: float
    episodes: int
    batch_fill: float | None = None  # running sequences per engine step / max_num_seqs
    waiting: int | None = None  # sequences queued in the engines at the window's end

    @property
    def rate(self) -> float:
        return self.episodes / self.seconds if self.seconds > 0 else 0.0

    @property
    def engines_full(self) -> bool:
        return bool(self.waiting) and (self.batch_fill or 0.0) >= 0.95


def ladder(low: int, high: int, ratio: float = 1.5) -> list[int]:
    """Worker counts the controller tries: ``low``, then x``ratio`` (at least +1) up to
    ``high``, which is always a rung."""
    rungs = [low]
    while rungs[-1] < high:
        rungs.append(min(high, max(rungs[-1] + 1, round(rungs[-1] * ratio))))
    return rungs


@dataclass(frozen=True)
class Decision:
    workers: int
    why: str


@dataclass(frozen=True)
class Estimate:
    """A rung's rate: the mean of its samples and the standard error of that mean."""

    mean: float
    se: float

    @classmethod
    def of(cls, rates: list[float]) -> Estimate:
        se = stdev(rates) / math.sqrt(len(rates)) if len(rates) > 1 else math.inf
        return cls(fmean(rates), se)


@dataclass
class WorkerAutoscaler:
    low: int
    high: int
    start: int
    samples: int = 3  # samples judged per rung (after the window a change lands in)
    sample_episodes: int = 0  # windows merge until a sample holds this many episodes
    gain: float = 0.05  # a rung must beat the fewest-workers choice by this to be chosen
    drift: float = 0.25  # every recent sample this far off the settled rate: the world changed
    reprobe: int = 30  # samples settled before probing the neighbours again
    rungs: list[int] = field(init=False)
    current: int = field(init=False)
    measured: dict[int, Estimate] = field(init=False, default_factory=dict)
    _recent: list[float] = field(init=False, default_factory=list)  # sample rates at current
    _pending: tuple[float, int] = field(init=False, default=(0.0, 0))  # seconds, episodes
    _settle: bool = field(init=False, default=True)
    _settled_for: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if not self.low <= self.start <= self.high:
            raise ValueError(f"start {self.start} outside {self.low}..{self.high}")
        self.rungs = ladder(self.low, self.high)
        self._rebase(self.start)

    @property
    def rates(self) -> dict[int, float]:
        """Rung -> the episodes/s it was judged at."""
        return {n: e.mean for n, e in self.measured.items()}

    def observe(self, window: Window) -> Decision | None:
        """Take one window; a new worker count when the controller moves, else None."""
        if window.workers != self.current:  # resized by hand, or a move not yet applied
            self._rebase(window.workers)
            return None
        if self._settle:  # groups of the old count were still in flight in this window
            self._settle = False
            return None
        seconds, episodes = self._pending
        seconds, episodes = seconds + window.seconds, episodes + window.episodes
        if episodes < max(1, self.sample_episodes) or seconds <= 0:
            self._pending = (seconds, episodes)
            return None
        self._pending = (0.0, 0)
        self._recent = [*self._recent, episodes / seconds]
        judged = self.measured.get(self.current)
        if judged is None:
            if len(self._recent) < self.samples:
                return None
            return self._judge(Estimate.of(self._recent), window, "")
        self._recent = self._recent[-self.samples :]
        self._settled_for += 1
        latest = Estimate.of(self._recent)
        moved = self._moved(judged.mean)
        if not moved and self._settled_for < self.reprobe:
            return None
        why = (
            f"rate {latest.mean:.2f}/s moved from {judged.mean:.2f}/s at {self.current} workers"
            if moved
            else f"{self.reprobe} samples settled at {self.current} workers: probing again"
        )
        self.measured = {}
        return self._judge(latest, window, why)

    def _moved(self, judged: float) -> bool:
        """The world changed: the last ``samples`` samples all off the judged rate by more
        than ``drift``, on the same side (one noisy sample, or a noisy mean, is not enough)."""
        recent = self._recent
        if len(recent) < self.samples:
            return False
        return all(r < (1 - self.drift) * judged for r in recent) or all(
            r > (1 + self.drift) * judged for r in recent
        )

    def _judge(self, estimate: Estimate, window: Window, why: str) -> Decision | None:
        self.measured[self.current] = estimate
        self._settled_for = 0
        rate = estimate.mean
        below, above = self._neighbours()
        climbing = below is None or below not in self.measured or self.rates[below] <= rate
        if (
            above is not None
            and above not in self.measured
            and not window.engines_full
            and (climbing)
        ):
            return self._move(above, why or f"{rate:.2f} episodes/s at {self.current}: "
                              f"trying {above}")  # fmt: skip
        above_better = above in self.measured and self.rates[above] > (1 + self.gain) * rate
        if below is not None and below not in self.measured and not above_better:
            return self._move(below, why or f"{rate:.2f} episodes/s at {self.current}: "
                              f"trying {below}")  # fmt: skip
        best = max(self.rates.values())
        choice = min(n for n, r in self.rates.items() if r >= (1 - self.gain) * best)
        if choice != self.current:
            chosen = self.measured[choice]
            why = (f"settling: {choice} workers ran {chosen.mean:.2f} +- {chosen.se:.2f} "
                   f"episodes/s, within {self.gain:.0%} of the best {best:.2f}")  # fmt: skip
            return self._move(choice, why)
        return None

    def _neighbours(self) -> tuple[int | None, int | None]:
        i = self.rungs.index(self.current)
        return (self.rungs[i - 1] if i > 0 else None,
                self.rungs[i + 1] if i + 1 < len(self.rungs) else None)  # fmt: skip

    def _move(self, workers: int, why: str) -> Decision:
        self.current, self._recent, self._settle = workers, [], True
        self._pending = (0.0, 0)
        return Decision(workers, why)

    def _rebase(self, workers: int) -> None:
        """Start over at ``workers`` (a start, or a count set by hand)."""
        workers = min(self.high, max(self.low, workers))
        if workers not in self.rungs:
            self.rungs = sorted({*self.rungs, workers})
        self.current, self.measured, self._recent, self._settle = workers, {}, [], True
        self._pending, self._settled_for = (0.0, 0), 0


def autoscaler_for(config: FarmConfig) -> WorkerAutoscaler | None:
    """The controller of a run with ``env.autoscale`` (``env.workers: auto``), else None."""
    if not config.env.autoscale:
        return None
    low, high = config.env_worker_range
    start = min(high, max(low, config.env.workers))
    return WorkerAutoscaler(low, high, start, sample_episodes=sample_episodes(config))


def sample_episodes(config: FarmConfig) -> int:
    """One in-flight cap's worth of episodes: a sample spans a full turnover of the groups in
    flight, so which count started them stops mattering and one slow group weighs little."""
    return config.inflight_groups * config.rollout.group_size
