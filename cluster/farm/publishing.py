"""The run's adapter versions: which are published, which one every engine serves, and the run
directory's copies.

A version is *published* when the learner hands it over (from then on it is the yardstick of
staleness) and *loaded* once every live engine serves it, verified by probe. Version numbers are
never reused, across resumes and learner restarts too: ``floor`` is the highest number taken,
on disk or published.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Protocol

from serving.adapter_files import published_versions, store_adapter
from serving.types import AdapterVersion


class AdapterTarget(Protocol):
    """What a version is loaded into: ``serving.engine_pool.EnginePool``."""

    async def load_adapter(self, adapter: AdapterVersion) -> object: ...


class Versions:
    def __init__(self, adapters_dir: Path, keep_last: int) -> None:
        self.adapters_dir = adapters_dir
        self.keep_last = keep_last
        self.published: list[int] = []  # ascending
        self.loaded = 0  # the newest version every engine serves
        self._on_disk = max(published_versions(adapters_dir), default=0)

    def restore(self, published: list[int]) -> None:
        """A resumed run's published versions (from its checkpoint)."""
        self.published = list(published)

    @property
    def newest(self) -> int:
        return self.published[-1] if self.published else 0

    @property
    def swapping(self) -> bool:
        """A published version is still being loaded into the engines."""
        return self.loaded < self.newest

    def floor(self) -> int:
        """Every version number up to this one is taken (published now or before a resume)."""
        return max([self._on_disk, *self.published])

    def note(self, version: int) -> None:
        """``version`` is published: the yardstick of staleness from this moment."""
        self.published.append(version)

    def staleness(self, min_version: int) -> int:
        """Versions published after ``min_version`` (numbers may skip after a resume or a
        learner restart, so they are counted, not subtracted)."""
        return sum(v > min_version for v in self.published)

    async def swap(self, engines: AdapterTarget, adapter: AdapterVersion) -> float:
        """Store ``adapter`` in the run directory, then load it into every engine (raises if an
        engine's probe disagrees); returns the seconds the engines took."""
        await asyncio.to_thread(store_adapter, adapter, self.adapters_dir, self.keep_last)
        started = time.perf_counter()
        await engines.load_adapter(adapter)
        self.loaded = adapter.version
        return time.perf_counter() - started
