"""Live eval: greedy episodes of held-out tasks against real env sandboxes, per tier.

Each (task, seed) is one episode at temperature 0, played by the policy's own loop (the rollout
loop for engines, the message loop for endpoints) on a fresh sandbox from ``new_env``; episodes
run concurrently up to ``concurrency``. Seeds 0..episodes-1 give each task different initial
states, so more than one episode per task is not the same greedy run repeated.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from contextlib import contextmanager

from cluster.evaluation.scoring import EpisodeRecord
from rollout.episode import EnvSession, EpisodeLimits


def greedy_limits(max_steps: int, max_model_len: int, max_new_tokens: int) -> EpisodeLimits:
    return EpisodeLimits(
        max_steps=max_steps,
        max_model_len=max_model_len,
        max_new_tokens=max_new_tokens,
        temperature=0.0,
        top_p=1.0,
    )


async def evaluate_live(
    policy,
    tasks: Sequence,
    new_env: Callable[[], EnvSession],
    limits: EpisodeLimits,
    episodes: int = 1,
    concurrency: int = 4,
    env_timeout_s: float = 60.0,
) -> list[EpisodeRecord]:
    """One record per (task, seed); ``tasks`` are anything with ``.id`` and ``.tier``."""
    from rollout.worker import EnvPrompts

    prompts = EnvPrompts()
    gate = asyncio.Semaphore(concurrency)

    async def one(task, seed: int) -> EpisodeRecord:
        async with gate:
            return await policy.play(
                task.id, task.tier, seed, new_env, prompts, limits, env_timeout_s
            )

    plays = [one(task, seed) for task in tasks for seed in range(episodes)]
    return list(await asyncio.gather(*plays))


@contextmanager
def env_sessions(backend: str, url: str | None, max_steps: int, step_timeout_s: float):
    """A factory of fresh env sessions: in-process moto sandboxes (``local``) or an env server."""
    if backend == "http":
        from rollout.worker import HttpSession

        yield lambda: HttpSession(url, step_timeout_s)
        return
    from concurrent.futures import ThreadPoolExecutor

    from env.catalog import load_catalog
    from env.pool import EnvPool
    from rollout.worker import LocalSession

    catalog = load_catalog()
    pool = EnvPool(workers=1).start()
    executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="eval-env")
    try:
        yield lambda: LocalSession(catalog, pool, executor, max_steps, chaos=False)
    finally:
        executor.shutdown(wait=True)
        pool.close()
