"""Which environment a run plays, from ``EnvSettings``: one place that picks the backend.

``open_sessions`` gives the session factory rollout workers and ``rlfarm eval`` use;
``env_tasks`` gives the tasks the env names (the AWS catalog, ``env.tasks``, or the Python env's
own ``tasks``), which the farm splits into training and held-out tasks.
"""

from __future__ import annotations

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
