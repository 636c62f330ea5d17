"""The farm's driver: generation, env steps and learning, all at once.

Parts (none of them knows about this driver):
- ``EnginePool`` (serving/): M vLLM engines; adapters are broadcast to it and verified by probe.
- ``WorkerSet`` of ``RolloutWorker`` actors (rollout/): each owns env sandboxes and plays groups
  of G episodes of one task from one seeded initial state.
- ``LearnerActor`` (learner/): one GRPO update per batch of groups, then publishes a version.
- ``CurriculumSampler``: which task next; ``Ledger``: every episode's fate; ``Metrics``: JSONL,
  TensorBoard, Ray/Prometheus, progress line; ``FarmControl``: the operator's scale knob.

``setup()`` wires them; ``main_loop()`` drives them. In ``async`` mode group producers never wait
for the learner: finished groups go through a bounded queue, and a group sampled more than
``max_staleness`` versions before the current one is dropped, and the learner starts its next
update while the engines load the version it just published. ``sync`` mode plays one batch, trains,
publishes, and only then plays the next (for comparison and debugging).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cluster.config import FarmConfig
from cluster.curriculum import CurriculumSampler, TaskRef, select_tasks, split_holdout
from cluster.ledger import Ledger
from cluster.metrics import Metrics, Watchdog
from cluster.workers import WorkerSet
from rollout.episode import EpisodeLimits
from rollout.group import GroupSpec
from rollout.types import Trajectory, TrajectoryGroup


@dataclass
class RunState:
    version: int = 0
    updates: int = 0
    groups_played: int = 0
    episodes_played: int = 0
    generated_tokens: int = 0
    env_steps: int = 0
    staleness: dict[int, int] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)


class Farm:
    def __init__(self, config: FarmConfig, model_path: str) -> None:
        self.config = config
        self.model_path = model_path
        self.run_dir = Path(config.run.out_dir) / config.run.name
        self.state = RunState()
        self.stopping = False

    # ---- wiring -------------------------------------------------------------------------------

    def setup(self) -> None:
        import ray

        from cluster.control import start_control
        from env.catalog import load_catalog
        from learner.actor import create_learner_actor
        from learner.config import LearnerConfig
        from rollout.worker import rollout_worker_class
        from serving.config import EngineConfig
        from serving.pool import EnginePool

        cfg = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # The exact config of this run, beside its outputs (eval and resume read it back).
        (self.run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
        engine_cfg = EngineConfig(**(cfg.engine.model_dump() | {"model": self.model_path}))
        learner_cfg = LearnerConfig(**(cfg.learner.model_dump() | {"model_path": self.model_path}))
        self.pool = EnginePool.start(engine_cfg, num_engines=cfg.run.engines)
        learner_options = {}
        if engine_cfg.resolved_device() == "cuda":
            learner_options["num_gpus"] = cfg.run.learner_gpu_share
        self.learner = create_learner_actor(
            learner_cfg, torch_threads=cfg.run.learner_threads, **learner_options
        )
        worker_cls = rollout_worker_class()
        env_settings = cfg.env.model_dump()
        self.workers = WorkerSet(
            factory=lambda name: worker_cls.options(name=None, num_cpus=0.5).remote(
                name, self.pool, self.model_path, env_settings
            )
        )
        self.workers.resize(cfg.env.workers)
        tasks = select_tasks(load_catalog().tasks, cfg.curriculum)
        self.train_tasks, self.heldout = split_holdout(
            tasks, cfg.curriculum.holdout_fraction, cfg.run.seed
        )
        self.sampler = CurriculumSampler(self.train_tasks, cfg.curriculum, cfg.run.seed)
        self.ledger = Ledger(self.run_dir / "ledger.jsonl")
        self.metrics = Metrics(self.run_dir, cfg)
        self.control = start_control(cfg.run.name, cfg.env.workers)
        self.watchdog = Watchdog(cfg.run.watchdog_s, self.run_dir)  # armed by main_loop
        self.queue: asyncio.Queue[TrajectoryGroup] = asyncio.Queue(maxsize=cfg.train.queue_size)
        self.limits = EpisodeLimits(
            max_steps=cfg.rollout.max_steps,
            max_model_len=cfg.engine.max_model_len,
            max_new_tokens=cfg.rollout.max_new_tokens,
            temperature=cfg.rollout.temperature,
            top_p=cfg.rollout.top_p,
        )
        ray.get(self.learner.state.remote(), timeout=600)  # the learner has loaded its model

    # ---- the loop -----------------------------------------------------------------------------

    async def main_loop(self, updates: int | None = None, mode: str | None = None) -> dict:
        """Run learner updates until ``train.updates`` in total (or ``updates`` more) are done.

        May be called again on the same farm (a benchmark runs stages in different modes).
        """
        cfg = self.config.train
        mode = mode or cfg.mode
        target = cfg.updates if updates is None else self.state.updates + updates
        self.metrics.total_updates = target
        self.stopping = False
        self.awaited_groups = 0
        self.loaded_version = self.state.version  # the newest version every engine serves
        self.watchdog = Watchdog(self.config.run.watchdog_s, self.run_dir)
        self.watchdog.start()
        producer = None
        if mode == "async":
            producer = asyncio.ensure_future(self._produce())
        try:
            if mode == "async":
                await self._async_updates(target)
            else:
                await self._sync_updates(target)
        finally:
            self.stopping = True
            if producer is not None:
                await producer
            while not self.queue.empty():
                group = self.queue.get_nowait()
                self.ledger.record(group, "dropped_end_of_run", "queued after the last update")
            self.watchdog.stop()
        return self.ledger.summary()

    async def _produce(self) -> None:
        """Keep workers x groups_per_worker groups in flight; finished groups go to the queue."""
        inflight: set[asyncio.Future] = set()
        while not self.stopping or inflight:
            # While a published version is still being loaded, a group started now would open on
            # the outgoing one and reach the learner a version staler than need be: hold it back
            # for the swap (tens of ms).
            swapping = self.loaded_version < self.state.version
            target = 0 if self.stopping or swapping else self._admission_target()
            while len(inflight) + self.queue.qsize() < target:
                inflight.add(asyncio.ensure_future(self._play(*self.sampler.next())))
            if not inflight:
                if self.stopping:
                    break
                await asyncio.sleep(0.02)  # the cap is full, or a swap is under way
                continue
            done, inflight = await asyncio.wait(
                inflight, timeout=0.02 if swapping else 0.5, return_when="FIRST_COMPLETED"
            )
            for fut in done:
                await self._enqueue(fut.result())
            await self._apply_control()

    def _admission_target(self) -> int:
        """Groups to keep in flight or queued: enough to keep every worker busy, but no more than
        the learner can take before they go stale — anything beyond that would be generated only
        to be dropped, on the cores the learner needs.

        A group started now, at version v, is judged when it is collected: by the batch being
        collected right now (``awaited_groups`` it still waits for) at staleness 0, or by one of
        the next ``max_staleness`` batches (collected at versions v+1 .. v+max_staleness) at
        most ``max_staleness`` stale; a later batch would drop it."""
        train = self.config.train
        busy_workers = self.workers.size * self.config.env.groups_per_worker
        fresh = train.max_staleness * train.groups_per_update + self.awaited_groups
        return min(busy_workers, fresh)

    async def _enqueue(self, group: TrajectoryGroup) -> None:
        """Queue a finished group; a full queue holds the producer back (bounded memory)."""
        while not self.stopping:
            try:
                self.queue.put_nowait(group)
                return
            except asyncio.QueueFull:
                await asyncio.sleep(0.05)
        self.ledger.record(group, "dropped_end_of_run", "finished after the last update")

    async def _play_batch(self, n: int) -> None:
        groups = await asyncio.gather(*(self._play(*self.sampler.next()) for _ in range(n)))
        for group in groups:
            self.queue.put_nowait(group)

    async def _play(
        self, task: TaskRef, seed: int, version: int | None = None, greedy: bool = False
    ) -> TrajectoryGroup:
        """One group on the least-busy worker; a dead worker gives a failed group, is replaced."""
        size = 1 if greedy else self.config.rollout.group_size
        spec = GroupSpec(task.id, task.tier, seed, f"g{uuid.uuid4().hex[:10]}", size)
        limits = self.limits if not greedy else _greedy(self.limits)
        while (slot := self.workers.acquire()) is None:
            await asyncio.sleep(0.1)
        if not greedy:
            self.ledger.start(size)
        try:
            group = await slot.handle.play.remote(spec, limits, version)
        except Exception as exc:  # the actor died, or the engine failed mid-group
            group = _failed_group(spec, f"{slot.name}: {type(exc).__name__}: {exc}")
            if _is_actor_death(exc):
                self.workers.replace(slot)
        finally:
            self.workers.release(slot)
        self.watchdog.beat()
        if not greedy:
            self._account(group)
        return group

    def _account(self, group: TrajectoryGroup) -> None:
        self.state.groups_played += 1
        self.state.episodes_played += len(group.trajectories)
        for traj in group.trajectories:
            self.state.generated_tokens += traj.generated_tokens
            self.state.env_steps += len(traj.turns)
        self.metrics.observe_group(group)
        if not group.failed:
            self.sampler.observe(group.tier, [t.achieved for t in group.trajectories])

    async def _collect(self, n: int, wait: bool) -> list[tuple[TrajectoryGroup, int]]:
        """Take up to ``n`` trainable groups from the queue; record every other group's fate.

        ``wait``: block until ``n`` trainable groups came (async); else take what is queued (sync).
        """
        batch: list[tuple[TrajectoryGroup, int]] = []
        while len(batch) < n and (wait or not self.queue.empty()):
            self.awaited_groups = n - len(batch) if wait else 0
            group = await self.queue.get()
            self.awaited_groups = 0
            staleness = self.state.version - group.min_version
            if group.failed:
                self.ledger.record(group, "failed", group.error, self.state.updates)
            elif staleness > self.config.train.max_staleness:
                self.ledger.record(
                    group, "dropped_stale", f"staleness {staleness}", self.state.updates
                )
            elif len(set(group.rewards)) == 1:
                self.ledger.record(group, "dropped_zero_variance", "", self.state.updates)
            else:
                self.state.staleness[staleness] = self.state.staleness.get(staleness, 0) + 1
                batch.append((group, staleness))
        return batch

    async def _sync_updates(self, target: int) -> None:
        """Play one batch with the newest version, train on it, load the result, repeat."""
        while self.state.updates < target:
            await self._play_batch(self.config.train.groups_per_update)
            batch = await self._collect(self.config.train.groups_per_update, wait=False)
            if batch:
                await self._finish_update(batch, *await self._train(batch))
            await self._apply_control()

    async def _async_updates(self, target: int) -> None:
        """Train back to back: while the learner computes update k+1, the engines load version k
        and the driver books update k, so the learner never waits on weight sync or bookkeeping.
        The newest published version is the yardstick of staleness from the moment it exists
        (the groups of update k+1 are judged against it, as the learner's weights already are)."""
        started = self.state.updates
        finishing: asyncio.Future | None = None
        while started < target:
            batch = await self._collect(self.config.train.groups_per_update, wait=True)
            training = asyncio.ensure_future(self._train(batch))
            started += 1
            if finishing is not None:
                await finishing  # version k reaches the engines while k + 1 trains
            await self._apply_control()
            learner_metrics, adapter = await training
            if adapter is not None:
                self.state.version = adapter.version
            finishing = asyncio.ensure_future(self._finish_update(batch, learner_metrics, adapter))
        if finishing is not None:
            await finishing

    async def _train(self, batch: list[tuple[TrajectoryGroup, int]]):
        samples = [to_sample_group(g) for g, _ in batch]
        return await self.learner.train_and_publish.remote(samples, str(self.run_dir / "adapters"))

    async def _finish_update(
        self, batch: list[tuple[TrajectoryGroup, int]], learner_metrics, adapter
    ) -> None:
        """Load the new version into every engine, then book the update (ledger, metrics)."""
        swap_s = None
        if adapter is not None:
            started = time.perf_counter()
            await self.pool.load_adapter(adapter)  # raises if any engine's probe disagrees
            swap_s = time.perf_counter() - started
            self.state.version = adapter.version
            self.loaded_version = adapter.version
        self.state.updates += 1
        for group, staleness in batch:
            self.ledger.record(group, "trained", "", self.state.updates, staleness)
        self.watchdog.beat()
        health = await self.pool.health()
        self.metrics.log_update(
            self.state, learner_metrics, swap_s, health, self.queue.qsize(), self.workers.size,
            self.ledger.summary(), self.sampler,
        )  # fmt: skip
        self.control.report.remote(self.metrics.last)

    async def _apply_control(self) -> None:
        desired = await self.control.desired_env_workers.remote()
        if desired != self.workers.size:
            self.workers.resize(desired)
            self.metrics.event(f"env workers -> {desired}")

    # ---- evaluation ---------------------------------------------------------------------------

    async def evaluate(self, version: int) -> dict:
        """Greedy episodes on the held-out tasks under adapter ``version``, by tier: success,
        reward, mean max progress (the graders' partial credit), hints and format failures."""
        per_tier: dict[str, list[Trajectory]] = {}
        plays = [
            self._play(task, seed, version=version, greedy=True)
            for task in self.heldout
            for seed in range(self.config.run.eval_episodes)
        ]
        for group in await asyncio.gather(*plays):
            per_tier.setdefault(group.tier, []).extend(group.trajectories)
        return {
            tier: {
                "episodes": len(trajs),
                "success": sum(t.achieved for t in trajs) / len(trajs),
                "reward": sum(t.total_reward for t in trajs) / len(trajs),
                "progress": sum(t.max_progress for t in trajs) / len(trajs),
                "hints_per_episode": sum(t.hints_used for t in trajs) / len(trajs),
                "format_failures_per_episode": sum(t.format_failures for t in trajs) / len(trajs),
                "failed": sum(t.end == "failed" for t in trajs),
            }
            for tier, trajs in sorted(per_tier.items())
        }

    def shutdown(self) -> None:
        self.ledger.close()
        self.metrics.close()
        self.workers.shutdown()
        self.pool.shutdown()


def to_sample_group(group: TrajectoryGroup):
    from learner.types import Sample, SampleGroup

    samples = [
        Sample(
            token_ids=t.token_ids(),
            loss_mask=t.loss_mask(),
            behaviour_logprobs=t.behaviour_logprobs(),
            reward=t.total_reward,
            adapter_version=min(t.versions),
        )
        for t in group.trajectories
    ]
    return SampleGroup(group_id=group.group_id, task_id=group.task_id, samples=samples)


def _failed_group(spec: GroupSpec, error: str) -> TrajectoryGroup:
    trajs = [
        Trajectory(spec.task_id, spec.tier, spec.group_id, i, spec.seed, end="failed", error=error)
        for i in range(spec.size)
    ]
    return TrajectoryGroup(
        spec.group_id, spec.task_id, spec.tier, spec.seed, trajs, failed=True, error=error
    )


def _is_actor_death(exc: Exception) -> bool:
    import ray

    return isinstance(exc, ray.exceptions.RayActorError)


def _greedy(limits: EpisodeLimits) -> EpisodeLimits:
    return EpisodeLimits(
        max_steps=limits.max_steps,
        max_model_len=limits.max_model_len,
        max_new_tokens=limits.max_new_tokens,
        temperature=0.0,
        top_p=1.0,
    )


def _learner_resources(engine_cfg) -> dict:
    return (
        {"num_gpus": 1, "num_cpus": 1}
        if engine_cfg.resolved_device() == "cuda"
        else {"num_cpus": 1}
    )
