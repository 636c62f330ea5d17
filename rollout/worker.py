"""Rollout workers ("env workers"): Ray actors that play groups against the engine pool.

A worker holds the tokenizer (to render prompts with the model's own chat template), the engine
pool's handles, and its environment sessions (``rollout.env_backends.open_sessions``: for the AWS
env a sandbox process owned by this worker or sessions on an env server; or an OpenEnv server's
sessions; or instances of a Python env class). ``play`` runs one group and returns it; it
never raises for env trouble (the group comes back marked failed, with the reason) so the driver
can account for every episode.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from rollout.config import EnvSettings
from rollout.env_contract import EnvSession, StepResult
from rollout.episode_loop import EpisodeLimits
from rollout.group import GroupSpec, run_group
from rollout.types import TrajectoryGroup
from serving.types import Completion, SamplingSpec


class PinnedEngine:
    """An engine (pool) with every request pinned to one adapter version (None = newest);
    ``sticky`` keeps each episode on one engine (its ``route_key``), else least-loaded."""

    def __init__(self, engine_pool, version: int | None, sticky: bool = True) -> None:
        self.engine_pool, self.version, self.sticky = engine_pool, version, sticky

    async def generate(
        self, prompt_token_ids: list[int], sampling: SamplingSpec, adapter_version=None,
        route_key: str | None = None,
    ) -> Completion:  # fmt: skip
        key = route_key if self.sticky else None
        return await self.engine_pool.generate(prompt_token_ids, sampling, self.version, key)


class SlowedSession:
    """An env session whose every step first waits the worker's current added latency (a
    remote env's round trip, ``env.step_latency_s``); read at each step, so a live change
    reaches episodes already running."""

    def __init__(self, session: EnvSession, latency_s: Callable[[], float]) -> None:
        self.session, self.latency_s = session, latency_s

    async def reset(self, task_id: str, seed: int) -> StepResult:
        return await self.session.reset(task_id, seed)

    async def step(self, reply: str) -> StepResult:
        if (delay := self.latency_s()) > 0:
            await asyncio.sleep(delay)
        return await self.session.step(reply)

    async def close(self) -> None:
        await self.session.close()

    def __getattr__(self, name: str):
        return getattr(self.session, name)


class RolloutWorker:
    def __init__(
        self, name: str, engine_pool, model_path: str, settings: EnvSettings, max_steps: int
    ) -> None:
        from transformers import AutoTokenizer

        from rollout.env_backends import open_sessions

        self.name = name
        self.engine_pool = engine_pool
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.settings = settings
        if settings.cpu_nice:  # before the sandbox processes start: they inherit it
            os.nice(settings.cpu_nice)  # relative (raising niceness needs no privilege)
        self.sessions = open_sessions(settings, max_steps)
        self.step_latency_s = settings.step_latency_s

    def _new_session(self) -> SlowedSession:
        return SlowedSession(self.sessions.new(), lambda: self.step_latency_s)

    async def set_step_latency(self, seconds: float) -> float:
        """Add ``seconds`` to every env step from now on (the ``slow_env`` fault); returns it."""
        self.step_latency_s = max(0.0, float(seconds))
        return self.step_latency_s

    async def step_latency(self) -> float:
        return self.step_latency_s

    async def play(
        self, spec: GroupSpec, limits: EpisodeLimits, adapter_version: int | None = None,
        sticky: bool = True,
    ) -> TrajectoryGroup:  # fmt: skip
        return await run_group(
            spec,
            self._new_session,
            PinnedEngine(self.engine_pool, adapter_version, sticky),
            self.tokenizer,
            limits,
            env_timeout_s=self.settings.step_timeout_s,
            attempts=self.settings.attempts,
        )

    async def ping(self) -> str:
        return self.name

    def close(self) -> None:
        """Stop this worker's sandbox process (the actor is killed next)."""
        self.sessions.close()

    async def sandbox_pid(self) -> int | None:
        """The current sandbox process (a replaced one has a new pid; None with an env server)."""
        return self.sessions.sandbox_pid()

    async def break_sandbox(self, how: str) -> int | None:
        """Fault injection (``run.faults``): SIGKILL (``kill``) or SIGSTOP (``hang``) this
        worker's sandbox process; returns its pid (None with an env server). A process that is
        already dead (being replaced after an earlier fault) is waited for, up to a minute."""
        import os
        import signal

        for _ in range(120):
            pid = self.sessions.sandbox_pid()
            if pid is None:
                return None
            try:
                os.kill(pid, signal.SIGKILL if how == "kill" else signal.SIGSTOP)
                return pid
            except ProcessLookupError:
                await asyncio.sleep(0.5)
        raise RuntimeError(f"{self.name}'s sandbox process did not come back within a minute")


def rollout_worker_class():
    import ray

    return ray.remote(RolloutWorker)
