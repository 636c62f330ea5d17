"""How a run survives: checkpoints written, a run resumed, a dead learner restarted.

The driver keeps the learner's full state after every booked update (``learner_state``, blobs
the learner actor hands back with each update, so they live with the driver, not with the
learner). From it, ``Recovery`` writes checkpoints into the run directory, and restarts a learner
actor that died at exactly the last booked update. ``begin`` starts a new run with checkpoint 0,
or restores a resumed one: the learner continues from the checkpoint and the engines, which are
new, load its weights as a fresh version before generating.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from cluster.farm.checkpoints import Checkpoint, CheckpointStore, DriverState
from cluster.farm.failures import RunStopped
from cluster.farm.metrics import RunState

if TYPE_CHECKING:
    from cluster.farm.driver import Farm

LEARNER_RESTART_TIMEOUT_S = 600.0  # a restarted learner reloads its base model


class Recovery:
    def __init__(self, store: CheckpointStore, resume_from: Checkpoint | None,
                 max_learner_restarts: int) -> None:  # fmt: skip
        self.store = store
        self.resume_from = resume_from
        self.max_learner_restarts = max_learner_restarts
        self.learner_state: dict[str, bytes] | None = None  # after the newest booked update
        self.learner_restarts = 0
        self._checkpointed = -1
        self._begun = False

    async def begin(self, farm: Farm) -> None:
        """Checkpoint 0 of a new run, or the restore of a resumed one (once)."""
        if self._begun:
            return
        self._begun = True
        if self.resume_from is None:
            self.learner_state = await farm.learner.export_state.remote()
            await self.checkpoint(farm)
            return
        driver = self.resume_from.driver
        farm.state = RunState.restore(driver.totals)
        farm.sampler.load_state(driver.curriculum)
        farm.published = list(driver.published)
        farm.before = driver.before
        await farm.learner.import_state.remote(self.resume_from.learner)
        if driver.version > 0:
            # The engines are new: they get the restored weights as a fresh version, so no name
            # or number of a version published before the stop is ever reused.
            adapter = await farm.learner.publish.remote(farm.version_floor())
            await asyncio.to_thread(farm.store_adapter, adapter)
            farm.note_published(adapter.version)
            await farm.pool.load_adapter(adapter)
            farm.loaded_version = adapter.version
        self.learner_state = await farm.learner.export_state.remote()
        self._checkpointed = farm.state.updates
        farm.metrics.event(
            f"resumed from {self.resume_from.path.name} (update {driver.updates}, serving "
            f"v{farm.state.version}); ledger {farm.ledger.summary()}"
        )

    def booked(self, state: dict[str, bytes]) -> None:
        """The learner's state after the update just booked."""
        self.learner_state = state

    async def checkpoint(self, farm: Farm) -> None:
        """Checkpoint the last booked update (once per update)."""
        if self.learner_state is None or self._checkpointed == farm.state.updates:
            return
        driver = DriverState(
            updates=farm.state.updates,
            version=farm.state.version,
            published=list(farm.published),
            totals=farm.state.snapshot(),
            curriculum=farm.sampler.state(),
            before=farm.before,
        )
        await asyncio.to_thread(self.store.save, driver, self.learner_state)
        self._checkpointed = farm.state.updates

    async def restart_learner(self, farm: Farm, cause: str) -> None:
        """Wait for Ray to restart the learner actor, then hand it the last booked state."""
        import ray

        self.learner_restarts += 1
        if self.learner_restarts > self.max_learner_restarts:
            raise RunStopped(
                "error", f"{cause}; it died {self.learner_restarts} times "
                f"(run.max_learner_restarts={self.max_learner_restarts})",
            )  # fmt: skip
        farm.metrics.event(
            f"learner died ({cause}); restarting it from update {farm.state.updates}"
        )
        deadline = time.monotonic() + LEARNER_RESTART_TIMEOUT_S
        while True:
            try:
                await asyncio.wait_for(farm.learner.state.remote(), timeout=60)
                break
            except (ray.exceptions.RayActorError, TimeoutError) as exc:
                if time.monotonic() > deadline:
                    raise RunStopped("error", f"{cause}; it did not come back: {exc}") from exc
                await asyncio.sleep(1.0)
        where = await farm.learner.import_state.remote(self.learner_state)
        farm.metrics.event(f"learner restarted at step {where['step']}, version {where['version']}")
