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
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from cluster.farm.driver import Farm

FaultKind = Literal[
    "kill_rollout_worker", "kill_sandbox", "hang_sandbox", "kill_engine", "kill_learner"
]
BUSY_WAIT_S = 60.0  # a worker-level fault waits this long for a worker with a group in flight


class Fault(BaseModel):
    """One scheduled fault: ``kind`` right after update ``at_update`` is booked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    at_update: int = Field(ge=1, description="Inject right after this update is booked.")
    kind: FaultKind = Field(description="Which part to break (see cluster/farm/faults.py).")


async def inject_due(farm: Farm, update: int) -> None:
    """Inject every fault scheduled for ``update``."""
    for fault in farm.config.run.faults:
        if fault.at_update == update:
            what = await _inject(farm, fault.kind)
            farm.metrics.event(f"fault injected after update {update}: {fault.kind} ({what})")


async def _inject(farm: Farm, kind: FaultKind) -> str:
    import ray

    if kind == "kill_engine":
        ray.kill(farm.pool.handles[0], no_restart=False)
        return "engine-0"
    if kind == "kill_learner":
        ray.kill(farm.learner, no_restart=False)
        return "the learner actor"
    slot = await _busy_worker(farm)
    if kind == "kill_rollout_worker":
        ray.kill(slot.handle)
        return slot.name
    pid = await slot.handle.break_sandbox.remote("kill" if kind == "kill_sandbox" else "hang")
    return f"{slot.name}'s sandbox process {pid}"


async def _busy_worker(farm: Farm):
    deadline = asyncio.get_running_loop().time() + BUSY_WAIT_S
    while asyncio.get_running_loop().time() < deadline:
        busy = [s for s in farm.workers.slots if s.busy and not s.retiring]
        if busy:
            return busy[0]
        await asyncio.sleep(0.05)
    return farm.workers.slots[0]  # none busy for a minute: break an idle one
