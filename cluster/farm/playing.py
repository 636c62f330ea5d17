"""Playing one group: a worker picked, the group played, a dead worker replaced, the group counted.

A group is G episodes of one task from one seeded initial state, played by the least-busy env
worker (``RolloutWorkerSet``). A worker that dies under a group gives a *failed* group (its
fate is booked like any other) and is replaced by a fresh actor; the farm never waits on it.
Training groups are opened in the ledger when they start and counted in the run's totals and
the curriculum when they finish; eval groups are neither.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

from cluster.base.config import FarmConfig
from cluster.farm.curriculum import CurriculumSampler
from cluster.farm.ledger import Ledger
from cluster.farm.metrics import Metrics, RunState
from cluster.farm.rollout_workers import RolloutWorkerSet
from rollout.env_contract import EnvTask
from rollout.episode_loop import EpisodeLimits
from rollout.group import GroupSpec
from rollout.types import TrajectoryGroup


class GroupPlayer:
    def __init__(
        self,
        workers: RolloutWorkerSet,
        limits: EpisodeLimits,
        eval_limits: EpisodeLimits,
        eval_episodes: int,
        ledger: Ledger,
        state: RunState,
        metrics: Metrics,
        sampler: CurriculumSampler,
    ) -> None:
        self.workers = workers
        self.limits = limits
        self.eval_limits = eval_limits
        self.eval_episodes = eval_episodes
        self.ledger = ledger
        self.state = state
        self.metrics = metrics
        self.sampler = sampler
        self.group_size = 0  # G of the training groups started from now on (set_group_size)
        self.sticky = False  # route a group's turns to one engine, its prefix cache (set_routing)

    def set_group_size(self, group_size: int) -> None:
        """G of the groups started from now on."""
        if group_size < 2:
            raise ValueError(f"group size {group_size}: GRPO needs at least 2 episodes per group")
        self.group_size = group_size

    def set_routing(self, routing: str) -> None:
        """'sticky' or 'least_loaded' for the groups started from now on."""
        if routing not in ("sticky", "least_loaded"):
            raise ValueError(f"routing {routing!r}: use 'sticky' or 'least_loaded'")
        self.sticky = routing == "sticky"

    async def play(
        self, task: EnvTask, seed: int, version: int | None = None, evaluation: bool = False
    ) -> TrajectoryGroup:
        """One group on the least-busy worker under ``version`` (None: the newest loaded). An
        ``evaluation`` plays the eval's episodes at its temperature and is not booked."""
        size = self.eval_episodes if evaluation else self.group_size
        spec = GroupSpec(task.id, task.tier, seed, f"g{uuid.uuid4().hex[:10]}", size)
        limits = self.eval_limits if evaluation else self.limits
        while (slot := self.workers.acquire()) is None:
            await asyncio.sleep(0.1)
        if not evaluation:
            self.ledger.start(spec.group_id, spec.task_id, spec.tier, size)
        handle, name = slot.handle, slot.name
        try:
            group = await handle.play.remote(spec, limits, version, self.sticky)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the actor died, or the engine failed mid-group
            group = spec.failed(f"{name}: {type(exc).__name__}: {exc}")
            if _is_actor_death(exc) and self.workers.replace(slot, handle):
                self.metrics.event(f"{name} died; replaced by {slot.name}")
        finally:
            self.workers.release(slot)
        if not evaluation:
            self._account(group)
        return group

    async def play_only(
        self,
        groups: int,
        capacity: int,
        update: int,
        on_group: Callable[[int, TrajectoryGroup], Awaitable[None]] | None = None,
    ) -> None:
        """Play ``groups`` training groups, ``capacity`` in flight, and train on none: the
        engines and env workers at full load with the learner idle. Each group is booked
        ``rollout_only`` (or ``failed``); ``on_group(n, group)`` is awaited after the n-th."""
        inflight: set[asyncio.Future] = set()
        started = finished = 0
        while finished < groups:
            while started < groups and len(inflight) < capacity:
                inflight.add(asyncio.ensure_future(self.play_next()))
                started += 1
            done, inflight = await asyncio.wait(inflight, return_when="FIRST_COMPLETED")
            for fut in done:
                group = fut.result()
                if group.failed:
                    self.ledger.record(group, "failed", group.error, update)
                else:
                    self.ledger.record(group, "rollout_only", "", update)
                finished += 1
                if on_group is not None:
                    await on_group(finished, group)

    async def play_next(self) -> TrajectoryGroup:
        """The curriculum's next training group."""
        return await self.play(*self.sampler.next())

    def _account(self, group: TrajectoryGroup) -> None:
        self.state.groups_played += 1
        self.state.episodes_played += len(group.trajectories)
        for traj in group.trajectories:
            self.state.generated_tokens += traj.generated_tokens
            self.state.env_steps += len(traj.turns)
        self.metrics.observe_group(group)
        if not group.failed:
            self.sampler.observe(group.tier, [t.achieved for t in group.trajectories])


def _is_actor_death(exc: Exception) -> bool:
    import ray

    return isinstance(exc, ray.exceptions.RayActorError)


def episode_limits(config: FarmConfig) -> EpisodeLimits:
    """The limits of every training episode (the evals' differ only in temperature)."""
    return EpisodeLimits(
        max_steps=config.rollout.max_steps,
        max_model_len=config.engine.max_model_len,
        max_new_tokens=config.rollout.max_new_tokens,
        temperature=config.rollout.temperature,
        top_p=config.rollout.top_p,
    )
