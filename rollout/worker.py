"""Rollout-worker Ray actors: each owns env sandboxes and plays groups against the engine pool.

A worker holds the tokenizer (to render prompts with the model's own chat template), the engine
pool's handles, and its env backend: ``local`` — an ``env.pool.EnvPool`` sandbox process owned
by this worker, hosting every episode the worker plays — or ``http`` — sessions on an env server.
``play`` runs one group and returns it; it never raises for env trouble (the group comes back
marked failed, with the reason) so the driver can account for every episode.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

from rollout.episode import EpisodeLimits
from rollout.group import GroupSpec, run_group
from rollout.types import TrajectoryGroup
from serving.types import SamplingSpec


class EnvPrompts:
    """The env's own wording of the task and observations (env/prompts.py), as rollout needs it."""

    def __init__(self) -> None:
        from env.prompts import SYSTEM_PROMPT, render_observation, render_task

        self.system = SYSTEM_PROMPT
        self._task = render_task
        self._observation = render_observation

    def task(self, observation: dict) -> str:
        return self._task(SimpleNamespace(**observation["task"]))

    def observation(self, observation: dict) -> str:
        return self._observation(
            command_success=observation["command_success"],
            output=observation.get("output", ""),
            error=observation.get("error", ""),
            hint_text=observation.get("hint_text", ""),
            task_achieved=observation.get("task_achieved", False),
        )


class LocalSession:
    """One in-process ``AwsEnv`` slot; its blocking calls run on the worker's thread pool."""

    def __init__(
        self, catalog, env_pool, executor: ThreadPoolExecutor, max_steps: int, chaos: bool
    ) -> None:
        from env.environment import AwsEnv

        self._env = AwsEnv(catalog, pool=env_pool, max_steps=max_steps, chaos=chaos)
        self._executor = executor

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def reset(self, task_id: str, seed: int) -> dict:
        return (await self._run(self._env.reset, task_id, seed)).model_dump()

    async def step(self, command: str) -> dict:
        return (await self._run(self._env.step, command)).model_dump()

    async def close(self) -> None:
        await self._run(self._env.close)


class HttpSession:
    """One session on an env server, through the env's async client."""

    def __init__(self, url: str, timeout_s: float) -> None:
        from env.client import AsyncEnvClient

        self._client = AsyncEnvClient(url, timeout_s=timeout_s)

    async def reset(self, task_id: str, seed: int) -> dict:
        return (await self._client.reset(task_id=task_id, seed=seed)).model_dump()

    async def step(self, command: str) -> dict:
        return (await self._client.step(command)).model_dump()

    async def close(self) -> None:
        await self._client.close()


class PinnedEngine:
    """An engine (pool) with every request pinned to one adapter version (None = newest)."""

    def __init__(self, pool, version: int | None) -> None:
        self.pool, self.version = pool, version

    async def generate(self, prompt_token_ids, sampling: SamplingSpec, adapter_version=None):
        return await self.pool.generate(prompt_token_ids, sampling, self.version)


class RolloutWorker:
    def __init__(self, name: str, engine_pool, model_path: str, env_settings: dict) -> None:
        from transformers import AutoTokenizer

        self.name = name
        self.engine_pool = engine_pool
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.prompts = EnvPrompts()
        self.settings = env_settings
        self._executor = ThreadPoolExecutor(max_workers=64, thread_name_prefix=f"{name}-env")
        self._env_pool = None
        if env_settings["backend"] == "local":
            from env.catalog import load_catalog
            from env.pool import EnvPool

            self._catalog = load_catalog()
            self._env_pool = EnvPool(workers=1).start()

    def _new_env(self, max_steps: int):
        if self._env_pool is not None:
            return LocalSession(
                self._catalog, self._env_pool, self._executor, max_steps, self.settings["chaos"]
            )
        return HttpSession(self.settings["url"], self.settings["step_timeout_s"])

    async def play(
        self, spec: GroupSpec, limits: EpisodeLimits, adapter_version: int | None = None
    ) -> TrajectoryGroup:
        return await run_group(
            spec,
            lambda: self._new_env(limits.max_steps),
            PinnedEngine(self.engine_pool, adapter_version),
            self.tokenizer,
            self.prompts,
            limits,
            env_timeout_s=self.settings["step_timeout_s"],
            attempts=self.settings["attempts"],
        )

    async def ping(self) -> str:
        return self.name

    def env_worker_pid(self) -> int | None:
        """The pid of this worker's sandbox process (tests kill it to prove recovery)."""
        return self._env_pool.worker_pid(0) if self._env_pool is not None else None


def rollout_worker_class():
    import ray

    return ray.remote(RolloutWorker)
