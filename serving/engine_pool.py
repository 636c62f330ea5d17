"""M engine actors behind one object: sticky routing, adapter broadcast, health checks.

Callers (rollout workers, the driver) never see placement: the pool starts its engines, routes
every request of a group to the same engine (prefix-cache hits) or, without a route key, to
the engine with the fewest requests in flight from this caller, and broadcasts adapter loads to
all engines, verifying every engine's probe answer. Every remote call has a
bounded wait: a stuck engine must surface as an error, never as a run that hangs forever.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from serving.adapters import AdapterVerificationError
from serving.config import EngineConfig
from serving.devices import cluster_gpus, placement_device
from serving.types import AdapterVersion, Completion, EngineHealth, ProbeResult, SamplingSpec

STARTUP_TIMEOUT_S = 900.0  # first start compiles nothing on CPU but may build the tiny model
HOMES_KEPT = 4096  # group homes remembered per caller: far more groups than are ever in flight


def default_engine_resources(config: EngineConfig) -> dict:
    """Ray resources of one engine actor: a CPU, and where the cluster has GPUs (or the config
    says cuda) its share (with tensor parallelism none: vLLM's own workers take the GPUs)."""
    if placement_device(config.device, cluster_gpus()) != "cuda":
        return {"num_cpus": 1}
    gpus = 0 if config.tensor_parallel_size > 1 else config.gpu_share
    return {"num_cpus": 1, "num_gpus": gpus}


class EngineUnavailableError(RuntimeError):
    """An engine did not answer within its bound or reported itself unhealthy."""


@dataclass
class EnginePool:
    """Handles to M ``EngineActor``s plus this caller's view of their load. Picklable."""

    handles: list
    config: EngineConfig
    board: Any = None  # the AdapterBoard restarted engines catch up from
    in_flight: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.in_flight:
            self.in_flight = [0] * len(self.handles)
        # Engines this caller routes around while Ray restarts them (each caller finds out
        # for itself: the pool travels to every rollout worker by value).
        self._recovering: dict[int, asyncio.Future] = {}
        # Each group's engine (route key -> engine), oldest first, and homes per engine.
        self._homes: OrderedDict[str, int] = OrderedDict()
        self._homed = [0] * len(self.handles)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_recovering"] = {}  # futures belong to this process's event loop
        state["_homes"], state["_homed"] = OrderedDict(), [0] * len(self.handles)
        return state

    @classmethod
    def start(
        cls, config: EngineConfig, num_engines: int = 1, placements: list[dict] | None = None
    ) -> EnginePool:
        """Start ``num_engines`` engine actors and wait (bounded) until each can serve.
        ``placements``: Ray options per engine (its resources and placement-group slot, from
        ``cluster.base.placement``); by default each takes one CPU, and its GPU share on a GPU."""
        pool = cls.launch(config, num_engines, placements)
        pool.wait_ready()
        return pool

    @classmethod
    def launch(
        cls, config: EngineConfig, num_engines: int = 1, placements: list[dict] | None = None
    ) -> EnginePool:
        """Create the engine actors without waiting for them (``wait_ready`` does): a farm starts
        its learner and env workers while the engines load, instead of after."""
        from serving.engine import adapter_board_class, engine_actor_class

        actor = engine_actor_class()
        board = adapter_board_class().remote()
        placements = placements or [default_engine_resources(config)] * num_engines
        handles = [
            actor.options(
                max_concurrency=10_000,
                # Ray restarts a dead engine (same handle everywhere, so no caller holds a stale
                # one); requests in flight fail, later ones wait for it to come back, caught up.
                max_restarts=config.max_restarts,
                **placements[i],
            ).remote(config, f"engine-{i}", board)
            for i in range(num_engines)
        ]
        return cls(handles=handles, config=config, board=board)

    def wait_ready(self) -> None:
        """Block until every engine can serve; ``EngineUnavailableError`` past the bound."""
        import ray

        try:
            ray.get([h.ready.remote() for h in self.handles], timeout=STARTUP_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError as exc:
            raise EngineUnavailableError(
                f"engines did not start within {STARTUP_TIMEOUT_S:.0f}s"
            ) from exc

    def _pick(self, route_key: str | None = None) -> int | None:
        """The engine for a request (None: every engine is restarting).

        With a ``route_key`` (one per group; a group is played in one process) every request of
        the group goes to the same engine: the group's shared prompt is prefilled once and each
        episode's growing prefix stays in that engine's prefix cache. A group's home is the
        least-loaded engine when its first request comes (a hash of the key spread 8 groups 5/3
        or worse over 2 engines, and the busier engine set the pace), remembered for the
        group's life. A request spills to the least-loaded engine only when the home engine
        already has a full batch (``max_num_seqs``) from this caller and another has room.
        Without a key, or while the home engine is down, the least-loaded engine that is up."""
        up = [i for i in range(len(self.handles)) if i not in self._recovering]
        if not up:
            return None
        least = min(up, key=lambda i: (self.in_flight[i], self._homed[i]))
        if route_key is None:
            return least
        home = self._homes.get(route_key)
        if home is None or home not in up:
            home = self._home(route_key, least)
        full = self.in_flight[home] >= self.config.max_num_seqs
        if full and self.in_flight[least] < self.config.max_num_seqs:
            return least
        return home

    def _home(self, route_key: str, engine: int) -> int:
        """Make ``engine`` the home of ``route_key``; the oldest homes are forgotten past
        ``HOMES_KEPT`` (groups end; their keys are never seen again)."""
        old = self._homes.pop(route_key, None)
        if old is not None:
            self._homed[old] -= 1
        self._homes[route_key] = engine
        self._homed[engine] += 1
        while len(self._homes) > HOMES_KEPT:
            _, gone = self._homes.popitem(last=False)
            self._homed[gone] -= 1
        return engine

    async def _engine(self, route_key: str | None = None) -> int:
        while (index := self._pick(route_key)) is None:  # all down: wait for one to come back
            await asyncio.wait(self._recovering.values(), return_when="FIRST_COMPLETED")
        return index

    def _went_down(self, index: int) -> None:
        """Route around engine ``index`` until it answers again (Ray is restarting it)."""
        if index not in self._recovering:
            self._recovering[index] = asyncio.ensure_future(self._recover(index))

    async def _recover(self, index: int) -> None:
        import ray

        deadline = asyncio.get_running_loop().time() + STARTUP_TIMEOUT_S
        try:
            while True:
                try:  # ``ready`` answers once the engine is back and holds the current adapter
                    await asyncio.wait_for(
                        self.handles[index].ready.remote(), self.config.control_timeout_s
                    )
                    return
                except (ray.exceptions.RayActorError, TimeoutError):
                    if asyncio.get_running_loop().time() > deadline:
                        return  # given up on: requests to it now fail fast and say why
                    await asyncio.sleep(1.0)
        finally:
            self._recovering.pop(index, None)

    async def generate(
        self,
        prompt_token_ids: list[int],
        sampling: SamplingSpec,
        adapter_version: int | None = None,
        route_key: str | None = None,
    ) -> Completion:
        """Generate on the episode's engine (``route_key``) or the least-loaded one that is up.
        Raises ``EngineUnavailableError`` on timeout or when the engine dies mid-request (the
        caller's episode is lost; the pool routes around the engine while Ray restarts it)."""
        import ray

        index = await self._engine(route_key)
        self.in_flight[index] += 1
        try:
            ref = self.handles[index].generate.remote(prompt_token_ids, sampling, adapter_version)
            return await asyncio.wait_for(ref, timeout=self.config.request_timeout_s)
        except TimeoutError as exc:
            raise EngineUnavailableError(
                f"engine-{index} did not finish a request in {self.config.request_timeout_s:.0f}s"
            ) from exc
        except ray.exceptions.RayActorError as exc:
            self._went_down(index)
            raise EngineUnavailableError(f"engine-{index} died during a request: {exc}") from exc
        finally:
            self.in_flight[index] -= 1

    async def load_adapter(self, adapter: AdapterVersion) -> list[ProbeResult]:
        """Load ``adapter`` on every engine and verify each engine's probe answer.

        Raises ``AdapterVerificationError`` if any engine's logprobs disagree with the learner's:
        continuing would train on rollouts from a policy other than the one published. An engine
        that is down gets the adapter from the board when it comes back, verified the same way.
        """
        import ray

        shipped = ray.put(adapter)  # the files go into the object store once, for every engine
        if self.board is not None:  # first, so an engine restarting meanwhile catches up to it
            await self.board.publish.remote(shipped)
        refs = [h.load_adapter.remote(shipped) for h in self.handles]
        replies = await self._bounded(refs, f"loading adapter v{adapter.version}")
        # A down engine catches up later; an adapter without a probe (a plain peft adapter an
        # evaluation loads) is answered with None: only real probe answers are judged.
        results = [r for r in self._answers(replies).values() if r is not None]
        bad = [r for r in results if not r.matches]
        if bad:
            worst = max(bad, key=lambda r: r.max_abs_diff)
            raise AdapterVerificationError(
                f"adapter v{adapter.version} did not land as published on {worst.engine_id}: "
                f"{_what_went_wrong(worst)}; refusing to sample from an unverified policy"
            )
        return results

    async def reset_prefix_cache(self) -> None:
        """Empty every live engine's prefix cache; raises if an engine refuses (a request is
        still running on it)."""
        answers = self._answers(
            await self._bounded([h.reset_prefix_cache.remote() for h in self.handles], "reset")
        )
        refused = [f"engine-{i}" for i, ok in answers.items() if ok is False]
        if refused:
            raise RuntimeError(f"{', '.join(refused)} kept its prefix cache: requests in flight")

    async def health(self) -> list[EngineHealth]:
        """Each engine's health report (``alive`` False for one Ray is restarting); raises
        ``EngineUnavailableError`` if an engine is stuck, or reports an error of its own."""
        replies = await self._bounded([h.health.remote() for h in self.handles], "health check")
        answers = self._answers(replies)
        return [
            answers[i] if i in answers else EngineHealth.down(f"engine-{i}", str(replies[i]))
            for i in range(len(self.handles))
        ]

    def _answers(self, replies: list) -> dict[int, Any]:
        """The answers of a broadcast by engine index; an engine that died is left out (and
        routed around until Ray restarts it); any other error is raised."""
        import ray

        answers = {}
        for i, reply in enumerate(replies):
            if isinstance(reply, ray.exceptions.RayActorError):
                self._went_down(i)
            elif isinstance(reply, BaseException):
                raise reply
            else:
                answers[i] = reply
        return answers

    async def _bounded(self, refs: list, what: str) -> list:
        """Every ref's result or exception, within ``control_timeout_s``."""
        try:
            return await asyncio.wait_for(
                asyncio.gather(*refs, return_exceptions=True), timeout=self.config.control_timeout_s
            )
        except TimeoutError as exc:
            raise EngineUnavailableError(
                f"{what} did not finish within {self.config.control_timeout_s:.0f}s"
            ) from exc

    def shutdown(self) -> None:
        import ray

        for handle in self.handles:
            # A dead engine is already shut down; the actor is killed either way (for good).
            with contextlib.suppress(Exception):
                ray.get(handle.shutdown.remote(), timeout=30)
            ray.kill(handle, no_restart=True)
        if self.board is not None:
            ray.kill(self.board)


def _what_went_wrong(result: ProbeResult) -> str:
    if not result.weights_ok:
        return "the weights it wrote do not have the digest the learner published"
    if result.nearer_previous:
        return "its probe answer is nearer the previous version's than this one's"
    return (
        f"its probe logprobs differ from the learner's by {result.mean_abs_diff:.3g} on average, "
        f"{result.max_abs_diff:.3g} at most (tolerance {result.atol:.3g} / {result.max_atol:.3g})"
    )
