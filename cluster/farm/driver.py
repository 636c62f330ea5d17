"""The farm's driver: generation, env steps and learning, all at once.

Parts (none of them knows about this driver):
- ``EnginePool`` (serving/): M vLLM engines; adapters are broadcast to it and verified by probe.
- ``RolloutWorkerSet`` of ``RolloutWorker`` actors (rollout/): each owns env sessions and plays
  groups of G episodes of one task from one seeded initial state.
- ``LearnerActor`` (learner/): one GRPO update per batch of groups, then publishes a version.
- ``CurriculumSampler``: which training task next (``task_split`` decides which tasks are held
  out); ``Ledger``: every episode's fate; ``Metrics``: JSONL, TensorBoard, Ray/Prometheus,
  progress line; ``FarmControl``: the operator's scale knob; ``admission_target``: how many groups
  may be in flight.

``Farm.start()`` wires them; ``main_loop()`` drives them. In ``async`` mode group producers never
wait for the learner: finished groups go through a bounded queue, and a group sampled more than
``max_staleness`` versions before the current one is dropped, and the learner starts its next
update while the engines load the version it just published. ``sync`` mode plays one batch,
trains, publishes, and only then plays the next (for comparison and debugging).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from cluster.config import FarmConfig
from cluster.farm.admission import admission_target
from cluster.farm.curriculum import CurriculumSampler
from cluster.farm.ledger import Ledger
from cluster.farm.metrics import Metrics, RunState, Totals, UpdateRow
from cluster.farm.rollout_workers import RolloutWorkerSet
from cluster.farm.watchdog import Watchdog
from cluster.task_split import TaskRef, task_split
from learner.types import Sample, SampleGroup, UpdateMetrics, is_zero_variance
from rollout.episode import EpisodeLimits
from rollout.group import GroupSpec
from rollout.types import TrajectoryGroup
from serving.types import AdapterVersion

Batch = list[tuple[TrajectoryGroup, int]]  # trainable groups and their staleness


class Farm:
    """One run's driver. ``pool``, ``learner``, ``workers`` and ``control`` are the Ray parts
    (``Farm.start`` makes them); everything else is the driver's own state."""

    def __init__(
        self,
        config: FarmConfig,
        model_path: str,
        pool: Any,
        learner: Any,
        workers: RolloutWorkerSet,
        control: Any,
    ) -> None:
        self.config = config
        self.model_path = model_path
        self.run_dir = Path(config.run.out_dir) / config.run.name
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.pool = pool
        self.learner = learner
        self.workers = workers
        self.control = control
        self.split = task_split(config)
        self.sampler = CurriculumSampler(self.split.train, config.curriculum, config.run.seed)
        self.ledger = Ledger(self.run_dir / "ledger.jsonl")
        self.metrics = Metrics(self.run_dir, config.train.updates)
        self.state = RunState()
        self.queue: asyncio.Queue[TrajectoryGroup] = asyncio.Queue(maxsize=config.train.queue_size)
        self.limits = EpisodeLimits(
            max_steps=config.rollout.max_steps,
            max_model_len=config.engine.max_model_len,
            max_new_tokens=config.rollout.max_new_tokens,
            temperature=config.rollout.temperature,
            top_p=config.rollout.top_p,
        )
        self.group_size = config.rollout.group_size
        self.watchdog = Watchdog(config.run.watchdog_s, self.run_dir)  # armed by main_loop
        self.stopping = False
        self.awaited_groups = 0  # trainable groups the learner's current batch still waits for
        self.loaded_version = 0  # the newest version every engine serves

    # ---- wiring -------------------------------------------------------------------------------

    @classmethod
    def start(cls, config: FarmConfig, model_path: str) -> Farm:
        """Start the engines, the learner and the env workers (bounded waits), then the driver."""
        import ray

        from cluster.farm.control import start_control
        from learner.actor import create_learner_actor
        from rollout.worker import rollout_worker_class
        from serving.engine_pool import EnginePool

        run_dir = Path(config.run.out_dir) / config.run.name
        run_dir.mkdir(parents=True, exist_ok=True)
        # The exact config of this run, beside its outputs (eval and resume read it back).
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
        engine_cfg = config.engine.with_model(model_path)
        pool = EnginePool.start(engine_cfg, num_engines=config.run.engines)
        learner_options = {}
        if engine_cfg.resolved_device() == "cuda":
            learner_options["num_gpus"] = config.run.learner_gpu_share
        learner = create_learner_actor(
            config.learner.with_model(model_path),
            torch_threads=config.run.learner_threads,
            **learner_options,
        )
        worker_cls = rollout_worker_class()
        env, max_steps = config.env, config.rollout.max_steps

        def start_worker(name: str):
            return worker_cls.options(name=None, num_cpus=0.5).remote(
                name, pool, model_path, env, max_steps
            )

        workers = RolloutWorkerSet(factory=start_worker)
        workers.resize(env.workers)
        control = start_control(config.run.name, env.workers)
        ray.get(learner.state.remote(), timeout=600)  # the learner has loaded its model
        return cls(config, model_path, pool, learner, workers, control)

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
        self.loaded_version = self.state.version
        self.watchdog = Watchdog(self.config.run.watchdog_s, self.run_dir)
        self.watchdog.start()
        producer = asyncio.ensure_future(self._produce()) if mode == "async" else None
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
        """Keep the admitted number of groups in flight; finished groups go to the queue."""
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
        train = self.config.train
        return admission_target(
            self.workers.size * self.config.env.groups_per_worker,
            train.max_staleness,
            train.groups_per_update,
            self.awaited_groups,
        )

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
        size = 1 if greedy else self.group_size
        spec = GroupSpec(task.id, task.tier, seed, f"g{uuid.uuid4().hex[:10]}", size)
        limits = self.limits.greedy() if greedy else self.limits
        while (slot := self.workers.acquire()) is None:
            await asyncio.sleep(0.1)
        if not greedy:
            self.ledger.start(size)
        try:
            group = await slot.handle.play.remote(spec, limits, version)
        except Exception as exc:  # the actor died, or the engine failed mid-group
            group = spec.failed(f"{slot.name}: {type(exc).__name__}: {exc}")
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

    async def _collect(self, n: int, wait: bool) -> Batch:
        """Take up to ``n`` trainable groups from the queue; record every other group's fate.

        ``wait``: block until ``n`` trainable groups came (async); else take what is queued (sync).
        """
        batch: Batch = []
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
            elif is_zero_variance(group.rewards):
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

    async def _train(self, batch: Batch) -> tuple[UpdateMetrics, AdapterVersion | None]:
        samples = [to_sample_group(g) for g, _ in batch]
        return await self.learner.train_and_publish.remote(samples, str(self.run_dir / "adapters"))

    async def _finish_update(
        self, batch: Batch, learner_metrics: UpdateMetrics, adapter: AdapterVersion | None
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
        row = self.metrics.log_update(
            self.state, learner_metrics, swap_s, await self.pool.health(), self.queue.qsize(),
            self.workers.size, self.ledger.summary(), self.sampler.frontier_tier,
        )  # fmt: skip
        self.control.report.remote(row.as_dict())

    async def _apply_control(self) -> None:
        desired = await self.control.desired_env_workers.remote()
        if desired != self.workers.size:
            self.workers.resize(desired)
            self.metrics.event(f"env workers -> {desired}")

    # ---- what benches and operators may change or read ----------------------------------------

    async def scale(self, env_workers: int) -> None:
        """Set the env-worker count (as ``rlfarm scale`` does) and wait until every worker is up."""
        await self.control.set_env_workers.remote(env_workers)
        self.workers.resize(env_workers)
        await asyncio.gather(*(slot.handle.ping.remote() for slot in self.workers.slots))

    def set_group_size(self, group_size: int) -> None:
        """G of the groups started from now on."""
        if group_size < 2:
            raise ValueError(f"group size {group_size}: GRPO needs at least 2 episodes per group")
        self.group_size = group_size

    @property
    def history(self) -> list[UpdateRow]:
        """Every update's metrics row so far."""
        return self.metrics.history

    async def totals(self) -> Totals:
        """The running totals now (a measuring window starts or ends here)."""
        health = await self.pool.health()
        return Totals(
            update=self.state.updates,
            time_s=time.perf_counter() - self.state.started,
            episodes_total=self.state.episodes_played,
            generated_tokens_total=self.state.generated_tokens,
            env_steps_total=self.state.env_steps,
            engine_busy_s=sum(h["busy_s"] for h in health),
        )

    # ---- evaluation ---------------------------------------------------------------------------

    async def evaluate(self, version: int) -> dict[str, dict]:
        """Greedy episodes on the held-out tasks under adapter ``version``, played by the env
        workers and scored by ``rlfarm eval``'s own live metrics, per tier and overall."""
        from cluster.evaluation.live import evaluate_live
        from cluster.evaluation.scoring import live_summary, record_from_trajectory

        async def play(task: TaskRef, seed: int):
            group = await self._play(task, seed, version=version, greedy=True)
            return record_from_trajectory(group.trajectories[0])

        episodes = self.config.run.eval_episodes
        concurrency = max(1, len(self.split.heldout) * episodes)
        return live_summary(await evaluate_live(play, self.split.heldout, episodes, concurrency))

    def shutdown(self) -> None:
        import ray

        self.ledger.close()
        self.metrics.close()
        self.workers.shutdown()
        self.pool.shutdown()
        ray.kill(self.control)  # its name is global on the cluster: free it for the next run


def to_sample_group(group: TrajectoryGroup) -> SampleGroup:
    """A scored rollout group as the learner's input: token-exact samples, nothing re-tokenised."""
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


def _is_actor_death(exc: Exception) -> bool:
    import ray

    return isinstance(exc, ray.exceptions.RayActorError)
