"""Rollout workers ("env workers"): Ray actors that play groups against the engine pool.

A worker holds the tokenizer (to render prompts with the model's own chat template), the engine
pool's handles, and its environment sessions (``rollout.aws_env.AwsSessions``: a sandbox process
owned by this worker, or sessions on an env server). ``play`` runs one group and returns it; it
never raises for env trouble (the group comes back marked failed, with the reason) so the driver
can account for every episode.
"""

from __future__ import annotations

from rollout.config import EnvSettings
from rollout.episode import EpisodeLimits
from rollout.group import GroupSpec, run_group
from rollout.types import TrajectoryGroup
from serving.types import Completion, SamplingSpec


class PinnedEngine:
    """An engine (pool) with every request pinned to one adapter version (None = newest)."""

    def __init__(self, pool, version: int | None) -> None:
        self.pool, self.version = pool, version

    async def generate(
        self, prompt_token_ids: list[int], sampling: SamplingSpec, adapter_version=None
    ) -> Completion:
        return await self.pool.generate(prompt_token_ids, sampling, self.version)


class RolloutWorker:
    def __init__(
        self, name: str, engine_pool, model_path: str, settings: EnvSettings, max_steps: int
    ) -> None:
        from transformers import AutoTokenizer

        from rollout.aws_env import AwsSessions

        self.name = name
        self.engine_pool = engine_pool
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.settings = settings
        self.sessions = AwsSessions(settings, max_steps)

    async def play(
        self, spec: GroupSpec, limits: EpisodeLimits, adapter_version: int | None = None
    ) -> TrajectoryGroup:
        return await run_group(
            spec,
            self.sessions.new,
            PinnedEngine(self.engine_pool, adapter_version),
            self.tokenizer,
            limits,
            env_timeout_s=self.settings.step_timeout_s,
            attempts=self.settings.attempts,
        )

    async def ping(self) -> str:
        return self.name

    def sandbox_pid(self) -> int | None:
        """The pid of this worker's sandbox process (fault injection kills it)."""
        return self.sessions.sandbox_pid()


def rollout_worker_class():
    import ray

    return ray.remote(RolloutWorker)
