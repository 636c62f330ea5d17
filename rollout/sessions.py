"""Which environment a run plays, from ``EnvSettings``: one place that picks the backend.

``open_sessions`` gives the session factory rollout workers and ``rlfarm eval`` use;
``env_tasks`` gives the tasks the env names (the AWS catalog, ``env.tasks``, or the Python env's
own ``tasks``), which the farm splits into training and held-out tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

from rollout.config import EnvSettings
from rollout.environment import EnvSessions, EnvTask


def open_sessions(settings: EnvSettings, max_steps: int, threads: int = 64) -> EnvSessions:
    """A session factory for this process (close it when done)."""
    if settings.backend == "openenv":
        from rollout.openenv_env import OpenEnvSessions

        return OpenEnvSessions(settings)
    if settings.backend == "python":
        from rollout.python_env import PythonEnvSessions

        return PythonEnvSessions(settings, threads=threads)
    from rollout.aws_env import AwsSessions

    return AwsSessions(settings, max_steps, threads=threads)


def env_tasks(settings: EnvSettings) -> list[EnvTask]:
    """Every task the configured env can reset to, with its tier."""
    if settings.backend == "openenv":
        return [EnvTask(t.id, t.tier) for t in settings.tasks or []]
    if settings.backend == "python":
        from rollout.python_env import factory_tasks, load_factory

        return factory_tasks(load_factory(settings.factory or ""), settings)
    from env.catalog import load_catalog

    return [EnvTask(t.id, t.tier) for t in load_catalog().tasks]


@dataclass(frozen=True)
class Renamer:
    """Renamed copies of an env's tasks (same logic, fresh resource names), named by task id so
    any process rebuilds them: the k-th ``held_out`` copy (the evaluation's ``new_names`` view,
    names no training sees) or the k-th ``training`` copy (what RL plays). None for a task with
    nothing to rename; an env without renamed copies renames nothing."""

    renamable: frozenset[str] = frozenset()

    def held_out(self, task_id: str, k: int) -> str | None:
        return self._copy(task_id, "eval", k)

    def training(self, task_id: str, k: int) -> str | None:
        return self._copy(task_id, "rl", k)

    def _copy(self, task_id: str, family: str, k: int) -> str | None:
        if task_id not in self.renamable:
            return None
        from env.task_variants import variant_id

        return variant_id(task_id, family, k)


def task_renamer(settings: EnvSettings) -> Renamer:
    """The configured env's renamed copies: the AWS env renames tasks that name a resource
    (``env.task_variants``); other envs have none."""
    if not settings.is_aws:
        return Renamer()
    from env.catalog import load_catalog
    from env.task_variants import renamable_names

    return Renamer(frozenset(t.id for t in load_catalog() if renamable_names(t)))


def task_operations(settings: EnvSettings, task_ids: list[str]) -> dict[str, list[str]]:
    """The operations each task's reference solution uses (AWS: ``service operation`` pairs of
    its canonical commands), for reports of what training showed; {} for envs that name none."""
    if not settings.is_aws:
        return {}
    from env.catalog import load_catalog

    catalog = load_catalog()
    return {task_id: catalog.by_id(task_id).operations() for task_id in task_ids}
