"""How a run survives: checkpoints written, a run resumed, a dead learner restarted.

The driver keeps the learner's full state after every booked update (``learner_state``, blobs
the learner actor hands back with each update, so they live with the driver, not with the
learner). From it, ``Recovery`` writes checkpoints into the run directory, and restarts a learner
actor that died at exactly the last booked update. ``start`` begins a new run (the driver writes
checkpoint 0) or restores a resumed one: the learner continues from the checkpoint, the driver
restores its own state from the ``DriverState`` returned, and the engines, which are new, load
the learner's weights as a fresh version before generating.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from cluster.farm.checkpoints import Checkpoint, CheckpointStore, DriverState
from cluster.farm.failures import RunStopped
from learner.types import LearnerState

LEARNER_RESTART_TIMEOUT_S = 600.0  # a restarted learner reloads its base model


class Recovery:
    """Holds the learner's state after the last booked update; the driver hands it the rest
    (its own state, as a ``DriverState``) and applies what a resume restores."""

    def __init__(
        self,
        store: CheckpointStore,
        resume_from: Checkpoint | None,
        max_learner_restarts: int,
        learner: Any,
        event: Callable[[str], None],
    ) -> None:
        self.store = store
        self.resume_from = resume_from
        self.max_learner_restarts = max_learner_restarts
        self.learner = learner  # the learner actor's handle (Ray restarts it under the same one)
        self.event = event
        self.learner_state: LearnerState | None = None  # after the newest booked update
        # After the newest update the learner returned (async mode books it a little later): a
        # restarted learner continues from here, so an update being booked is never lost.
        self.newest_state: LearnerState | None = None
        self.learner_restarts = 0
        self._checkpointed = -1

    async def start(self) -> DriverState | None:
        """A new run: None (the caller checkpoints update 0). A resumed one: the learner continues
        from the checkpoint, and the driver state to restore is returned (then ``resumed``)."""
        if self.resume_from is None:
            self.learner_state = self.newest_state = await self.learner.export_state.remote()
            return None
        await self.learner.import_state.remote(self.resume_from.learner)
        return self.resume_from.driver

    async def resumed(self, updates: int) -> None:
        """The driver restored itself (and republished) at ``updates``."""
        self.learner_state = self.newest_state = await self.learner.export_state.remote()
        self._checkpointed = updates

    def received(self, state: LearnerState) -> None:
        """The learner's state after an update it just returned (before it is booked)."""
        self.newest_state = state

    def booked(self, state: LearnerState) -> None:
        """The learner's state after the update just booked."""
        self.learner_state = state
        if self.newest_state is None:
            self.newest_state = state

    async def checkpoint(self, driver: DriverState) -> None:
        """Checkpoint the last booked update (once per update)."""
        if self.learner_state is None or self._checkpointed == driver.updates:
            return
        await asyncio.to_thread(self.store.save, driver, self.learner_state)
        self._checkpointed = driver.updates

    async def restart_learner(self, cause: str, updates: int) -> None:
        """Wait for Ray to restart the learner actor, then hand it the state after the newest
        update it returned (``updates`` is the newest booked, for the log): an update returned
        but still being booked stays in the learner's weights and record."""
        import ray

        self.learner_restarts += 1
        if self.learner_restarts > self.max_learner_restarts:
            raise RunStopped(
                "error", f"{cause}; it died {self.learner_restarts} times "
                f"(run.max_learner_restarts={self.max_learner_restarts})",
            )  # fmt: skip
        self.event(f"learner died ({cause}); restarting it (booked: update {updates})")
        deadline = time.monotonic() + LEARNER_RESTART_TIMEOUT_S
        while True:
            try:
                await asyncio.wait_for(self.learner.state.remote(), timeout=60)
                break
            except (ray.exceptions.RayActorError, TimeoutError) as exc:
                if time.monotonic() > deadline:
                    raise RunStopped("error", f"{cause}; it did not come back: {exc}") from exc
                await asyncio.sleep(1.0)
        where = await self.learner.import_state.remote(self.newest_state)
        self.event(f"learner restarted at step {where.step}, version {where.version}")
