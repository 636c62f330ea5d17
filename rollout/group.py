"""G episodes of one task from one seeded initial state: the unit GRPO scores and trains on.

Env calls are bounded by a timeout. An episode whose env call fails or times out is played again
from the start on a fresh sandbox (replaying the old commands would not reproduce server-side ids
the model already saw); after ``attempts`` tries the whole group is marked failed and is dropped
whole by the caller — a group is never trained on with missing members.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from rollout.env_contract import EnvSession, StepResult
from rollout.episode_loop import EpisodeLimits, EpisodeSpec, Generator, run_episode
from rollout.types import Trajectory, TrajectoryGroup


class EnvCallError(RuntimeError):
    """An env call raised or did not answer within its timeout."""


@dataclass
class TimedEnv:
    """Wraps an env session so that no call can hang the episode."""

    inner: EnvSession
    timeout_s: float

    @property
    def system_prompt(self) -> str | None:
        return self.inner.system_prompt

    async def _call(self, what: str, coro):
        try:
            return await asyncio.wait_for(coro, timeout=self.timeout_s)
        except TimeoutError as exc:
            raise EnvCallError(f"env {what} did not answer within {self.timeout_s:.0f}s") from exc
        except EnvCallError:
            raise
        except Exception as exc:
            raise EnvCallError(f"env {what} failed: {type(exc).__name__}: {exc}") from exc

    async def reset(self, task_id: str, seed: int) -> StepResult:
        return await self._call("reset", self.inner.reset(task_id, seed))

    async def step(self, reply: str) -> StepResult:
        return await self._call("step", self.inner.step(reply))

    async def close(self) -> None:
        # Closing a broken sandbox is best effort; it is discarded anyway.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.inner.close(), timeout=self.timeout_s)


@dataclass(frozen=True)
class GroupSpec:
    task_id: str
    tier: str
    seed: int
    group_id: str
    size: int

    def failed(self, error: str) -> TrajectoryGroup:
        """This group, none of it playable (a dead worker, a failed engine), with the cause."""
        return TrajectoryGroup.failed_whole(
            self.task_id, self.tier, self.seed, self.group_id, self.size, error
        )


async def run_group(
    spec: GroupSpec,
    new_env: Callable[[], EnvSession],
    engine: Generator,
    tokenizer,
    limits: EpisodeLimits,
    env_timeout_s: float = 30.0,
    attempts: int = 2,
) -> TrajectoryGroup:
    """Run ``spec.size`` episodes concurrently; return the group, marked failed if any failed."""
    started = time.perf_counter()
    episodes = [
        EpisodeSpec(spec.task_id, spec.tier, spec.seed, spec.group_id, index)
        for index in range(spec.size)
    ]
    try:
        # An error that is not the env's (the engine died, a bug) ends the whole group at once:
        # the other episodes are cancelled rather than left generating for nothing.
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(
                    _episode_with_retry(
                        e, new_env, engine, tokenizer, limits, env_timeout_s, attempts
                    )
                )
                for e in episodes
            ]
    except BaseExceptionGroup as failures:
        raise failures.exceptions[0] from None
    results = [t.result() for t in tasks]
    errors = [t.error for t in results if t.end == "failed"]
    return TrajectoryGroup(
        group_id=spec.group_id,
        task_id=spec.task_id,
        tier=spec.tier,
        seed=spec.seed,
        trajectories=list(results),
        failed=bool(errors),
        error="; ".join(errors[:3]),
        created_s=time.perf_counter() - started,
    )


async def _episode_with_retry(
    spec: EpisodeSpec,
    new_env: Callable[[], EnvSession],
    engine: Generator,
    tokenizer,
    limits: EpisodeLimits,
    env_timeout_s: float,
    attempts: int,
) -> Trajectory:
    error = ""
    for attempt in range(1, attempts + 1):
        env = TimedEnv(new_env(), env_timeout_s)
        try:
            return await run_episode(spec, env, engine, tokenizer, limits)
        except EnvCallError as exc:
            error = f"attempt {attempt}: {exc}"
        finally:
            await env.close()
    return Trajectory.failed(
        spec.task_id, spec.tier, spec.group_id, spec.episode_index, spec.seed, error
    )
