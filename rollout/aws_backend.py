"""The AWS-CLI environment behind the rollout contract (``rollout.env_contract``).

A reply becomes one ``aws ...`` command (``rollout.parse``: fences, prose and shell prompts are
stripped; a reply with no command still goes to the env, which answers with what was wrong), and
an ``AwsObservation`` becomes the next user turn in the env's own wording (``env.prompts``, the
same text SFT export uses). Two backends give the same observations: ``local`` runs episodes in a
sandbox process this process owns, ``http`` runs them as sessions on an env server.

``AwsSessions`` is the factory every user of the AWS env shares (rollout workers, ``rlfarm eval``,
the benchmarks): it owns the sandbox process or knows the server, and hands out fresh sessions.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from env.prompts import SYSTEM_PROMPT, observation_text, render_task
from env.tiers import TIERS
from env.types import AwsObservation
from rollout.config import EnvSettings
from rollout.env_backends import Renamer
from rollout.env_contract import EnvTask, StepResult
from rollout.parse import ParsedReply, parse_reply


def command_to_send(reply: str) -> tuple[str, ParsedReply]:
    """The text the env receives for ``reply``, and how the reply parsed."""
    parsed = parse_reply(reply)
    return parsed.command or reply.strip() or "(empty reply)", parsed


def reset_result(obs: AwsObservation) -> StepResult:
    """The first user turn: the task, in the env's words."""
    if obs.task is None:
        raise ValueError("the env's reset observation carries no task")
    return StepResult(
        text=render_task(obs.task), info={"episode_id": obs.metadata.get("episode_id")}
    )


def step_result(obs: AwsObservation, parsed: ParsedReply) -> StepResult:
    """One step's observation as the rollout loop's result."""
    return StepResult(
        text=observation_text(obs),
        reward=float(obs.reward or 0.0),
        done=obs.done or obs.task_achieved,
        success=obs.task_achieved,
        progress=obs.partial_progress,
        hints_used=obs.hints_used,
        action=parsed.command,
        well_formed=parsed.bare,
        info={
            "command_success": obs.command_success,
            "output": obs.output,
            "error": obs.error,
            "hint_text": obs.hint_text,
            **obs.metadata,
        },
    )


class AwsTransport(Protocol):
    """Where AWS episodes run (here, or on a server); both give the env's typed observations."""

    async def reset(self, task_id: str, seed: int) -> AwsObservation: ...

    async def step(self, command: str) -> AwsObservation: ...

    async def close(self) -> None: ...


class AwsSession:
    """One AWS episode slot behind the rollout contract."""

    system_prompt: str | None = SYSTEM_PROMPT

    def __init__(self, transport: AwsTransport) -> None:
        self._transport = transport

    async def reset(self, task_id: str, seed: int) -> StepResult:
        return reset_result(await self._transport.reset(task_id, seed))

    async def step(self, reply: str) -> StepResult:
        command, parsed = command_to_send(reply)
        return step_result(await self._transport.step(command), parsed)

    async def close(self) -> None:
        await self._transport.close()


class LocalTransport:
    """An in-process ``AwsEnv`` slot; its blocking calls run on a thread pool."""

    def __init__(self, catalog, sandboxes, executor: ThreadPoolExecutor, max_steps: int,
                 disrupt: bool) -> None:  # fmt: skip
        from env.environment import AwsEnv

        self._env = AwsEnv(catalog, pool=sandboxes, max_steps=max_steps, disrupt=disrupt)
        self._executor = executor

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def reset(self, task_id: str, seed: int) -> AwsObservation:
        return await self._run(self._env.reset, task_id, seed)

    async def step(self, command: str) -> AwsObservation:
        return await self._run(self._env.step, command)

    async def close(self) -> None:
        await self._run(self._env.close)


class HttpTransport:
    """A session on an env server, through the env's async client."""

    def __init__(self, url: str, timeout_s: float, token: str | None = None) -> None:
        from env.client import AsyncEnvClient

        self._client = AsyncEnvClient(url, timeout_s=timeout_s, token=token)

    async def reset(self, task_id: str, seed: int) -> AwsObservation:
        return await self._client.reset(task_id=task_id, seed=seed)

    async def step(self, command: str) -> AwsObservation:
        return await self._client.step(command)

    async def close(self) -> None:
        await self._client.close()


class AwsSessions:
    """Fresh AWS sessions on demand, for one process: with the ``local`` backend it owns one
    sandbox process (started here, stopped by ``close``), with ``http`` it talks to the server.
    """

    def __init__(self, settings: EnvSettings, max_steps: int, threads: int = 64) -> None:
        self.settings = settings
        self.max_steps = max_steps
        self._sandboxes = None
        self._executor: ThreadPoolExecutor | None = None
        if settings.backend == "local":
            from env.catalog import load_catalog
            from env.sandbox_pool import SandboxPool

            self._catalog = load_catalog()
            self._sandboxes = SandboxPool(processes=1).start()
            self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="aws-env")

    def new(self) -> AwsSession:
        if self._sandboxes is None:
            settings = self.settings
            return AwsSession(
                HttpTransport(settings.url or "", settings.step_timeout_s, settings.token)
            )
        transport = LocalTransport(
            self._catalog, self._sandboxes, self._executor, self.max_steps, self.settings.disrupt
        )
        return AwsSession(transport)

    def sandbox_pid(self) -> int | None:
        """The pid of the sandbox process (local backend), for fault injection."""
        return self._sandboxes.process_pid(0) if self._sandboxes is not None else None

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        if self._sandboxes is not None:
            self._sandboxes.close()

    def __enter__(self) -> AwsSessions:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AwsEnvBackend:
    """The AWS env as the farm sees it (``rollout.env_backends``; registered as ``local`` and
    ``http``): its catalog's tasks and tiers, renamed copies of the tasks that name a resource
    (``env.task_variants``), and the ``service operation`` pairs of each canonical solution."""

    tiers: tuple[str, ...] = TIERS

    def sessions(self, settings: EnvSettings, max_steps: int, threads: int) -> AwsSessions:
        return AwsSessions(settings, max_steps, threads=threads)

    def tasks(self, settings: EnvSettings) -> list[EnvTask]:
        from env.catalog import load_catalog

        return [EnvTask(t.id, t.tier) for t in load_catalog().tasks]

    def renamer(self, settings: EnvSettings) -> Renamer:
        from env.catalog import load_catalog
        from env.task_variants import renamable_names

        return Renamer(frozenset(t.id for t in load_catalog() if renamable_names(t)))

    def operations(self, settings: EnvSettings, task_ids: list[str]) -> dict[str, list[str]]:
        from env.catalog import load_catalog

        catalog = load_catalog()
        return {task_id: catalog.by_id(task_id).operations() for task_id in task_ids}


BACKEND = AwsEnvBackend()
