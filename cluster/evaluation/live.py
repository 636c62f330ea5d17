"""Live eval: greedy episodes of held-out tasks against real environments, per tier.

Each (task, seed) is one episode at temperature 0, played by whoever evaluates: the farm's env
workers (``Farm.evaluate``), or ``rlfarm eval``'s policies (the rollout loop on an engine, a
message loop on an endpoint) on fresh sessions. Episodes run concurrently up to
``concurrency``. Seeds 0..episodes-1 give each task different initial states, so more than one
episode per task is not the same greedy run repeated. ``scoring.live_summary`` turns the records
into the per-tier metrics every caller reports.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from contextlib import contextmanager
from typing import Any

from cluster.evaluation.scoring import EpisodeRecord
from rollout.config import EnvSettings

PlayEpisode = Callable[[Any, int], Awaitable[EpisodeRecord]]


async def evaluate_live(
    play: PlayEpisode, tasks: Sequence, episodes: int = 1, concurrency: int = 4,
    on_episode: Callable[[EpisodeRecord], None] | None = None,
) -> list[EpisodeRecord]:  # fmt: skip
    """One record per (task, seed); ``tasks`` are anything with ``.id`` and ``.tier``.
    ``on_episode`` sees each record as its episode ends (progress)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(task, seed: int) -> EpisodeRecord:
        async with gate:
            record = await play(task, seed)
        if on_episode is not None:
            on_episode(record)
        return record

    return list(await asyncio.gather(*(one(t, seed) for t in tasks for seed in range(episodes))))


@contextmanager
def env_sessions(settings: EnvSettings, max_steps: int):
    """A factory of fresh env sessions for an eval run (the same factory rollout workers use)."""
    from rollout.sessions import open_sessions

    sessions = open_sessions(settings, max_steps, threads=16)
    try:
        yield sessions.new
    finally:
        sessions.close()
