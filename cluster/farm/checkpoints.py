"""Farm checkpoints: the learner's full training state and the driver's own, written together.

``<run>/checkpoints/u000012/`` holds ``learner/`` (the blobs of ``learner.checkpoint``: adapter,
optimizer, scheduler, RNG, step, version) and ``driver.json`` (updates done, the newest version,
the curriculum, the running totals, the held-out eval from before training). Both describe the
same instant: the end of update 12, as booked. A checkpoint is written under a temporary name and
renamed into place, so a kill at any moment leaves the previous ones intact; the newest ``keep``
are kept. The driver writes them, in its own run directory, from state the learner sends
through Ray: no other node ever writes into the run directory.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from learner.types import LearnerState

CHECKPOINT_DIR = re.compile(r"^u(\d{6,})$")
DRIVER_FILE = "driver.json"


@dataclass
class DriverState:
    """The driver's half of a checkpoint."""

    updates: int
    version: int
    published: list[int]
    totals: dict[str, Any]
    curriculum: dict[str, Any]
    before: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    driver: DriverState
    learner: LearnerState


class CheckpointStore:
    def __init__(self, run_dir: Path, keep: int) -> None:
        self.root = run_dir / "checkpoints"
        self.keep = keep

    def save(self, driver: DriverState, learner: LearnerState) -> Path:
        from learner.checkpoint import write_blobs

        blobs = {f"learner/{name}": data for name, data in learner.blobs.items()}
        blobs[DRIVER_FILE] = json.dumps(driver.__dict__, indent=1).encode()
        path = write_blobs(blobs, self.root / f"u{driver.updates:06d}")
        self._prune()
        return path

    def updates(self) -> list[int]:
        """Updates with a complete checkpoint, ascending."""
        if not self.root.is_dir():
            return []
        found = (CHECKPOINT_DIR.match(p.name) for p in self.root.iterdir())
        return sorted(
            int(m.group(1)) for m in found if m and (self.root / m.group(0) / DRIVER_FILE).exists()
        )

    def latest(self) -> Checkpoint | None:
        done = self.updates()
        if not done:
            return None
        from learner.checkpoint import read_blobs

        path = self.root / f"u{done[-1]:06d}"
        blobs = read_blobs(path, marker=DRIVER_FILE)
        driver = DriverState(**json.loads(blobs.pop(DRIVER_FILE)))
        learner = {k.removeprefix("learner/"): v for k, v in blobs.items()}
        return Checkpoint(path, driver, LearnerState(learner))

    def _prune(self) -> None:
        for update in self.updates()[: -self.keep]:
            shutil.rmtree(self.root / f"u{update:06d}", ignore_errors=True)
