"""The farm's driver: generation, env steps and learning, all at once, surviving its parts.

Parts (none of them knows about this driver):
- ``EnginePool`` (serving/): M vLLM engines; adapters are broadcast to it and verified by probe;
  a dead engine is restarted by Ray and catches up to the current adapter before serving.
- ``RolloutWorkerSet`` of ``RolloutWorker`` actors (rollout/): each owns env sessions and plays
  groups of G episodes of one task from one seeded initial state; a dead one is replaced.
- ``LearnerActor`` (learner/): one GRPO update per batch of groups, then publishes a version and
  hands back its full state, from which a restarted learner or a resumed run continues.
- ``CurriculumSampler``: which training task next (``task_split`` decides which tasks are held
  out); ``admission_target``: how many groups may be in flight; ``Ledger``: every episode's fate;
  ``Metrics``: JSONL, TensorBoard, Ray/Prometheus, progress line; ``CheckpointStore``: learner +
  driver state; ``FailureLimits`` and ``Watchdog``: stop a run that cannot progress;
  ``FarmControl``: the operator's scale knob.

``Farm.start()`` wires them, ``begin()`` writes the first checkpoint or restores the newest one,
``main_loop()`` drives them. In ``async`` mode group producers never wait for the learner:
finished groups go through a bounded queue, a group sampled more than ``max_staleness`` versions
before the newest is dropped, and the learner starts its next update while the engines load the
version it just published. ``sync`` mode plays one batch, trains, publishes, and only then plays
the next (for comparison and debugging). Any way the run stops early is a ``RunStopped``: the
driver then writes a checkpoint of the last booked update and books every episode in flight as
``interrupted``, so the ledger balances and ``--resume`` can continue.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import yaml

from cluster.config import FarmConfig
from cluster.farm.admission import admission_target
from cluster.farm.checkpoints import Checkpoint, CheckpointStore
from cluster.farm.curriculum import CurriculumSampler
from cluster.farm.episode_log import EpisodeLog
from cluster.farm.eval_curve import EvalCurve
from cluster.farm.failures import FailureLimits, RunStopped
from cluster.farm.faults import inject_due
from cluster.farm.ledger import Ledger
from cluster.farm.metrics import Metrics, RunState, Totals, UpdateRow
from cluster.farm.recovery import Recovery
from cluster.farm.rollout_workers import RolloutWorkerSet
from cluster.farm.watchdog import Watchdog
from cluster.farm.wiring import check_run_dir, run_directory, start_parts
from cluster.progress import Progress
from cluster.task_split import TaskRef, TaskSplit, task_split
from learner.types import Sample, SampleGroup, lacks_signal, reward_spread
from rollout.episode import EpisodeLimits
from rollout.group import GroupSpec
from rollout.sessions import task_renamer
from rollout.types import TrajectoryGroup
from serving.adapter_files import published_versions, store_adapter

Batch = list[tuple[TrajectoryGroup, int]]  # trainable groups and their staleness


class Farm:
    """One run's driver. ``pool``, ``learner``, ``workers`` and ``control`` are the Ray parts
    (``Farm.start`` makes them, in the resources ``placement`` reserved); ``resume_from`` is the
    checkpoint a resumed run continues."""

    def __init__(
        self,
        config: FarmConfig,
        model_path: str,
        pool: Any,
        learner: Any,
        workers: RolloutWorkerSet,
        control: Any,
        split: TaskSplit,
        resume_from: Checkpoint | None = None,
        placement: Any = None,
    ) -> None:
        self.config = config
        self.model_path = model_path
        self.run_dir = run_directory(config)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.pool = pool
        self.learner = learner
        self.workers = workers
        self.control = control
        self.split = split
        # The task stream varies with the learner's seed too: runs that differ only in
        # learner.seed are independent replicates over the same split (run.seed).
        self.sampler = CurriculumSampler(
            self.split.train, config.curriculum, f"{config.run.seed}/{config.learner.seed}",
            task_renamer(config.env),
        )  # fmt: skip
        last = resume_from.driver.updates if resume_from else None
        ledger_path = self.run_dir / "ledger.jsonl"
        self.ledger = (
            Ledger.resume(ledger_path, last, f"the driver stopped; resumed after update {last}")
            if resume_from
            else Ledger(ledger_path)
        )
        self.metrics = Metrics(self.run_dir, config.train.updates, resume_after=last)
        self.episodes = EpisodeLog(
            self.run_dir / "episodes", config.run.episodes_sample, config.run.episodes_max_mb
        )
        self.ledger.on_fate = self.episodes.add
        self.eval_curve = EvalCurve(self.run_dir)
        per_tier = config.run.eval_train_tasks
        self.eval_train_tasks = [  # the same training tasks at every periodic eval
            task
            for tier in dict.fromkeys(t.tier for t in split.train)
            for task in [t for t in split.train if t.tier == tier][:per_tier]
        ]
        self.recovery = Recovery(
            CheckpointStore(self.run_dir, config.train.keep_checkpoints), resume_from,
            config.run.max_learner_restarts,
        )  # fmt: skip
        self.failures = FailureLimits(
            config.train.max_consecutive_failed_groups, config.train.max_groups_without_signal
        )
        self.state = RunState()
        self.queue: asyncio.Queue[TrajectoryGroup] = asyncio.Queue(maxsize=config.train.queue_size)
        self.limits = EpisodeLimits(
            max_steps=config.rollout.max_steps,
            max_model_len=config.engine.max_model_len,
            max_new_tokens=config.rollout.max_new_tokens,
            temperature=config.rollout.temperature,
            top_p=config.rollout.top_p,
        )
        self.eval_limits = self.limits.sampled(config.run.eval_temperature)
        self.group_size = config.rollout.group_size
        self.sticky = config.engine.routing == "sticky"
        self.watchdog: Watchdog | None = None  # armed by main_loop
        self.stopping = False
        self.awaited_groups = 0  # trainable groups the learner's current batch still waits for
        self.loaded_version = 0  # the newest version every engine serves
        self.published: list[int] = []  # versions published so far, ascending
        self.before: dict | None = None  # the held-out views' eval before training, once made
        self.engine_restarts = 0
        self.placement = placement  # cluster.placement.FarmPlacement (released at shutdown)
        self._engine_starts: dict[str, tuple] = {}
        self._pending_updates = 0  # updates trained and being booked (async mode)
        self._disk_versions = max(published_versions(self.run_dir / "adapters"), default=0)
        self._stop: RunStopped | None = None
        self._main: asyncio.Task | None = None

    # ---- wiring -------------------------------------------------------------------------------

    @classmethod
    def start(cls, config: FarmConfig, model_path: str, resume: bool = False) -> Farm:
        """Start the engines, the learner and the env workers (bounded waits), then the driver.
        With ``resume`` the newest checkpoint in the run directory is continued."""
        run_dir = run_directory(config)
        check_run_dir(run_dir, resume)
        split = task_split(config)  # the env's tasks, checked before anything starts
        run_dir.mkdir(parents=True, exist_ok=True)
        checkpoint = CheckpointStore(run_dir, config.train.keep_checkpoints).latest()
        # The exact config of this run, beside its outputs (eval and resume read it back).
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
        parts = start_parts(config, model_path)
        return cls(config, model_path, parts.pool, parts.learner, parts.workers, parts.control,
                   split, checkpoint if resume else None, parts.placement)  # fmt: skip

    async def begin(self) -> None:
        """A new run writes its first checkpoint (update 0); a resumed one restores the newest:
        the learner continues from it and the engines load its adapter before generating."""
        await self.recovery.begin(self)

    # ---- the loop -----------------------------------------------------------------------------

    async def main_loop(self, updates: int | None = None, mode: str | None = None) -> dict:
        """Run learner updates until ``train.updates`` in total (or ``updates`` more) are done.
        Raises ``RunStopped`` if the run stops early (after booking and checkpointing it).

        May be called again on the same farm (a benchmark runs stages in different modes).
        """
        await self.begin()
        cfg = self.config.train
        mode = mode or cfg.mode
        target = cfg.updates if updates is None else self.state.updates + updates
        self.metrics.total_updates = target
        self.stopping = False
        self.awaited_groups = 0
        self._pending_updates = 0
        self._stop = None
        self._main = asyncio.current_task()
        self.watchdog = Watchdog(self.config.run.watchdog_s, self.run_dir, self._on_stall)
        self.watchdog.start()
        producer = self._spawn(self._produce(), "the group producer") if mode == "async" else None
        try:
            if mode == "async":
                await self._async_updates(target)
            else:
                await self._sync_updates(target)
        except asyncio.CancelledError:
            if self._stop is None:
                raise  # cancelled from outside: not ours to explain
        except RunStopped as stopped:
            self._stop = self._stop or stopped
        except Exception as exc:  # a part failed in a way no limit covers: say what, stop cleanly
            self._stop = self._stop or RunStopped("error", f"{type(exc).__name__}: {exc}")
            self._stop.__cause__ = exc
        finally:
            self.stopping = True
            self.watchdog.stop()
            await self._wind_down(producer)
        if self._stop is not None:
            raise self._stop
        return self.ledger.summary()

    async def play_only(
        self,
        groups: int,
        on_group: Callable[[int, TrajectoryGroup], Awaitable[None]] | None = None,
    ) -> None:
        """Play ``groups`` groups with the farm's whole rollout capacity in flight and train on
        none: the engines and env workers at full load with the learner idle (the rollout-only
        stage of ``rlfarm bench rollout``). Each group is booked ``rollout_only`` (or ``failed``);
        ``on_group(n, group)`` is awaited after the n-th one finishes."""
        await self.begin()
        capacity = self.workers.size * self.config.env.groups_per_worker
        inflight: set[asyncio.Future] = set()
        started = finished = 0
        while finished < groups:
            while started < groups and len(inflight) < capacity:
                inflight.add(asyncio.ensure_future(self._play(*self.sampler.next())))
                started += 1
            done, inflight = await asyncio.wait(inflight, return_when="FIRST_COMPLETED")
            for fut in done:
                group = fut.result()
                if group.failed:
                    self.ledger.record(group, "failed", group.error, self.state.updates)
                else:
                    self.ledger.record(group, "rollout_only", "", self.state.updates)
                finished += 1
                if on_group is not None:
                    await on_group(finished, group)

    async def _wind_down(self, producer: asyncio.Task | None) -> None:
        """Book every group still around: after a completed loop the groups in flight finish and
        are dropped as end-of-run; after an early stop they are cut off as interrupted, and the
        last booked update is checkpointed."""
        early = self._stop is not None
        if producer is not None:
            if early:
                producer.cancel()
            with contextlib.suppress(asyncio.CancelledError, RunStopped):
                await producer
        fate = "interrupted" if early else "dropped_end_of_run"
        while not self.queue.empty():
            self.ledger.record(self.queue.get_nowait(), fate, "queued when the run stopped")
        if early:
            reason = f"the run stopped ({self._stop.kind}): {self._stop.message.splitlines()[0]}"
            self.ledger.interrupt_open(reason)
            await self.recovery.checkpoint(self)

    async def _produce(self) -> None:
        """Keep the admitted number of groups in flight; finished groups go to the queue."""
        inflight: set[asyncio.Future] = set()
        try:
            while not self.stopping or inflight:
                # While a published version is still being loaded, a group started now would open
                # on the outgoing one and reach the learner a version staler than need be: hold
                # it back for the swap (tens of ms).
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
        except asyncio.CancelledError:
            for fut in inflight:  # their groups are booked interrupted by the wind-down
                fut.cancel()
            raise

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
        self, task: TaskRef, seed: int, version: int | None = None, evaluation: bool = False
    ) -> TrajectoryGroup:
        """One group on the least-busy worker; a dead worker gives a failed group, is replaced.
        An ``evaluation`` plays ``run.eval_episodes`` episodes at the eval's temperature and is
        not booked."""
        size = self.config.run.eval_episodes if evaluation else self.group_size
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
            staleness = self._staleness(group)
            if group.failed:
                self.ledger.record(group, "failed", group.error, self.state.updates)
                self.failures.failed_group(group)
                continue
            min_spread = self.config.learner.min_reward_spread
            trainable = not lacks_signal(group.rewards, min_spread)
            self.failures.played(group, trainable)
            if staleness > self.config.train.max_staleness:
                self.ledger.record(
                    group, "dropped_stale", f"staleness {staleness}", self.state.updates
                )
            elif not trainable:
                spread = reward_spread(group.rewards)
                why = f"reward spread {spread:.3g} <= learner.min_reward_spread" if spread else ""
                self.ledger.record(group, "dropped_zero_variance", why, self.state.updates)
            else:
                self.state.staleness[staleness] = self.state.staleness.get(staleness, 0) + 1
                batch.append((group, staleness))
                self.watchdog.beat()
        return batch

    def _staleness(self, group: TrajectoryGroup) -> int:
        """Versions published after the oldest one the group was sampled with (numbers may
        skip after a resume or a learner restart, so they are counted, not subtracted)."""
        return sum(v > group.min_version for v in self.published)

    def version_floor(self) -> int:
        """Every version number up to this one is taken (published now or before a resume)."""
        return max([self._disk_versions, *self.published])

    def store_adapter(self, adapter) -> None:
        """The run directory's copy of a version (the driver's disk; engines keep their own)."""
        store_adapter(adapter, self.run_dir / "adapters", self.config.learner.keep_last)

    def note_published(self, version: int) -> None:
        """The newest published version, the yardstick of staleness from the moment it exists."""
        self.published.append(version)
        self.state.version = version

    async def _sync_updates(self, target: int) -> None:
        """Play one batch with the newest version, train on it, load the result, repeat."""
        while self.state.updates < target:
            await self._play_batch(self.config.train.groups_per_update)
            batch = await self._collect(self.config.train.groups_per_update, wait=False)
            if batch and (result := await self._update(batch)) is not None:
                if result.adapter is not None:
                    self.note_published(result.adapter.version)
                self._pending_updates += 1
                await self._finish_update(batch, result, target)
            await self._apply_control()

    async def _async_updates(self, target: int) -> None:
        """Train back to back: while the learner computes update k+1, the engines load version k
        and the driver books update k, so the learner never waits on weight sync or bookkeeping.
        The newest published version is the yardstick of staleness from the moment it exists
        (the groups of update k+1 are judged against it, as the learner's weights already are)."""
        finishing: asyncio.Task | None = None
        while self.state.updates + self._pending_updates < target:
            batch = await self._collect(self.config.train.groups_per_update, wait=True)
            training = asyncio.ensure_future(self._update(batch))
            if finishing is not None:
                await finishing  # version k reaches the engines while k + 1 trains
                finishing = None
            await self._apply_control()
            result = await training
            if result is None:
                continue  # the learner died; it continues from its last state
            if result.adapter is not None:
                self.note_published(result.adapter.version)
            self._pending_updates += 1
            finishing = self._spawn(self._finish_update(batch, result, target), "booking an update")
        if finishing is not None:
            await finishing

    async def _update(self, batch: Batch):
        """One learner update on ``batch``; None if the learner died (its groups are booked
        failed, and the restarted learner continues from the last booked state)."""
        import ray

        samples = [to_sample_group(g) for g, _ in batch]
        try:
            return await self.learner.update.remote(samples, self.version_floor())
        except ray.exceptions.RayActorError as exc:
            cause = f"the learner died during an update: {type(exc).__name__}: {exc}"
            for group, _ in batch:
                self.ledger.record(group, "failed", cause, self.state.updates)
            await self.recovery.restart_learner(self, cause)
            return None

    async def _finish_update(self, batch: Batch, result, target: int) -> None:
        """Load the new version into every engine, book the update (ledger, metrics, learner
        state), and checkpoint when due."""
        swap_s = None
        if result.adapter is not None:
            await asyncio.to_thread(self.store_adapter, result.adapter)
            started = time.perf_counter()
            await self.pool.load_adapter(result.adapter)  # raises if any engine's probe disagrees
            swap_s = time.perf_counter() - started
            self.loaded_version = result.adapter.version
        self.state.updates += 1
        self._pending_updates -= 1
        self.recovery.booked(result.state)
        for group, staleness in batch:
            self.ledger.record(group, "trained", "", self.state.updates, staleness)
        self.watchdog.beat()
        health = await self.pool.health()
        self._note_engine_restarts(health)
        row = self.metrics.log_update(
            self.state, result.metrics, swap_s, health, self.queue.qsize(), self.workers.size,
            self.ledger.summary(), self.sampler.frontier_tier,
        )  # fmt: skip
        self.control.report.remote(row.as_dict())
        updates = self.state.updates
        if updates % self.config.train.checkpoint_every == 0 or updates >= target:
            await self.recovery.checkpoint(self)
        every = self.config.train.eval_every
        if every and updates % every == 0 and updates < target:
            await self.periodic_eval(updates)
        await inject_due(self, updates)

    def _note_engine_restarts(self, health: list[dict]) -> None:
        for report in health:
            if "pid" not in report:
                continue  # down right now; counted when it is back
            key, started = report["engine_id"], (report["pid"], report["started_at"])
            if self._engine_starts.get(key, started) != started:
                self.engine_restarts += 1
                self.metrics.event(f"{key} was restarted (now pid {report['pid']})")
            self._engine_starts[key] = started

    async def _apply_control(self) -> None:
        desired = await self.control.desired_env_workers.remote()
        if desired != self.workers.size:
            self.workers.resize(desired)
            self.metrics.event(f"env workers -> {desired}")

    # ---- stopping early -----------------------------------------------------------------------

    def _spawn(self, coro: Coroutine, what: str) -> asyncio.Task:
        """A background task whose failure stops the run at once (never a silent deadlock)."""
        task = asyncio.ensure_future(coro)

        def surface(done: asyncio.Task) -> None:
            if done.cancelled() or done.exception() is None:
                return
            exc = done.exception()
            if isinstance(exc, RunStopped):
                self.stop(exc)
            else:
                self.stop(RunStopped("error", f"{what} failed: {type(exc).__name__}: {exc}"))

        task.add_done_callback(surface)
        return task

    def stop(self, reason: RunStopped) -> None:
        """Stop the run early (the first reason wins); safe from signal handlers and callbacks."""
        if self._stop is None and not self.stopping:
            self._stop = reason
            if self._main is not None and not self._main.done():
                self._main.cancel()

    async def stoppable(self, work: Awaitable[Any]) -> Any:
        """Await ``work`` (start-up, the first eval) so that a signal or ``stop`` ends it as it
        ends the main loop: raises the ``RunStopped`` (a stop before the loop was lost, and
        SIGTERM during the first eval did nothing)."""
        self._main = asyncio.current_task()
        try:
            return await work
        except asyncio.CancelledError:
            if self._stop is None:
                raise
            raise self._stop from None
        finally:
            self._main = None

    def request_stop(self, signal_name: str) -> None:
        """SIGTERM/SIGINT: stop, checkpoint the last booked update, keep the ledger balanced."""
        self.stop(RunStopped("signal", f"stopped by {signal_name}: continue with --resume"))

    def _on_stall(self, message: str) -> None:  # called from the watchdog's thread
        loop = self._main.get_loop() if self._main is not None else None
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.stop, RunStopped("watchdog", message))

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

    def set_routing(self, routing: str) -> None:
        """'sticky' or 'least_loaded' for the groups started from now on."""
        if routing not in ("sticky", "least_loaded"):
            raise ValueError(f"routing {routing!r}: use 'sticky' or 'least_loaded'")
        self.sticky = routing == "sticky"

    @property
    def history(self) -> list[UpdateRow]:
        """Every update's metrics row so far."""
        return self.metrics.history

    async def totals(self) -> Totals:
        """The running totals now (a measuring window starts or ends here)."""
        health = await self.pool.health()
        return Totals(
            update=self.state.updates,
            time_s=self.state.elapsed(),
            episodes_total=self.state.episodes_played,
            generated_tokens_total=self.state.generated_tokens,
            env_steps_total=self.state.env_steps,
            engine_busy_s=sum(h["busy_s"] for h in health),
            prefix_cache_queries=sum(h.get("prefix_cache_queries", 0) for h in health),
            prefix_cache_hits=sum(h.get("prefix_cache_hits", 0) for h in health),
        )

    async def whereabouts(self) -> dict:
        """The Ray nodes the engines and the learner run on, and the adapters each engine loaded."""
        health = await self.pool.health()
        return {
            "engines": [
                {k: h.get(k) for k in ("engine_id", "node_id", "adapters_loaded")} for h in health
            ],
            "learner_node_id": await self.learner.node_id.remote(),
        }

    # ---- evaluation ---------------------------------------------------------------------------

    async def evaluate(
        self, version: int, tasks: list[TaskRef], name: str = "held-out"
    ) -> dict[str, dict]:
        """``run.eval_episodes`` sampled episodes (``run.eval_temperature``; 0: greedy) of each of
        ``tasks`` under adapter ``version``, played by the env workers as one group per task (one
        initial state, ``EVAL_SEED``; independent draws) and scored by ``rlfarm eval``'s own live
        metrics: by tier and by task (``scoring.live_result``)."""
        from cluster.evaluation.live import EVAL_SEED
        from cluster.evaluation.scoring import live_result, record_from_trajectory

        episodes = self.config.run.eval_episodes
        progress = Progress(
            f"{name} eval of v{version}", len(tasks) * episodes, "episodes", stream=sys.stdout
        )

        async def play(task: TaskRef) -> list:
            group = await self._play(task, EVAL_SEED, version=version, evaluation=True)
            self.episodes.add(group, "eval", f"{name} eval of v{version}", self.state.updates)
            progress.advance(len(group.trajectories))
            return [record_from_trajectory(t) for t in group.trajectories]

        with progress:
            played = await asyncio.gather(*(play(t) for t in tasks))
        return live_result([record for group in played for record in group])

    async def evaluate_heldout(self, version: int) -> dict[str, dict]:
        """Every held-out view (``TaskSplit.views``: new_names, new_tasks) under ``version``;
        none with ``run.eval_episodes`` 0."""
        if self.config.run.eval_episodes == 0:
            return {}
        return {
            view: await self.evaluate(version, tasks, f"held-out {view}")
            for view, tasks in self.split.views().items()
        }

    async def periodic_eval(self, update: int, heldout: dict | None = None) -> None:
        """One point of the eval curve: the held-out views (``heldout`` if already played) and
        the fixed training tasks under the version the engines serve now."""
        version = self.loaded_version
        if heldout is None:
            heldout = await self.evaluate_heldout(version)
        train = await self.evaluate(version, self.eval_train_tasks, "training-task")
        by_split = {view: result["by_tier"] for view, result in heldout.items()}
        by_split["train"] = train["by_tier"]
        await asyncio.to_thread(self.eval_curve.add, update, version, by_split)
        overall = {split: tiers.get("all") for split, tiers in by_split.items()}
        self.metrics.event(f"periodic eval at update {update} (v{version}): {overall}")

    def shutdown(self) -> None:
        import ray

        self.ledger.interrupt_open("the driver shut down")  # balanced on every way out
        self.ledger.close()
        self.episodes.close()
        self.metrics.close()
        self.workers.shutdown()
        self.pool.shutdown()
        ray.kill(self.learner, no_restart=True)
        ray.kill(self.control)  # its name is global on the cluster: free it for the next run
        if self.placement is not None:
            self.placement.release()


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
