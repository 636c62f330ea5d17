"""Sticky routing: every turn of every episode of a group goes to the same engine, groups spread
evenly, a request spills only when its engine's batch is full, and a request is never routed to
an engine Ray is restarting."""

from __future__ import annotations

from collections import Counter

from serving.config import EngineConfig
from serving.engine_pool import EnginePool


def _pool(engines: int) -> EnginePool:
    return EnginePool(handles=[object() for _ in range(engines)], config=EngineConfig())


def test_a_group_keeps_its_engine_and_groups_spread():
    pool = _pool(4)
    keys = [f"g{g:04d}" for g in range(400)]
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


def test_a_group_spills_only_when_its_engine_has_a_full_batch_and_another_has_room():
    pool = EnginePool(handles=[object(), object()], config=EngineConfig(max_num_seqs=4))
    home = pool._pick("group-7")
    other = 1 - home
    pool.in_flight[home] = 3
    assert pool._pick("group-7") == home  # room left: stay with the cached prompt
    pool.in_flight[home] = 4
    assert pool._pick("group-7") == other  # full: the other engine takes it
    pool.in_flight[other] = 4
    assert pool._pick("group-7") == home  # both full: queue where the prefix is cached
