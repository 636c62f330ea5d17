"""The set of rollout-worker actors (env workers), resizable while the run goes on.

The driver asks for a worker per group; ``resize`` starts new actors at once and retires extra
ones after their current group (a retiring worker takes no new work). A worker that died is
replaced by ``replace``. Callers never see placement.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class WorkerSlot:
    name: str
    handle: Any
    busy: int = 0
    retiring: bool = False


@dataclass
class RolloutWorkerSet:
    # Starts one worker actor given its name and the latency it adds to each env step; returns
    # its handle.
    factory: Callable[[str, float], Any]
    slots: list[WorkerSlot] = field(default_factory=list)
    _names: itertools.count = field(default_factory=itertools.count)
    restarts: int = 0
    step_latency_s: float = 0.0  # added to each env step by every worker (the slow_env fault)

    def resize(self, n: int) -> None:
        active = [s for s in self.slots if not s.retiring]
        for _ in range(n - len(active)):
            name = f"rollout-worker-{next(self._names)}"
            self.slots.append(WorkerSlot(name=name, handle=self._start(name)))
        for slot in active[n:] if n < len(active) else []:
            slot.retiring = True
        self._reap()

    @property
    def size(self) -> int:
        return sum(not s.retiring for s in self.slots)

    def acquire(self) -> WorkerSlot | None:
        """The least-busy active worker, or None if there are none."""
        active = [s for s in self.slots if not s.retiring]
        if not active:
            return None
        slot = min(active, key=lambda s: s.busy)
        slot.busy += 1
        return slot

    def busy_slot(self) -> WorkerSlot | None:
        """An active worker with a group in flight, if any (fault injection breaks one)."""
        return next((s for s in self.slots if s.busy and not s.retiring), None)

    def release(self, slot: WorkerSlot) -> None:
        slot.busy -= 1
        self._reap()

    def replace(self, slot: WorkerSlot, dead: Any) -> bool:
        """Swap the dead actor ``dead`` in ``slot`` for a fresh one under a new name; False if
        another of its groups already did (a worker plays several groups at once)."""
        import ray

        if slot.handle is not dead:
            return False
        self.restarts += 1
        with contextlib.suppress(Exception):  # already dead: nothing to kill
            ray.kill(slot.handle)
        slot.name = f"rollout-worker-{next(self._names)}"
        slot.handle = self._start(slot.name)
        return True

    def set_step_latency(self, seconds: float) -> list[Any]:
        """Every worker, and every one started later, adds ``seconds`` to each env step;
        returns the calls' references (each worker answers once it applies it)."""
        self.step_latency_s = seconds
        return [slot.handle.set_step_latency.remote(seconds) for slot in self.slots]

    def _start(self, name: str) -> Any:
        # Given at construction: an async actor's calls may run out of order, so a call made
        # right after could land after the worker's first group had started.
        return self.factory(name, self.step_latency_s)

    def _reap(self) -> None:
        import ray

        for slot in [s for s in self.slots if s.retiring and s.busy == 0]:
            self.slots.remove(slot)
            ray.kill(slot.handle)

    def shutdown(self) -> None:
        import ray

        # Closing first stops each worker's sandbox process cleanly (a kill alone leaves the
        # worker's pool to notice its sandbox die, and start another, as it goes).
        closing = [slot.handle.close.remote() for slot in self.slots]
        with contextlib.suppress(Exception):
            ray.get(closing, timeout=30)
        for slot in self.slots:
            ray.kill(slot.handle)
        self.slots.clear()
