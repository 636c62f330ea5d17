"""Async mode's group producer: the admitted number of groups always in flight, never waiting
for the learner.

Finished groups go into a bounded queue the learner's batches are taken from (``batching``).
How many groups may be in flight is ``admission_target``'s call (enough for the next update,
not so many that they go stale); while a published version is still being loaded into the
engines nothing new starts, so no group opens on the outgoing version.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from cluster.farm.admission import admission_target
from cluster.farm.batching import Batcher
from cluster.farm.ledger import Ledger
from cluster.farm.playing import GroupPlayer
from cluster.farm.publishing import Versions
from cluster.farm.stopping import StopLatch
from rollout.types import TrajectoryGroup


class Producer:
    def __init__(
        self,
        player: GroupPlayer,
        queue: asyncio.Queue[TrajectoryGroup],
        ledger: Ledger,
        latch: StopLatch,
        versions: Versions,
        batcher: Batcher,
        capacity: Callable[[], int],
        admission: tuple[int, int],
        between_groups: Callable[[], Awaitable[None]],
    ) -> None:
        self.player = player
        self.queue = queue
        self.ledger = ledger
        self.latch = latch
        self.versions = versions
        self.batcher = batcher
        self.capacity = capacity  # groups the env workers can play at once, now
        self.max_staleness, self.groups_per_update = admission
        self.between_groups = between_groups  # the operator's knobs, applied as groups finish

    async def run(self) -> None:
        """Keep the admitted number of groups in flight until the loop winds down; finished
        groups go to the queue."""
        inflight: set[asyncio.Future] = set()
        try:
            while not self.latch.winding_down or inflight:
                # While a published version is still being loaded, a group started now would open
                # on the outgoing one and reach the learner a version staler than need be: hold
                # it back for the swap (tens of ms).
                swapping = self.versions.swapping
                target = 0 if self.latch.winding_down or swapping else self.target()
                while len(inflight) + self.queue.qsize() < target:
                    inflight.add(asyncio.ensure_future(self.player.play_next()))
                if not inflight:
                    if self.latch.winding_down:
                        break
                    await asyncio.sleep(0.02)  # the cap is full, or a swap is under way
                    continue
                done, inflight = await asyncio.wait(
                    inflight, timeout=0.02 if swapping else 0.5, return_when="FIRST_COMPLETED"
                )
                for fut in done:
                    await self._enqueue(fut.result())
                await self.between_groups()
        except asyncio.CancelledError:
            for fut in inflight:  # their groups are booked interrupted by the wind-down
                fut.cancel()
            raise

    def target(self) -> int:
        return admission_target(
            self.capacity(), self.max_staleness, self.groups_per_update, self.batcher.awaited
        )

    async def _enqueue(self, group: TrajectoryGroup) -> None:
        """Queue a finished group; a full queue holds the producer back (bounded memory)."""
        while not self.latch.winding_down:
            try:
                self.queue.put_nowait(group)
                return
            except asyncio.QueueFull:
                await asyncio.sleep(0.05)
        self.ledger.record(group, "dropped_end_of_run", "finished after the last update")
