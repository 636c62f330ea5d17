"""``env.workers: auto``: the controller that sizes the env workers from what the farm measures.

Every booked update closes a window: episodes finished per second at the worker count of that
window, with the engines' batch fill and waiting sequences (``cluster.farm.utilisation``). The
best count depends on things no config knows (how long the env takes per step, how many cores the
env's sandboxes take from the engine, the learner's share of the box), so the controller measures
instead of predicting: it climbs a ladder of counts (x1.5 per rung, between ``env.min_workers``
and ``env.max_workers``), judges each rung on a few windows after the one its change lands in,
and settles on the fewest workers within ``gain`` of the best rung it measured (fewer workers,
fewer sandbox processes competing with the engine for cores).

It does not climb while the engines are full and queueing (every batch slot busy, sequences
waiting): more workers would only lengthen the queue. It notices a changed world (a slower env,
another job on the box): when the settled rung's rate moves by more than ``drift``, or every
``reprobe`` windows anyway, it forgets what it measured and climbs again from where it is.
A count set by hand (``rlfarm scale``) becomes its new starting point.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import fmean

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


@dataclass
class WorkerAutoscaler:
    low: int
    high: int
    start: int
    samples: int = 3  # windows judged per rung (after the one a change lands in)
    gain: float = 0.05  # a rung must beat the fewest-workers choice by this to be chosen
    drift: float = 0.25  # a settled rung's rate moving this much means the world changed
    reprobe: int = 30  # windows settled before probing the neighbours again
    rungs: list[int] = field(init=False)
    current: int = field(init=False)
    rates: dict[int, float] = field(init=False, default_factory=dict)  # rung -> judged rate
    _recent: list[float] = field(init=False, default_factory=list)
    _settle: bool = field(init=False, default=True)
    _settled_for: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if not self.low <= self.start <= self.high:
            raise ValueError(f"start {self.start} outside {self.low}..{self.high}")
        self.rungs = ladder(self.low, self.high)
        self._rebase(self.start)

    def observe(self, window: Window) -> Decision | None:
        """Take one window; a new worker count when the controller moves, else None."""
        if window.workers != self.current:  # resized by hand, or a move not yet applied
            self._rebase(window.workers)
            return None
        if self._settle:  # groups of the old count were still in flight in this window
            self._settle = False
            return None
        self._recent = [*self._recent, window.rate][-self.samples :]
        if len(self._recent) < self.samples:
            return None
        rate = fmean(self._recent)
        judged = self.rates.get(self.current)
        if judged is not None:
            self._settled_for += 1
            changed = abs(rate - judged) > self.drift * judged
            if not changed and self._settled_for < self.reprobe:
                return None
            why = (
                f"rate {rate:.2f}/s moved from {judged:.2f}/s at {self.current} workers"
                if changed
                else f"{self.reprobe} windows settled at {self.current} workers: probing again"
            )
            self.rates = {}
            return self._judge(rate, window, why)
        return self._judge(rate, window, "")

    def _judge(self, rate: float, window: Window, why: str) -> Decision | None:
        self.rates[self.current] = rate
        self._settled_for = 0
        below, above = self._neighbours()
        climbing = below is None or below not in self.rates or self.rates[below] <= rate
        if above is not None and above not in self.rates and not window.engines_full and climbing:
            return self._move(above, why or f"{rate:.2f} episodes/s at {self.current}: "
                              f"trying {above}")  # fmt: skip
        above_better = above in self.rates and self.rates[above] > (1 + self.gain) * rate
        if below is not None and below not in self.rates and not above_better:
            return self._move(below, why or f"{rate:.2f} episodes/s at {self.current}: "
                              f"trying {below}")  # fmt: skip
        best = max(self.rates.values())
        choice = min(n for n, r in self.rates.items() if r >= (1 - self.gain) * best)
        if choice != self.current:
            why = (f"settling: {choice} workers ran {self.rates[choice]:.2f} episodes/s, "
                   f"within {self.gain:.0%} of the best {best:.2f}")  # fmt: skip
            return self._move(choice, why)
        return None

    def _neighbours(self) -> tuple[int | None, int | None]:
        i = self.rungs.index(self.current)
        return (self.rungs[i - 1] if i > 0 else None,
                self.rungs[i + 1] if i + 1 < len(self.rungs) else None)  # fmt: skip

    def _move(self, workers: int, why: str) -> Decision:
        self.current, self._recent, self._settle = workers, [], True
        return Decision(workers, why)

    def _rebase(self, workers: int) -> None:
        """Start over at ``workers`` (a start, or a count set by hand)."""
        workers = min(self.high, max(self.low, workers))
        if workers not in self.rungs:
            self.rungs = sorted({*self.rungs, workers})
        self.current, self.rates, self._recent, self._settle = workers, {}, [], True
        self._settled_for = 0


def autoscaler_for(config: FarmConfig) -> WorkerAutoscaler | None:
    """The controller of a run with ``env.autoscale`` (``env.workers: auto``), else None."""
    if not config.env.autoscale:
        return None
    low, high = config.env_worker_range
    return WorkerAutoscaler(low, high, min(high, max(low, config.env.workers)))
