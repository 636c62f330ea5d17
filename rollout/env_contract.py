"""The one contract between the rollout loop and an environment.

An episode is: ``reset(task_id, seed)`` gives the first user turn; then, turn after turn, the
model's raw reply goes to ``step(reply)``, which answers with the next user turn, the step's reward,
and whether the episode is over. Everything is text in, text out: how a reply becomes an action (the
AWS env extracts one ``aws ...`` command) and how an observation becomes the next user turn is the
environment's business, so the loop, the learner and the ledger work the same for any env. The AWS
env is one implementation (``rollout.aws_backend``); an OpenEnv server by URL
(``rollout.openenv_backend``) and a Python env class named by an entry point
(``rollout.python_backend``) are the others. ``rollout.env_backends`` finds the one ``EnvSettings``
names.

An environment also names its tasks (``EnvTask``: id and tier); the farm's curriculum, task split,
ledger, metrics and evaluation work per task and tier for any env. An env without tiers puts
every task in one tier, ``default``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

DEFAULT_TIER = "default"


def renamed_task_id(task_id: str, family: str, k: int) -> str:
    """The id an env that offers renamed copies of its tasks resets the ``k``-th copy of
    ``task_id`` in ``family`` by (``eval``: held-out names, ``rl``: training names): the contract's
    one spelling, ``<task>@<family><k>``, which such an env parses back."""
    return f"{task_id}@{family}{k}"


@dataclass(frozen=True)
class EnvTask:
    """One task an environment can reset to, and its tier (difficulty class)."""

    id: str
    tier: str = DEFAULT_TIER


@dataclass(frozen=True)
class StepResult:
    """What the agent gets back from ``reset`` or ``step``.

    - ``text``: the next user turn, as the model will read it (after reset: the task).
    - ``reward``: this step's reward (0 on reset); an episode's return is the sum over steps.
    - ``done``: the episode is over (success, a step limit, or the env ended it).
    - ``success``: the task was achieved (implies ``done`` for the loop).
    - ``progress``: the env's partial credit in [0, 1], if it grades progress.
    - ``hints_used``: hints consumed so far, if the env offers hints.
    - ``action``: what the env executed from the reply (None when nothing usable was found).
    - ``well_formed``: the reply was in the env's expected format as written (a format metric).
    - ``info``: env-specific details for logs and episode files (never shown to the model).
    """

    text: str
    reward: float = 0.0
    done: bool = False
    success: bool = False
    progress: float = 0.0
    hints_used: int = 0
    action: str | None = None
    well_formed: bool = True
    info: dict[str, Any] = field(default_factory=dict)


class EnvSession(Protocol):
    """One episode slot of an environment. ``system_prompt`` opens every conversation (None: the
    conversation starts with the task turn)."""

    system_prompt: str | None

    async def reset(self, task_id: str, seed: int) -> StepResult: ...

    async def step(self, reply: str) -> StepResult: ...

    async def close(self) -> None: ...


class EnvSessions(Protocol):
    """Hands out fresh sessions of one environment, for one process; ``close`` frees what the
    factory owns (a sandbox process, a thread pool, connections)."""

    def new(self) -> EnvSession: ...

    def sandbox_pid(self) -> int | None: ...

    def close(self) -> None: ...
