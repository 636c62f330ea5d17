"""Live eval: episodes of held-out tasks against real environments, by task and tier.

Each task is played as one group of ``episodes`` episodes from one initial state (``EVAL_SEED``):
independent draws at the eval's temperature (greedy at 0, where more than one episode repeats the
same answer), each with its own sampling seed (``rollout.episode_loop.sampling_seed``, by episode
index). The farm's env workers (``Farm.evaluate``) and ``rlfarm eval``'s policies (the rollout
loop on an engine, a message loop on an endpoint) play them the same way, so the same policy
draws the same episodes wherever it is scored. Tasks run concurrently up to ``concurrency``.
``scoring.live_result`` turns the records into the per-tier and per-task metrics every caller
reports.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from contextlib import contextmanager
from typing import Any

from cluster.evaluation.scoring import EpisodeRecord
from rollout.config import EnvSettings

EVAL_SEED = 0  # the initial state every evaluation plays a task from
PlayTask = Callable[[Any, int, int], Awaitable[list[EpisodeRecord]]]


async def evaluate_live(
    play: PlayTask, tasks: Sequence, episodes: int = 1, concurrency: int = 4,
    on_episode: Callable[[EpisodeRecord], None] | None = None,
) -> list[EpisodeRecord]:  # fmt: skip
    """``episodes`` records per task: ``play(task, EVAL_SEED, episodes)`` plays one task's group;
    ``tasks`` are anything with ``.id`` and ``.tier``. ``on_episode`` sees each record as its
    task's group ends (progress)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(task) -> list[EpisodeRecord]:
        async with gate:
            records = await play(task, EVAL_SEED, episodes)
        for record in records if on_episode is not None else ():
            on_episode(record)
        return records

    played = await asyncio.gather(*(one(t) for t in tasks))
    return [record for group in played for record in group]


@contextmanager
def env_sessions(settings: EnvSettings, max_steps: int):
    """A factory of fresh env sessions for an eval run (the same factory rollout workers use)."""
    from rollout.env_backends import open_sessions

    sessions = open_sessions(settings, max_steps, threads=16)
    try:
        yield sessions.new
    finally:
        sessions.close()
