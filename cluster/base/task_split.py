"""Which tasks a run trains on and which it holds out: decided here, and only here.

The tasks are the env's (``rollout.env_backends.env_tasks``: the AWS catalog, or what a generic env
names). The farm's curriculum samples the training tasks, the warm start exports demonstrations
of them, and every evaluation (the farm's before/after, ``rlfarm eval``, the benches) plays the
held-out ones. All of them call ``task_split``, so the warm start can never see an evaluation
task. A fixed, seeded share of each tier's tasks is held out; the split is stable for a seed.

Held-out tasks come in two views, which measure different things:

- ``new_names``: renamed copies of the *training* tasks (the env's ``eval`` family of renamed
  copies: same operations, resource names and values that no SFT row and no RL group ever
  shows). What RL can teach: the skills it practised, on inputs it never saw.
- ``new_tasks``: the held-out task ids. They may need operations no training task uses, which an
  outcome reward cannot teach; the AWS report lists them (``env.task_spec.Task.operations``).

An env without renamed copies (a generic env) has the ``new_tasks`` view only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from cluster.base.config import ConfigError, CurriculumSettings, FarmConfig
from rollout.env_contract import EnvTask


def tier_order(tasks, settings: CurriculumSettings) -> list[str]:
    """Tiers easiest first: ``curriculum.tiers`` if set, else the env's tiers in the order its
    tasks name them (the AWS catalog lists them easiest first)."""
    if settings.tiers is not None:
        return list(settings.tiers)
    return list(dict.fromkeys(t.tier for t in tasks))


def select_tasks(catalog_tasks, settings: CurriculumSettings) -> list[EnvTask]:
    """The tasks a run uses: those of the curriculum's tiers, narrowed to ``settings.tasks``."""
    tiers = set(tier_order(catalog_tasks, settings))
    refs = [EnvTask(t.id, t.tier) for t in catalog_tasks if t.tier in tiers]
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
    tasks: list[EnvTask], fraction: float, seed: int
) -> tuple[list[EnvTask], list[EnvTask]]:
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


NEW_NAMES = "new_names"
NEW_TASKS = "new_tasks"
VIEWS = (NEW_NAMES, NEW_TASKS)


@dataclass(frozen=True)
class TaskSplit:
    """``train``: what the curriculum samples (and the warm start demonstrates); ``heldout``: the
    held-out task ids (the ``new_tasks`` view); ``renamed``: the ``new_names`` view."""

    train: list[EnvTask]
    heldout: list[EnvTask]
    renamed: list[EnvTask] = field(default_factory=list)

    def views(self) -> dict[str, list[EnvTask]]:
        """The held-out views this env has, by name (``new_names`` first when there is one)."""
        views = {NEW_NAMES: self.renamed, NEW_TASKS: self.heldout}
        return {name: tasks for name, tasks in views.items() if tasks}


def unseen_operations(config: FarmConfig, split: TaskSplit) -> dict[str, list[str]]:
    """Per held-out task, the operations its solution needs that no training task's solution
    uses: what an outcome reward cannot teach (empty for envs that name no operations)."""
    from rollout.env_backends import task_operations

    ops = task_operations(config.env, [t.id for t in [*split.train, *split.heldout]])
    if not ops:
        return {}
    trained = {op for t in split.train for op in ops[t.id]}
    return {t.id: [op for op in ops[t.id] if op not in trained] for t in split.heldout}


def task_split(config: FarmConfig, catalog_tasks=None) -> TaskSplit:
    """The run's (training, held-out) tasks: those of ``config.curriculum``, split by its
    ``holdout_fraction`` with ``run.seed``, and ``run.eval_variants`` renamed copies of every
    training task the env can rename. ``catalog_tasks`` defaults to the env's tasks."""
    from rollout.env_backends import task_renamer

    if catalog_tasks is None:
        from rollout.env_backends import env_tasks

        catalog_tasks = env_tasks(config.env)
    tasks = select_tasks(catalog_tasks, config.curriculum)
    train, held = split_holdout(tasks, config.curriculum.holdout_fraction, config.run.seed)
    rename = task_renamer(config.env)
    renamed = [
        EnvTask(copy, task.tier)
        for task in train
        for k in range(config.run.eval_variants)
        if (copy := rename.held_out(task.id, k)) is not None
    ]
    return TaskSplit(train, held, renamed)
