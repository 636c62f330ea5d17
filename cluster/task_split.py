"""Which tasks a run trains on and which it holds out: decided here, and only here.

The tasks are the env's (``rollout.sessions.env_tasks``: the AWS catalog, or what a generic env
names). The farm's curriculum samples the training tasks, the warm start exports demonstrations
of them, and every evaluation (the farm's before/after, ``rlfarm eval``, the benches) plays the
held-out ones. All of them call ``task_split``, so the warm start can never see an evaluation
task. A fixed, seeded share of each tier's tasks is held out; the split is stable for a seed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cluster.config import ConfigError, CurriculumSettings, FarmConfig
from rollout.environment import EnvTask

TaskRef = EnvTask  # the farm's name for an env's task


def tier_order(tasks, settings: CurriculumSettings) -> list[str]:
    """Tiers easiest first: ``curriculum.tiers`` if set, else the env's tiers in the order its
    tasks name them (the AWS catalog lists them easiest first)."""
    if settings.tiers is not None:
        return list(settings.tiers)
    return list(dict.fromkeys(t.tier for t in tasks))


def select_tasks(catalog_tasks, settings: CurriculumSettings) -> list[TaskRef]:
    """The tasks a run uses: those of the curriculum's tiers, narrowed to ``settings.tasks``."""
    tiers = set(tier_order(catalog_tasks, settings))
    refs = [TaskRef(t.id, t.tier) for t in catalog_tasks if t.tier in tiers]
    if not refs:
        known = sorted({t.tier for t in catalog_tasks})
        raise ConfigError(
            f"curriculum.tiers {settings.tiers} matches no task: the env's tiers are {known}; "
            "set curriculum.tiers to some of them (or null for all) and curriculum.start_tier"
        )
    if settings.start_tier is not None and settings.start_tier not in {t.tier for t in refs}:
        raise ConfigError(
            f"curriculum.start_tier={settings.start_tier!r} has no task; the env's tiers are "
            f"{sorted({t.tier for t in refs})}"
        )
    if settings.tasks is None:
        return refs
    known = {t.id for t in refs}
    unknown = [t for t in settings.tasks if t not in known]
    if unknown:
        raise ConfigError(
            f"curriculum.tasks names {unknown}, which are not tasks of tiers "
            f"{sorted(tiers)}; see `rlfarm tasks list` (the AWS env) or the env's task list"
        )
    return [t for t in refs if t.id in set(settings.tasks)]


def split_holdout(
    tasks: list[TaskRef], fraction: float, seed: int
) -> tuple[list[TaskRef], list[TaskRef]]:
    """(train, held out), stable for a seed: each tier holds out ``fraction`` of its tasks."""
    train, held = [], []
    for tier in dict.fromkeys(t.tier for t in tasks):
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
    ``holdout_fraction`` with ``run.seed``. ``catalog_tasks`` defaults to the env's tasks."""
    if catalog_tasks is None:
        from rollout.sessions import env_tasks

        catalog_tasks = env_tasks(config.env)
    tasks = select_tasks(catalog_tasks, config.curriculum)
    train, held = split_holdout(tasks, config.curriculum.holdout_fraction, config.run.seed)
    return TaskSplit(train, held)
