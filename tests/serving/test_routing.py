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
    counts = Counter(homes.values())
    assert set(counts) == {0, 1, 2, 3} and max(counts.values()) - min(counts.values()) <= 1
    # 8 groups on 2 engines go 4/4 (the hash of their keys went 5/3 or worse for many runs).
    pair = _pool(2)
    assert Counter(pair._pick(f"run-7/group-{g}") for g in range(8)) == {0: 4, 1: 4}


def test_a_new_group_goes_home_to_the_least_loaded_engine_and_stays():
    pool = _pool(3)
    pool.in_flight = [6, 2, 4]
    assert pool._pick("g-a") == 1  # its home: the engine with the fewest requests in flight
    pool.in_flight = [0, 9, 0]
    assert pool._pick("g-a") == 1  # the group's later turns stay where its prompt is cached
    assert pool._pick("g-b") in (0, 2)
    # Past HOMES_KEPT, the oldest homes are forgotten (finished groups never come back).
    from serving import engine_pool

    small = _pool(2)
    engine_pool.HOMES_KEPT, kept = 3, engine_pool.HOMES_KEPT
    try:
        for g in range(5):
            small._pick(f"g{g}")
        assert list(small._homes) == ["g2", "g3", "g4"] and sum(small._homed) == 3
    finally:
        engine_pool.HOMES_KEPT = kept


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
