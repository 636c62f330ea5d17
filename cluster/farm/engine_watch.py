"""What the driver reads from the engines' health reports: restarts, load totals, placement."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from serving.types import EngineHealth


class HealthSource(Protocol):
    """``serving.engine_pool.EnginePool``."""

    async def health(self) -> list[EngineHealth]: ...


class EngineWatch:
    def __init__(self, engine_pool: HealthSource, event: Callable[[str], None]) -> None:
        self.engine_pool = engine_pool
        self.event = event
        self.restarts = 0  # engine processes that came back after dying (Ray restarts them)
        self._incarnations: dict[str, tuple[int, float]] = {}

    async def check(self) -> list[EngineHealth]:
        """Every engine's report; a changed process since the last check counts as a restart."""
        health = await self.engine_pool.health()
        for report in health:
            now = report.incarnation
            if now is None:
                continue  # down right now; counted when it is back
            if self._incarnations.get(report.engine_id, now) != now:
                self.restarts += 1
                self.event(f"{report.engine_id} was restarted (now pid {report.pid})")
            self._incarnations[report.engine_id] = now
        return health

    async def placement(self) -> list[dict[str, Any]]:
        """The Ray node of each engine, and the adapters it loaded."""
        return [
            {"engine_id": h.engine_id, "node_id": h.node_id, "adapters_loaded": h.adapters_loaded}
            for h in await self.engine_pool.health()
        ]
