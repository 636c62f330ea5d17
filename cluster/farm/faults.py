"""Fault injection on a schedule (``run.faults``): prove a farm survives its parts dying.

After the update a fault is scheduled for is booked, the driver breaks one part on purpose and
says so in ``events.log``; the run must then carry on as it would after a real failure. Kinds:

- ``kill_rollout_worker``: a busy rollout worker's actor is killed (its group fails, the worker
  is replaced);
- ``kill_sandbox``: a worker's sandbox process gets SIGKILL (episodes on it are replayed or fail;
  the pool starts a fresh process);
- ``hang_sandbox``: a worker's sandbox process gets SIGSTOP, so its commands hang past every
  timeout (the env call times out, the pool's watchdog kills and replaces the process);
- ``kill_engine``: the engine actor is killed (Ray restarts it; it ends whatever its dead
  incarnation left running, e.g. vLLM's engine-core process, and catches up to the current
  adapter before serving); recovered only once no process of the dead engine runs;
- ``kill_learner``: the learner actor is killed (restarted from its state after the last update);
- ``slow_env``: every env step takes ``latency_s`` longer from then on, on every worker and every
  worker started later (a remote env getting slower; ``env.workers: auto`` should add workers).
  Nothing breaks: the watch confirms each worker applies it.

Each injection is followed by a watch that confirms the broken part was replaced (a new worker
actor, a new sandbox process pid, an engine or learner actor answering from a new process) and
says so: ``fault recovered after update N: KIND (...)``, or ``fault NOT recovered ...`` when
``RECOVERY_WAIT_S`` passes first. ``rlfarm audit`` counts both lines; ``rlfarm bench chaos``
uses this, plus a ``kill -9`` of the driver and ``--resume``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from cluster.base.config import Fault, FaultKind
from cluster.farm.rollout_workers import RolloutWorkerSet, WorkerSlot

BUSY_WAIT_S = 60.0  # a worker-level fault waits this long for a worker with a group in flight
RECOVERY_WAIT_S = 300.0  # a restarted engine or learner reloads its model; a hung sandbox times out
POLL_S = 0.5


class FaultInjector:
    """Breaks the parts it is handed (never the driver's own state) when a fault is due."""

    def __init__(
        self,
        faults: list[Fault],
        engines: list[Any],
        learner: Any,
        workers: RolloutWorkerSet,
        event: Callable[[str], None],
    ) -> None:
        self.faults = faults
        self.engines = engines  # the engine actor handles (Ray restarts a killed one)
        self.learner = learner
        self.workers = workers
        self.event = event
        self.watches: set[asyncio.Task] = set()  # recovery watches still running

    async def inject_due(self, update: int) -> None:
        """Inject every fault scheduled for ``update``; a watch then confirms the recovery."""
        for fault in self.faults:
            if fault.at_update == update:
                what, recovered = await self._inject(fault)
                self.event(f"fault injected after update {update}: {fault.kind} ({what})")
                watch = asyncio.ensure_future(self._watch(update, fault.kind, recovered))
                self.watches.add(watch)
                watch.add_done_callback(self.watches.discard)

    async def _watch(self, update: int, kind: FaultKind, recovered: Callable) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RECOVERY_WAIT_S
        while loop.time() < deadline:
            try:
                if (how := await recovered()) is not None:
                    self.event(f"fault recovered after update {update}: {kind} ({how})")
                    return
            except Exception:  # the part is still down (an actor restarting): look again
                pass
            await asyncio.sleep(POLL_S)
        self.event(f"fault NOT recovered after update {update}: {kind} "
                   f"(nothing replaced it within {RECOVERY_WAIT_S:.0f} s)")  # fmt: skip

    async def _inject(self, fault: Fault) -> tuple[str, Callable]:
        """Break the part; returns what was broken and a check that says how it came back
        (None while it has not)."""
        import ray

        kind = fault.kind
        if kind == "slow_env":
            latency = fault.latency_s
            self.workers.set_step_latency(latency)
            what = f"every env step {latency:g} s slower on {self.workers.size} worker(s)"
            return what, lambda: _latency_applied(self.workers, latency)
        if kind == "kill_engine":
            engine = self.engines[0]
            before = (await engine.health.remote()).pid
            members = await engine.processes.remote()
            ray.kill(engine, no_restart=False)
            return "engine-0", lambda: _engine_restarted(engine, before, members)
        if kind == "kill_learner":
            learner = self.learner
            before = await learner.pid.remote()
            ray.kill(learner, no_restart=False)
            return "the learner actor", lambda: _learner_back(learner, before)
        slot = await self._busy_worker()
        if kind == "kill_rollout_worker":
            dead, name = slot.handle, slot.name
            ray.kill(dead)
            return name, lambda: _worker_replaced(slot, dead, name)
        how = "kill" if kind == "kill_sandbox" else "hang"
        handle = slot.handle
        pid = await handle.break_sandbox.remote(how)
        what = f"{slot.name}'s sandbox process {pid}"
        return what, lambda: _sandbox_replaced(handle, pid)

    async def _busy_worker(self) -> WorkerSlot:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BUSY_WAIT_S
        while loop.time() < deadline:
            if (slot := self.workers.busy_slot()) is not None:
                return slot
            await asyncio.sleep(0.05)
        return self.workers.slots[0]  # none busy for a minute: break an idle one


async def _engine_restarted(engine: Any, before: int | None, members: list) -> str | None:
    """Back only when a new process answers and none of the dead one's family still runs (its
    engine core would hold the device memory the new one needs)."""
    pid = (await asyncio.wait_for(engine.health.remote(), timeout=30)).pid
    if pid in (None, before):
        return None
    if await asyncio.wait_for(engine.survivors.remote(members), timeout=30):
        return None
    return (
        f"engine-0 answers from process {pid}, was {before}; none of the dead engine's "
        f"{len(members)} processes ({', '.join(str(m[0]) for m in members)}) still runs"
    )


async def _latency_applied(workers: RolloutWorkerSet, latency: float) -> str | None:
    slots = [s for s in workers.slots if not s.retiring]
    applied = await asyncio.gather(*(s.handle.step_latency.remote() for s in slots))
    if any(value != latency for value in applied):
        return None
    return f"all {len(slots)} env worker(s) add {latency:g} s to each step"


async def _sandbox_replaced(worker: Any, before: int | None) -> str | None:
    import ray

    try:
        pid = await asyncio.wait_for(worker.sandbox_pid.remote(), timeout=30)
    except ray.exceptions.RayActorError:
        # Its rollout worker died (another fault, or a failure) and was replaced by the player:
        # Ray stops a dead actor's child processes, the sandbox process with them.
        return f"sandbox process {before} went with its rollout worker, which was replaced"
    return None if pid in (None, before) else f"sandbox process {pid} replaced {before}"


async def _learner_back(learner: Any, before: int) -> str | None:
    pid = await asyncio.wait_for(learner.pid.remote(), timeout=30)
    return None if pid == before else f"the learner actor answers from process {pid}, was {before}"


async def _worker_replaced(slot: WorkerSlot, dead: Any, name: str) -> str | None:
    if slot.handle is dead:
        return None
    await asyncio.wait_for(slot.handle.ping.remote(), timeout=30)
    return f"{name} replaced by {slot.name}, which answers"
