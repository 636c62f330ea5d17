"""Fault injection on a schedule (``run.faults``): prove a farm survives its parts dying.

After the update a fault is scheduled for is booked, the driver breaks one part on purpose and
says so in ``events.log``; the run must then carry on as it would after a real failure. Kinds:

- ``kill_rollout_worker``: a busy rollout worker's actor is killed (its group fails, the worker
  is replaced);
- ``kill_sandbox``: a worker's sandbox process gets SIGKILL (episodes on it are replayed or fail;
  the pool starts a fresh process);
- ``hang_sandbox``: a worker's sandbox process gets SIGSTOP, so its commands hang past every
  timeout (the env call times out, the pool's watchdog kills and replaces the process);
- ``kill_engine``: the engine actor is killed (Ray restarts it; it catches up to the current
  adapter before serving);
- ``kill_learner``: the learner actor is killed (restarted from its state after the last update).

``rlfarm bench chaos`` uses this, plus a ``kill -9`` of the driver and ``--resume``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from cluster.base.config import Fault, FaultKind
from cluster.farm.rollout_workers import RolloutWorkerSet, WorkerSlot

BUSY_WAIT_S = 60.0  # a worker-level fault waits this long for a worker with a group in flight


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

    async def inject_due(self, update: int) -> None:
        """Inject every fault scheduled for ``update``."""
        for fault in self.faults:
            if fault.at_update == update:
                what = await self._inject(fault.kind)
                self.event(f"fault injected after update {update}: {fault.kind} ({what})")

    async def _inject(self, kind: FaultKind) -> str:
        import ray

        if kind == "kill_engine":
            ray.kill(self.engines[0], no_restart=False)
            return "engine-0"
        if kind == "kill_learner":
            ray.kill(self.learner, no_restart=False)
            return "the learner actor"
        slot = await self._busy_worker()
        if kind == "kill_rollout_worker":
            ray.kill(slot.handle)
            return slot.name
        how = "kill" if kind == "kill_sandbox" else "hang"
        pid = await slot.handle.break_sandbox.remote(how)
        return f"{slot.name}'s sandbox process {pid}"

    async def _busy_worker(self) -> WorkerSlot:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BUSY_WAIT_S
        while loop.time() < deadline:
            if (slot := self.workers.busy_slot()) is not None:
                return slot
            await asyncio.sleep(0.05)
        return self.workers.slots[0]  # none busy for a minute: break an idle one
