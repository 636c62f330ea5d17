"""Which environment a run plays: one ``EnvBackend`` per ``env.backend`` value, found by name.

Each backend registers itself under the ``rlfarm.env_backends`` entry points (pyproject.toml):
the AWS env (``local``, ``http``: ``rollout.aws_backend``), a Python env class (``python``) and an
OpenEnv server (``openenv``) are found the way a third party's env would be, so this module and
the generic layers above it (the farm, evaluation, config) name no particular env.

A backend gives the session factory rollout workers and ``rlfarm eval`` use, the tasks the env
names (which the farm splits into training and held-out tasks), their renamed copies, and the
operations each task's reference solution uses (for reports of what training never showed).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Protocol

from rollout.config import EnvSettings
from rollout.env_contract import EnvSessions, EnvTask, renamed_task_id

ENTRY_POINTS = "rlfarm.env_backends"


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
        return renamed_task_id(task_id, family, k) if task_id in self.renamable else None


class EnvBackend(Protocol):
    """What the farm needs from one kind of environment."""

    # The env's tier names, easiest first; () when its tasks name their own tiers.
    tiers: tuple[str, ...]

    def sessions(self, settings: EnvSettings, max_steps: int, threads: int) -> EnvSessions:
        """A session factory for this process (close it when done)."""
        ...

    def tasks(self, settings: EnvSettings) -> list[EnvTask]:
        """Every task the env can reset to, with its tier."""
        ...

    def renamer(self, settings: EnvSettings) -> Renamer:
        """The env's renamed copies (``Renamer()`` for an env that has none)."""
        ...

    def operations(self, settings: EnvSettings, task_ids: list[str]) -> dict[str, list[str]]:
        """The operations each task's reference solution uses; {} for envs that name none."""
        ...


@cache
def _load(name: str) -> EnvBackend:
    from importlib.metadata import entry_points

    found = {e.name: e for e in entry_points(group=ENTRY_POINTS)}
    if name not in found:
        raise ValueError(
            f"env.backend={name!r} has no registered env backend (registered: {sorted(found)}); "
            "if that list is empty, rlfarm is not installed: run `make setup` or `pip install -e .`"
        )
    return found[name].load()


def env_backend(settings: EnvSettings) -> EnvBackend:
    """The backend ``settings.backend`` names."""
    return _load(settings.backend)


def open_sessions(settings: EnvSettings, max_steps: int, threads: int = 64) -> EnvSessions:
    """A session factory for this process (close it when done)."""
    return env_backend(settings).sessions(settings, max_steps, threads)


def env_tasks(settings: EnvSettings) -> list[EnvTask]:
    """Every task the configured env can reset to, with its tier."""
    return env_backend(settings).tasks(settings)


def task_renamer(settings: EnvSettings) -> Renamer:
    """The configured env's renamed copies."""
    return env_backend(settings).renamer(settings)


def task_operations(settings: EnvSettings, task_ids: list[str]) -> dict[str, list[str]]:
    """The operations each task's reference solution uses, for reports of what training showed."""
    return env_backend(settings).operations(settings, task_ids)
