"""The farm's driver: generation, env steps and learning, all at once, surviving its parts.

The Ray parts (none knows about this driver): ``EnginePool`` (serving/, M vLLM engines that
load each published adapter, verified by probe), the ``RolloutWorkerSet`` (env workers that
play groups of G episodes), the ``LearnerActor`` (one GRPO update per batch, then a version
and its full state) and ``FarmControl`` (the operator's scale knob). The driver's own parts,
one module each under cluster/farm/: ``playing`` and ``producing`` (groups started and kept in
flight), ``batching`` (each finished group's fate), ``publishing`` (versions and the swap),
``recovery`` (checkpoints, resume, a restarted learner), ``evaluating``, ``stopping``,
``faults``, ``engine_watch``, and the records (``Ledger``, ``Metrics``, ``EpisodeLog``).

``Farm.start()`` wires them, ``begin()`` writes the first checkpoint or restores the newest one,
``main_loop()`` drives them. In ``async`` mode group producers never wait for the learner:
finished groups go through a bounded queue, a group sampled more than ``max_staleness`` versions
before the newest is dropped, and the learner starts its next update while the engines load the
version it just published. ``sync`` mode plays one batch (a group without signal replaced by
another, so both modes train full batches), trains, publishes, and only then plays the next
(for comparison and debugging). Any way the run stops early is a ``RunStopped``: the
driver then writes a checkpoint of the last booked update and books every episode in flight as
``interrupted``, so the ledger balances and ``--resume`` can continue.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import yaml

from cluster.base.config import FarmConfig
from cluster.base.task_split import TaskSplit, task_split
from cluster.farm.autoscale import Window, WorkerAutoscaler, autoscaler_for
from cluster.farm.batching import Batch, Batcher, to_sample_group
from cluster.farm.checkpoints import Checkpoint, CheckpointStore, DriverState
from cluster.farm.curriculum import CurriculumSampler
from cluster.farm.engine_watch import EngineWatch
from cluster.farm.episode_log import EpisodeLog
from cluster.farm.eval_curve import EvalCurve
from cluster.farm.evaluating import Evaluator, fixed_training_tasks, overall
from cluster.farm.failures import FailureLimits, RunStopped
from cluster.farm.faults import FaultInjector
from cluster.farm.ledger import Ledger
from cluster.farm.metrics import Metrics, RunState, Totals, UpdateRow
from cluster.farm.playing import GroupPlayer, episode_limits
from cluster.farm.producing import Producer
from cluster.farm.publishing import Versions
from cluster.farm.recovery import Recovery
from cluster.farm.stopping import StopLatch
from cluster.farm.watchdog import Watchdog
from cluster.farm.wiring import FarmParts, check_run_dir, run_directory, start_parts
from rollout.env_backends import task_renamer
from rollout.types import TrajectoryGroup


class Farm:
    """One run's driver. ``parts`` are the Ray parts (``Farm.start`` makes them, in the resources
    it reserved for them); ``resume_from`` is the checkpoint a resumed run continues."""

    def __init__(
        self,
        config: FarmConfig,
        model_path: str,
        parts: FarmParts,
        split: TaskSplit,
        resume_from: Checkpoint | None = None,
    ) -> None:
        self.config = config
        self.model_path = model_path
        self.run_dir = run_directory(config)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.parts = parts
        self.engine_pool, self.learner, self.workers = (
            parts.engine_pool,
            parts.learner,
            parts.workers,
        )
        self.control = parts.control
        self.split = split
        # The task stream varies with the learner's seed too: runs that differ only in
        # learner.seed are independent replicates over the same split (run.seed).
        self.sampler = CurriculumSampler(
            self.split.train, config.curriculum, f"{config.run.seed}/{config.learner.seed}",
            task_renamer(config.env),
        )  # fmt: skip
        self._open_records(resume_from)
        self.state = RunState()
        self.versions = Versions(self.run_dir / "adapters", config.learner.keep_last)
        self.recovery = Recovery(
            CheckpointStore(self.run_dir, config.train.keep_checkpoints), resume_from,
            config.run.max_learner_restarts, self.learner, self.metrics.event,
        )  # fmt: skip
        self._wire_loop()
        self.watchdog: Watchdog | None = None  # armed by main_loop
        self.before: dict | None = None  # the held-out views' eval before training, once made
        self.engine_watch = EngineWatch(self.engine_pool, self.metrics.event)
        self._pending_updates = 0  # updates trained and being booked (async mode)
        self.autoscaler = autoscaler_for(config)  # env.workers: auto (None: a fixed count)
        self._window_start: tuple[float, int] | None = None  # (time_s, episodes) at the last row
        self._begun = False

    def _wire_loop(self) -> None:
        """The loop's own parts: who plays groups, which reach the learner, how a run stops."""
        config, workers = self.config, self.workers
        self.failures = FailureLimits(
            config.train.max_consecutive_failed_groups, config.train.max_groups_without_signal
        )
        self.queue: asyncio.Queue[TrajectoryGroup] = asyncio.Queue(maxsize=config.train.queue_size)
        self.latch = StopLatch()
        self.batcher = Batcher(
            self.queue, self.ledger, self.failures, self.versions, config.train.max_staleness,
            config.learner.min_reward_spread, self._on_trainable,
            needs_mixed_outcomes=config.train.signal == "success",
        )  # fmt: skip
        self.faults = FaultInjector(
            config.run.faults, self.engine_pool.handles, self.learner, workers, self.metrics.event
        )
        limits = episode_limits(config)
        self.player = GroupPlayer(
            workers, limits, limits.sampled(config.run.eval_temperature),
            config.run.eval_episodes, self.ledger, self.state, self.metrics, self.sampler,
            config.run.max_replays,
        )  # fmt: skip
        self.ledger.on_lost = self.player.requeue
        self.player.set_group_size(config.rollout.group_size)
        self.player.set_routing(config.engine.routing)
        self.producer = Producer(
            self.player, self.queue, self.ledger, self.latch, self.versions, self.batcher,
            lambda: min(workers.size * config.env.groups_per_worker, config.inflight_groups),
            (config.train.max_staleness, config.train.groups_per_update), self._apply_control,
        )  # fmt: skip

    def _open_records(self, resume_from: Checkpoint | None) -> None:
        """The run's ledger, metrics, episode log and eval curve (a resumed run continues them)."""
        config = self.config
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
        self.evaluator = Evaluator(
            lambda task, seed, version: self.player.play(task, seed, version, evaluation=True),
            self.split.views(), fixed_training_tasks(self.split.train, config.run.eval_train_tasks),
            config.run.eval_episodes, self.episodes, EvalCurve(self.run_dir), self.metrics.event,
        )  # fmt: skip

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
        return cls(config, model_path, parts, split, checkpoint if resume else None)

    async def begin(self) -> None:
        """A new run writes its first checkpoint (update 0); a resumed one restores the newest:
        the learner continues from it and the engines load its adapter before generating."""
        if self._begun:
            return
        self._begun = True
        restored = await self.recovery.start()
        if restored is None:
            await self.recovery.checkpoint(self.driver_state())
            return
        self.state.restore(restored.totals)
        self.sampler.load_state(restored.curriculum)
        # Draws the run made after the checkpoint are not made again: the lost ones replay.
        self.sampler.skip_to(self.ledger.next_draw)
        for lost in self.ledger.replays:
            self.player.requeue(lost)
        self.versions.restore(restored.published)
        self.before = restored.before
        if restored.version > 0:
            # The engines are new: they get the restored weights as a fresh version, so no name
            # or number of a version published before the stop is ever reused.
            adapter = await self.learner.publish.remote(self.versions.floor())
            self.note_published(adapter.version)
            await self.versions.swap(self.engine_pool, adapter)
        await self.recovery.resumed(self.state.updates)
        self.metrics.event(
            f"resumed from {self.recovery.resume_from.path.name} (update {restored.updates}, "
            f"serving v{self.state.version}); ledger {self.ledger.summary()}"
        )

    def driver_state(self) -> DriverState:
        """What a checkpoint keeps of the driver: the last booked update and what it needs to
        continue from there."""
        return DriverState(
            updates=self.state.updates,
            version=self.state.version,
            published=list(self.versions.published),
            totals=self.state.snapshot(),
            curriculum=self.sampler.state(),
            before=self.before,
        )

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
        self.batcher.awaited = 0
        self._pending_updates = 0
        self.latch.arm()
        self.watchdog = Watchdog(
            self.config.run.watchdog_s, self.run_dir,
            lambda message: self.latch.stop_from_thread(RunStopped("watchdog", message)),
        )  # fmt: skip
        self.watchdog.start()
        spawn = self.latch.spawn
        producer = spawn(self.producer.run(), "the group producer") if mode == "async" else None
        try:
            if mode == "async":
                await self._async_updates(target)
            else:
                await self._sync_updates(target)
        except asyncio.CancelledError:
            if self.latch.reason is None:
                raise  # cancelled from outside: not ours to explain
        except RunStopped as stopped:
            self.latch.note(stopped)
        except Exception as exc:  # a part failed in a way no limit covers: say what, stop cleanly
            self.latch.note(RunStopped("error", f"{type(exc).__name__}: {exc}"))
            self.latch.reason.__cause__ = exc
        finally:
            self.latch.winding_down = True
            self.watchdog.stop()
            await self._wind_down(producer)
        if self.latch.reason is not None:
            raise self.latch.reason
        return self.ledger.summary()

    @property
    def stopping(self) -> bool:
        """The loop is ending (or ended): no new group starts."""
        return self.latch.winding_down

    async def play_only(
        self,
        groups: int,
        on_group: Callable[[int, TrajectoryGroup], Awaitable[None]] | None = None,
    ) -> None:
        """Play ``groups`` groups with the farm's whole rollout capacity in flight and train on
        none (the rollout-only stage of ``rlfarm bench rollout``); see ``GroupPlayer.play_only``."""
        await self.begin()
        config = self.config
        capacity = min(self.workers.size * config.env.groups_per_worker, config.inflight_groups)
        await self.player.play_only(groups, capacity, self.state.updates, on_group)

    @property
    def engine_restarts(self) -> int:
        return self.engine_watch.restarts

    async def _wind_down(self, producer: asyncio.Task | None) -> None:
        """Book every group still around: after a completed loop the groups in flight finish and
        are dropped as end-of-run; after an early stop they are cut off as interrupted, and the
        last booked update is checkpointed."""
        stopped = self.latch.reason
        early = stopped is not None
        if producer is not None:
            if early:
                producer.cancel()
            with contextlib.suppress(asyncio.CancelledError, RunStopped):
                await producer
        fate = "interrupted" if early else "dropped_end_of_run"
        while not self.queue.empty():
            self.ledger.record(self.queue.get_nowait(), fate, "queued when the run stopped")
        if early:
            reason = f"the run stopped ({stopped.kind}): {stopped.message.splitlines()[0]}"
            self.ledger.interrupt_open(reason)
            await self.recovery.checkpoint(self.driver_state())

    async def _play_batch(self, n: int) -> None:
        groups = await asyncio.gather(*(self.player.play_next() for _ in range(n)))
        for group in groups:
            self.queue.put_nowait(group)

    def _on_trainable(self, staleness: int) -> None:
        self.state.staleness[staleness] = self.state.staleness.get(staleness, 0) + 1
        self.watchdog.beat()

    def note_published(self, version: int) -> None:
        """The newest published version, the yardstick of staleness from the moment it exists."""
        self.versions.note(version)
        self.state.version = version

    async def _sync_updates(self, target: int) -> None:
        """Play one batch with the newest version, train on it, load the result, repeat.

        A group without signal (``learner.min_reward_spread``) is replaced by another one played
        with the same version, until the batch holds ``train.groups_per_update`` trainable
        groups, as async mode's batches do (DAPO's dynamic sampling): training on whatever
        survived left most sync updates of a weak model with one group of signal."""
        want = self.config.train.groups_per_update
        while self.state.updates < target:
            batch: Batch = []
            while len(batch) < want:
                await self._play_batch(want - len(batch))
                batch += await self.batcher.collect(want - len(batch), False, self.state.updates)
            if (result := await self._update(batch)) is not None:
                self.recovery.received(result.state)
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
            batch = await self.batcher.collect(
                self.config.train.groups_per_update, True, self.state.updates
            )
            training = asyncio.ensure_future(self._update(batch))
            if finishing is not None:
                await finishing  # version k reaches the engines while k + 1 trains
                finishing = None
            await self._apply_control()
            result = await training
            if result is None:
                continue  # the learner died; it continues from its last state
            self.recovery.received(result.state)  # before the next update can start
            if result.adapter is not None:
                self.note_published(result.adapter.version)
            self._pending_updates += 1
            finishing = self.latch.spawn(
                self._finish_update(batch, result, target), "booking an update"
            )
        if finishing is not None:
            await finishing

    async def _update(self, batch: Batch):
        """One learner update on ``batch``; None if the learner died (its groups are booked
        failed, and the restarted learner continues from the last booked state)."""
        import ray

        samples = [to_sample_group(g) for g, _ in batch]
        try:
            return await self.learner.update.remote(samples, self.versions.floor())
        except ray.exceptions.RayActorError as exc:
            cause = f"the learner died during an update: {type(exc).__name__}: {exc}"
            for group, _ in batch:
                self.ledger.record(group, "failed", cause, self.state.updates)
            await self.recovery.restart_learner(cause, self.state.updates)
            return None

    async def _finish_update(self, batch: Batch, result, target: int) -> None:
        """Load the new version into every engine, book the update (ledger, metrics, learner
        state), and checkpoint when due."""
        swap_s = None
        if result.adapter is not None:  # raises if any engine's probe disagrees
            swap_s = await self.versions.swap(self.engine_pool, result.adapter)
        self.state.updates += 1
        self._pending_updates -= 1
        self.recovery.booked(result.state)
        for group, staleness in batch:
            self.ledger.record(group, "trained", "", self.state.updates, staleness)
        self.watchdog.beat()
        health = await self.engine_watch.check()
        row = self.metrics.log_update(
            self.state, result.metrics, swap_s, health, self.queue.qsize(), self.workers.size,
            self.ledger.summary(), self.sampler.frontier_tier,
        )  # fmt: skip
        self.control.report.remote(row.as_dict())
        await self._autoscale(row)
        updates = self.state.updates
        if updates % self.config.train.checkpoint_every == 0 or updates >= target:
            await self.recovery.checkpoint(self.driver_state())
        every = self.config.train.eval_every
        if every and updates % every == 0 and updates < target:
            await self.periodic_eval(updates)
            self._window_start = None  # the eval's time is no measure of the env workers
        await self.faults.inject_due(updates)

    async def _autoscale(self, row: UpdateRow) -> None:
        """Feed the update's window to ``env.workers: auto``'s controller; apply its move."""
        start, self._window_start = self._window_start, (row.time_s, row.episodes_total)
        if self.autoscaler is None or start is None:
            return
        window = Window(
            row.env_workers, row.time_s - start[0], row.episodes_total - start[1],
            row.engine_batch_fill, row.engine_waiting,
        )  # fmt: skip
        decision = self.autoscaler.observe(window)
        if decision is not None:
            await self.control.set_env_workers.remote(decision.workers)
            self.workers.resize(decision.workers)
            self.metrics.event(f"env workers -> {decision.workers} (auto: {decision.why})")

    async def _apply_control(self) -> None:
        desired = await self.control.desired_env_workers.remote()
        if desired != self.workers.size:
            self.workers.resize(desired)
            self.metrics.event(f"env workers -> {desired}")

    # ---- stopping early -----------------------------------------------------------------------

    def stop(self, reason: RunStopped) -> None:
        """Stop the run early (the first reason wins); safe from signal handlers and callbacks."""
        self.latch.stop(reason)

    async def stoppable(self, work: Awaitable[Any]) -> Any:
        """Await start-up or the first eval so that a signal ends it as it ends the main loop."""
        return await self.latch.stoppable(work)

    def request_stop(self, signal_name: str) -> None:
        """SIGTERM/SIGINT: stop, checkpoint the last booked update, keep the ledger balanced."""
        self.stop(RunStopped("signal", f"stopped by {signal_name}: continue with --resume"))

    # ---- what benches and operators may change or read ----------------------------------------

    async def scale(self, env_workers: int) -> None:
        """Set the env-worker count (as ``rlfarm scale`` does) and wait until every worker is up."""
        await self.control.set_env_workers.remote(env_workers)
        self.workers.resize(env_workers)
        await asyncio.gather(*(slot.handle.ping.remote() for slot in self.workers.slots))

    def autoscale_with(self, scaler: WorkerAutoscaler | None) -> None:
        """Size the env workers with ``scaler`` from the next update on (None: keep the count
        fixed); its first window opens when the next update is booked."""
        self.autoscaler, self._window_start = scaler, None

    async def totals(self) -> Totals:
        """The running totals now (a measuring window starts or ends here)."""
        return Totals.of(self.state, await self.engine_pool.health())

    async def whereabouts(self) -> dict:
        """The Ray nodes the engines and the learner run on, and the adapters each engine loaded."""
        return {
            "engines": await self.engine_watch.placement(),
            "learner_node_id": await self.learner.node_id.remote(),
        }

    # ---- evaluation ---------------------------------------------------------------------------

    async def evaluate_heldout(self, version: int) -> dict[str, dict]:
        """Every held-out view (``TaskSplit.views``: new_names, new_tasks) under ``version``;
        none with ``run.eval_episodes`` 0."""
        return await self.evaluator.heldout(version, self.state.updates)

    async def evaluate_before(self, given: dict | None = None) -> dict:
        """The farm up, then the held-out eval before training, once per run (a checkpoint keeps
        it; ``given``: one a bench already made of this very model)."""
        await self.begin()
        if self.before is None and given is not None:
            self.before = given
        if self.before is None:
            self.before = await self.evaluate_heldout(version=0)
            self.metrics.event(f"held-out before: {json.dumps(overall(self.before))}")
            if self.config.train.eval_every > 0:
                await self.periodic_eval(0, heldout=self.before)
        return self.before

    async def periodic_eval(self, update: int, heldout: dict | None = None) -> None:
        """One point of the eval curve under the version the engines serve now."""
        await self.evaluator.periodic(update, self.versions.loaded, heldout)

    def shutdown(self) -> None:
        self.ledger.interrupt_open("the driver shut down")  # balanced on every way out
        self.ledger.close()
        self.episodes.close()
        self.metrics.close()
        self.parts.stop()
