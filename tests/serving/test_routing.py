"""Sticky routing: every turn of an episode goes to the same engine, episodes spread evenly,
and a request is never routed to an engine Ray is restarting."""

from __future__ import annotations

from collections import Counter

from serving.config import EngineConfig
from serving.engine_pool import EnginePool


def _pool(engines: int) -> EnginePool:
    return EnginePool(handles=[object() for _ in range(engines)], config=EngineConfig())


def test_an_episode_keeps_its_engine_and_episodes_spread():
    pool = _pool(4)
    keys = [f"g{g}/{e}" for g in range(50) for e in range(8)]
    homes = {key: pool._pick(key) for key in keys}
    assert all(pool._pick(key) == homes[key] for key in keys)  # every turn, same engine
    assert all(_pool(4)._pick(key) == homes[key] for key in keys[:20])  # in every process too
    counts = Counter(homes.values())
    assert set(counts) == {0, 1, 2, 3} and max(counts.values()) < 1.5 * min(counts.values())


def test_without_a_key_or_while_its_engine_is_down_the_least_loaded_engine_serves():
    pool = _pool(3)
    pool.in_flight = [5, 1, 3]
    assert pool._pick(None) == 1
    home = pool._pick("g1/0")
    pool._recovering[home] = None  # Ray is restarting it
    other = pool._pick("g1/0")
    assert other != home and other == min(
        (i for i in range(3) if i != home), key=lambda i: pool.in_flight[i]
    )
    pool._recovering = {0: None, 1: None, 2: None}
    assert pool._pick("g1/0") is None  # every engine down: the caller waits
