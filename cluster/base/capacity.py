"""How much rollout work a farm keeps going: sized from its engines, not fixed numbers.

An engine runs at most ``max_num_seqs`` sequences per step. A multi-turn episode spends part of
its life waiting on the env, so keeping every engine's batch full takes more sequences in flight
than the batch holds: up to one batch in the engine and one in the env, ``2 x engines x
max_num_seqs`` sequences, ``G`` per group. More than that only queues inside the engine, where
each waiting request ages (and, in async mode, goes stale) while it holds a KV-cache reservation.

``env.workers: auto`` starts with enough workers to fill every engine's batch once and lets the
controller (``cluster.farm.autoscale``) move between ``env.min_workers`` and ``env.max_workers``
(default: the workers that reach the in-flight cap; more could never all be busy).
"""

from __future__ import annotations

from math import ceil

IN_FLIGHT_BATCHES = 2  # one batch in the engine, one in the env


def inflight_cap(engines: int, max_num_seqs: int, group_size: int) -> int:
    """Groups the farm may have in flight at once (``train.max_inflight_groups`` when unset)."""
    return max(1, ceil(IN_FLIGHT_BATCHES * engines * max_num_seqs / group_size))


def auto_start_workers(
    engines: int, max_num_seqs: int, group_size: int, groups_per_worker: int
) -> int:
    """Env workers whose groups fill every engine's batch once (``env.workers: auto``'s start)."""
    return max(1, ceil(engines * max_num_seqs / (group_size * groups_per_worker)))


def auto_max_workers(cap_groups: int, groups_per_worker: int) -> int:
    """Env workers that reach the in-flight cap (``env.max_workers`` when unset)."""
    return max(1, ceil(cap_groups / groups_per_worker))
