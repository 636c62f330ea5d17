"""Which tasks a run trains on and which it holds out: decided here, and only here.

The farm's curriculum samples the training tasks, the warm start exports demonstrations of them,
and every evaluation (the farm's before/after, ``rlfarm eval``, the benches) plays the held-out
ones. All of them call ``task_split``, so the warm start can never see an evaluation task. A fixed,
seeded share of each tier's tasks is held out; the split is stable for a seed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cluster.config import CurriculumSettings, FarmConfig


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


@dataclass(frozen=True)
class TaskSplit:
    train: list[TaskRef]
    heldout: list[TaskRef]


def task_split(config: FarmConfig, catalog_tasks=None) -> TaskSplit:
    """The run's (training, held-out) tasks: those of ``config.curriculum``, split by its
    ``holdout_fraction`` with ``run.seed``. ``catalog_tasks`` defaults to the AWS task catalog."""
    if catalog_tasks is None:
        from env.catalog import load_catalog

        catalog_tasks = load_catalog().tasks
    tasks = select_tasks(catalog_tasks, config.curriculum)
    train, held = split_holdout(tasks, config.curriculum.holdout_fraction, config.run.seed)
    return TaskSplit(train, held)
