"""Which task the next group plays: a curriculum over tiers, with held-out tasks kept apart.

Tiers unlock in order. The hardest unlocked tier (the frontier) gets ``frontier_weight`` of the
groups, the easier unlocked tiers share the rest; once the frontier's success rate over the last
``window`` episodes reaches ``promote_at`` the next tier unlocks. A fixed, seeded share of each
tier's tasks is held out of training for the before/after evaluation.
"""

from __future__ import annotations

import hashlib
import random
from collections import deque
from dataclasses import dataclass

from cluster.config import CurriculumSettings


@dataclass(frozen=True)
class TaskRef:
    id: str
    tier: str


def select_tasks(catalog_tasks, settings: CurriculumSettings) -> list[TaskRef]:
    """The tasks a run uses: those of ``settings.tiers``, narrowed to ``settings.tasks`` if set."""
    refs = [TaskRef(t.id, t.tier) for t in catalog_tasks if t.tier in settings.tiers]
    if settings.tasks is None:
        return refs
    known = {t.id for t in refs}
    unknown = [t for t in settings.tasks if t not in known]
    if unknown:
        raise ValueError(
            f"curriculum.tasks names {unknown}, which are not tasks of tiers {settings.tiers}; "
            "see `rlfarm tasks list`"
        )
    return [t for t in refs if t.id in set(settings.tasks)]


def split_holdout(
    tasks: list[TaskRef], fraction: float, seed: int
) -> tuple[list[TaskRef], list[TaskRef]]:
    """(train, held out), stable for a seed: each tier holds out ``fraction`` of its tasks."""
    train, held = [], []
    for tier in sorted({t.tier for t in tasks}):
        in_tier = sorted(
            (t for t in tasks if t.tier == tier),
            key=lambda t: hashlib.sha256(f"{seed}:{t.id}".encode()).hexdigest(),
        )
        n_held = round(len(in_tier) * fraction) if len(in_tier) >= 3 else 0
        held += in_tier[:n_held]
        train += in_tier[n_held:]
    return train, held


class CurriculumSampler:
    def __init__(self, tasks: list[TaskRef], settings: CurriculumSettings, seed: int) -> None:
        self.settings = settings
        self.by_tier = {
            tier: [t for t in tasks if t.tier == tier]
            for tier in settings.tiers
            if any(t.tier == tier for t in tasks)
        }
        if not self.by_tier:
            raise ValueError("the curriculum has no tasks: check curriculum.tiers")
        self.order = list(self.by_tier)
        self.frontier = (
            self.order.index(settings.start_tier) if settings.start_tier in self.order else 0
        )
        self.recent: dict[str, deque[bool]] = {t: deque(maxlen=settings.window) for t in self.order}
        self.rng = random.Random(seed)

    @property
    def frontier_tier(self) -> str:
        return self.order[self.frontier]

    def next(self) -> tuple[TaskRef, int]:
        """The next task and the seed of its group's initial state."""
        unlocked = self.order[: self.frontier + 1]
        if len(unlocked) == 1 or self.rng.random() < self.settings.frontier_weight:
            tier = unlocked[-1]
        else:
            tier = self.rng.choice(unlocked[:-1])
        return self.rng.choice(self.by_tier[tier]), self.rng.randrange(2**31)

    def observe(self, tier: str, achieved: list[bool]) -> bool:
        """Record episode outcomes; returns True when this promoted the frontier."""
        if tier not in self.recent:
            return False
        self.recent[tier].extend(achieved)
        window = self.recent[self.frontier_tier]
        if (
            self.frontier + 1 < len(self.order)
            and len(window) >= self.settings.window
            and sum(window) / len(window) >= self.settings.promote_at
        ):
            self.frontier += 1
            return True
        return False

    def success_rates(self) -> dict[str, float]:
        return {t: (sum(d) / len(d) if d else 0.0) for t, d in self.recent.items()}
