"""M engine actors behind one object: least-loaded routing, adapter broadcast, health checks.

Callers (rollout workers, the driver) never see placement: the pool starts its engines, routes
each request to the engine with the fewest requests in flight from this caller, and broadcasts
adapter loads to all engines, verifying every engine's probe answer. Every remote call has a
bounded wait: a stuck engine must surface as an error, never as a run that hangs forever.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from serving.adapters import AdapterVerificationError
from serving.config import EngineConfig
from serving.types import AdapterVersion, Completion, ProbeResult, SamplingSpec

STARTUP_TIMEOUT_S = 900.0  # first start compiles nothing on CPU but may build the tiny model


class EngineUnavailableError(RuntimeError):
    """An engine did not answer within its bound or reported itself unhealthy."""


@dataclass
class EnginePool:
    """Handles to M ``EngineActor``s plus this caller's view of their load. Picklable."""

    handles: list
    config: EngineConfig
    in_flight: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.in_flight:
            self.in_flight = [0] * len(self.handles)

    @classmethod
    def start(cls, config: EngineConfig, num_engines: int = 1) -> EnginePool:
        """Start ``num_engines`` engine actors and wait (bounded) until each can serve."""
        import ray

        from serving.engine import engine_actor_class

        actor = engine_actor_class()
        if config.resolved_device() == "cuda":
            gpus = (
                config.tensor_parallel_size if config.tensor_parallel_size > 1 else config.gpu_share
            )
            options = {"num_gpus": gpus, "num_cpus": 1}
        else:
            options = {"num_cpus": 1}
        handles = [
            actor.options(max_concurrency=10_000, **options).remote(config, f"engine-{i}")
            for i in range(num_engines)
        ]
        try:
            ray.get([h.ready.remote() for h in handles], timeout=STARTUP_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError as exc:
            raise EngineUnavailableError(
                f"engines did not start within {STARTUP_TIMEOUT_S:.0f}s"
            ) from exc
        return cls(handles=handles, config=config)

    def _pick(self) -> int:
        return min(range(len(self.handles)), key=lambda i: self.in_flight[i])

    async def generate(
        self,
        prompt_token_ids: list[int],
        sampling: SamplingSpec,
        adapter_version: int | None = None,
    ) -> Completion:
        """Generate on the least-loaded engine; raises ``EngineUnavailableError`` on timeout."""
        index = self._pick()
        self.in_flight[index] += 1
        try:
            ref = self.handles[index].generate.remote(prompt_token_ids, sampling, adapter_version)
            return await asyncio.wait_for(ref, timeout=self.config.request_timeout_s)
        except TimeoutError as exc:
            raise EngineUnavailableError(
                f"engine-{index} did not finish a request in {self.config.request_timeout_s:.0f}s"
            ) from exc
        finally:
            self.in_flight[index] -= 1

    async def load_adapter(self, adapter: AdapterVersion) -> list[ProbeResult]:
        """Load ``adapter`` on every engine and verify each engine's probe answer.

        Raises ``AdapterVerificationError`` if any engine's logprobs disagree with the learner's:
        continuing would train on rollouts from a policy other than the one published.
        """
        refs = [
            h.load_adapter.remote(adapter.version, adapter.path, adapter.probe)
            for h in self.handles
        ]
        results = await self._bounded(refs, f"loading adapter v{adapter.version}")
        bad = [r for r in results if r is not None and not r.matches]
        if bad:
            worst = max(bad, key=lambda r: r.max_abs_diff)
            raise AdapterVerificationError(
                f"adapter v{adapter.version} did not land as published: {worst.engine_id} "
                f"probe logprobs differ from the learner's by {worst.max_abs_diff:.3g} "
                f"(tolerance {worst.atol:.3g}); refusing to sample from an unverified policy"
            )
        return [r for r in results if r is not None]

    async def health(self) -> list[dict]:
        """Each engine's health report; raises ``EngineUnavailableError`` if any is stuck/dead."""
        return await self._bounded([h.health.remote() for h in self.handles], "health check")

    async def _bounded(self, refs: list, what: str) -> list:
        try:
            return await asyncio.wait_for(
                asyncio.gather(*refs), timeout=self.config.control_timeout_s
            )
        except TimeoutError as exc:
            raise EngineUnavailableError(
                f"{what} did not finish within {self.config.control_timeout_s:.0f}s"
            ) from exc

    def shutdown(self) -> None:
        import ray

        for handle in self.handles:
            # A dead engine is already shut down; the actor is killed either way.
            with contextlib.suppress(Exception):
                ray.get(handle.shutdown.remote(), timeout=30)
            ray.kill(handle)
