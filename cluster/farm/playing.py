"""Playing one group: a worker picked, the group played, a dead worker replaced, the group counted.

A group is G episodes of one task from one seeded initial state, played by the least-busy env
worker (``RolloutWorkerSet``). A worker that dies under a group gives a *failed* group (its
fate is booked like any other) and is replaced by a fresh actor; the farm never waits on it.
Training groups are opened in the ledger when they start and counted in the run's totals and
the curriculum when they finish; eval groups are neither. A training group lost to a fault is
replayed (``requeue``): the next group played is that draw again, same task, seed and variant,
up to ``run.max_replays`` times.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Awaitable, Callable

from cluster.base.config import FarmConfig
from cluster.farm.curriculum import CurriculumSampler
from cluster.farm.ledger import Ledger, OpenGroup
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
        max_replays: int = 0,
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
        self.max_replays = max_replays
        self.replays: deque[OpenGroup] = deque()  # lost groups, played before new draws

    def requeue(self, lost: OpenGroup) -> None:
        """Replay a group a fault lost (its draw next, same task and seed), within the cap."""
        if lost.draw < 0:
            return
        if lost.attempt >= self.max_replays:
            self.metrics.event(
                f"group {lost.group_id} (draw {lost.draw}, {lost.task_id}) lost "
                f"{lost.attempt + 1} times; not replayed again (run.max_replays="
                f"{self.max_replays})"
            )
            return
        self.replays.append(lost)

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
        self, task: EnvTask, seed: int, version: int | None = None, evaluation: bool = False,
        draw: OpenGroup | None = None,
    ) -> TrajectoryGroup:  # fmt: skip
        """One group on the least-busy worker under ``version`` (None: the newest loaded). An
        ``evaluation`` plays the eval's episodes at its temperature and is not booked. ``draw``
        says which curriculum draw a training group plays (its number, and the group it replays
        if any)."""
        size = self.eval_episodes if evaluation else self.group_size
        spec = GroupSpec(task.id, task.tier, seed, f"g{uuid.uuid4().hex[:10]}", size)
        limits = self.eval_limits if evaluation else self.limits
        if not evaluation:  # booked from the moment it is drawn: the ledger's order is the draws'
            origin = draw or OpenGroup("", task.id, task.tier, size)
            self.ledger.start(spec.group_id, spec.task_id, spec.tier, size, seed, origin.draw,
                              origin.attempt, origin.replay_of)  # fmt: skip
        while (slot := self.workers.acquire()) is None:
            await asyncio.sleep(0.1)
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
        """The next training group: a lost group's replay, else the curriculum's next draw."""
        if self.replays:
            lost = self.replays.popleft()
            again = OpenGroup("", lost.task_id, lost.tier, 0, lost.seed, lost.draw,
                              lost.attempt + 1, lost.group_id)  # fmt: skip
            self.metrics.event(f"replaying draw {lost.draw} ({lost.task_id}, seed {lost.seed}), "
                               f"lost with group {lost.group_id}")  # fmt: skip
            return await self.play(EnvTask(lost.task_id, lost.tier), lost.seed, draw=again)
        pick = self.sampler.next_draw()
        origin = OpenGroup("", pick.task.id, pick.task.tier, 0, pick.seed, pick.index)
        return await self.play(pick.task, pick.seed, draw=origin)

    def _account(self, group: TrajectoryGroup) -> None:
        self.state.groups_played += 1
        self.state.episodes_played += len(group.trajectories)
        for traj in group.trajectories:
            self.state.generated_tokens += traj.generated_tokens
            self.state.env_steps += len(traj.turns)
        self.metrics.observe_group(group)
        if not group.failed:
            self.sampler.observe(
                group.tier, [t.achieved for t in group.trajectories], group.task_id
            )


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
