"""A Python env class behind the rollout contract, named by an entry point (``env.factory``).

``env.factory: "package.module:name"`` names a callable (usually a class) that returns one env
instance per episode. The instance needs no rlfarm import; it has

    reset(task_id: str, seed: int) -> str | StepResult | dict   (the first user turn)
    step(reply: str) -> StepResult | dict                       (the model's reply as written)
    close() -> None                                             (optional)

and may declare ``system_prompt`` (a string). A ``dict`` result uses ``StepResult``'s field
names (``text``, ``reward``, ``done``, ``success``, ...). Methods may be plain or ``async``;
plain ones run on a thread pool so a slow env never blocks the event loop. The callable names its
tasks with a ``tasks`` attribute (a list of ids, or a mapping of id -> tier), or the config lists
them in ``env.tasks``.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from typing import Any

from rollout.config import EnvSettings
from rollout.env_backends import Renamer
from rollout.env_contract import DEFAULT_TIER, EnvTask, StepResult

RESULT_FIELDS = {f.name for f in fields(StepResult)}


class EnvFactoryError(ValueError):
    """``env.factory`` does not name a usable env; the message says what is wrong."""


def load_factory(spec: str) -> Callable[[], Any]:
    """The callable ``package.module:name`` names."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EnvFactoryError(
            f"env.factory={spec!r}: cannot import {module_name!r} ({exc})"
        ) from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise EnvFactoryError(f"env.factory={spec!r}: {module_name} has no callable {attr!r}")
    return factory


def factory_tasks(factory: Callable[[], Any], settings: EnvSettings) -> list[EnvTask]:
    """The env's tasks: ``env.tasks`` if the config lists them, else the callable's ``tasks``."""
    if settings.tasks:
        return [EnvTask(t.id, t.tier) for t in settings.tasks]
    declared = getattr(factory, "tasks", None)
    if isinstance(declared, Mapping):
        return [EnvTask(str(k), str(v)) for k, v in declared.items()]
    if isinstance(declared, list | tuple) and declared:
        return [EnvTask(str(t), DEFAULT_TIER) for t in declared]
    raise EnvFactoryError(
        f"env.factory={settings.factory!r} declares no tasks: give it a `tasks` attribute "
        "(ids, or a mapping of id -> tier) or list them in env.tasks"
    )


def as_result(value: Any, what: str) -> StepResult:
    """An env's answer as a ``StepResult`` (a str is a bare observation text)."""
    if isinstance(value, StepResult):
        return value
    if isinstance(value, str):
        return StepResult(text=value)
    if isinstance(value, Mapping):
        unknown = set(value) - RESULT_FIELDS
        if unknown:
            raise TypeError(f"{what} returned unknown fields {sorted(unknown)}")
        return StepResult(**value)
    raise TypeError(f"{what} must return a str, a dict or a StepResult, not {type(value).__name__}")


class PythonEnvSession:
    """One episode on one fresh instance of the env class."""

    def __init__(self, instance: Any, executor: ThreadPoolExecutor, system_prompt: str | None):
        self._env = instance
        self._executor = executor
        self.system_prompt = getattr(instance, "system_prompt", None) or system_prompt

    async def _call(self, name: str, *args: Any) -> Any:
        method = getattr(self._env, name, None)
        if method is None:
            return None
        if inspect.iscoroutinefunction(method):
            return await method(*args)
        return await asyncio.get_running_loop().run_in_executor(self._executor, method, *args)

    async def reset(self, task_id: str, seed: int) -> StepResult:
        return as_result(await self._call("reset", task_id, seed), "reset")

    async def step(self, reply: str) -> StepResult:
        return as_result(await self._call("step", reply), "step")

    async def close(self) -> None:
        await self._call("close")


class PythonEnvSessions:
    """Fresh instances of ``env.factory``'s env, one per episode."""

    def __init__(self, settings: EnvSettings, threads: int = 32) -> None:
        self.settings = settings
        self.factory = load_factory(settings.factory or "")
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="python-env")

    def new(self) -> PythonEnvSession:
        return PythonEnvSession(self.factory(), self._executor, self.settings.system_prompt)

    def sandbox_pid(self) -> int | None:
        return None

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def can_demonstrate(settings: EnvSettings) -> bool:
    """The env class answers its own tasks (``demonstration(task_id, seed) -> reply``)."""
    return callable(getattr(load_factory(settings.factory or ""), "demonstration", None))


def demonstration_rows(settings: EnvSettings, task_ids, seeds) -> list[dict]:
    """SFT rows (chat ``messages`` ending in the env's own reply) for each task and seed: the
    conversation exactly as the rollout loop opens it (system prompt, the reset text)."""
    factory = load_factory(settings.factory or "")
    rows = []
    for task_id in task_ids:
        for seed in seeds:
            env = factory()
            first = as_result(_run(env.reset(task_id, seed)), "reset")
            system = getattr(env, "system_prompt", None) or settings.system_prompt
            messages = [{"role": "system", "content": system}] if system else []
            messages += [
                {"role": "user", "content": first.text},
                {"role": "assistant", "content": _run(factory.demonstration(task_id, seed))},
            ]
            rows.append({"messages": messages, "task_id": task_id, "kind": "demonstration"})
            _run(getattr(env, "close", lambda: None)())
    return rows


def _run(value: Any) -> Any:
    """A plain value as is; an awaitable (an ``async`` env method) run to completion."""
    return asyncio.run(value) if inspect.isawaitable(value) else value


class PythonEnvBackend:
    """A Python env class as the farm sees it (registered as ``python``): its tasks and tiers are
    its own; it has no renamed copies and names no operations."""

    tiers: tuple[str, ...] = ()

    def sessions(self, settings: EnvSettings, max_steps: int, threads: int) -> PythonEnvSessions:
        return PythonEnvSessions(settings, threads=threads)

    def tasks(self, settings: EnvSettings) -> list[EnvTask]:
        return factory_tasks(load_factory(settings.factory or ""), settings)

    def renamer(self, settings: EnvSettings) -> Renamer:
        return Renamer()

    def operations(self, settings: EnvSettings, task_ids: list[str]) -> dict[str, list[str]]:
        return {}


BACKEND = PythonEnvBackend()
