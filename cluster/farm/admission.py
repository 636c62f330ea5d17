"""How many groups the async producer keeps in flight or queued: a pure function of four counts.

Enough to keep every worker busy, but no more than the learner can take before they go stale:
anything beyond that would be generated only to be dropped, on the cores the learner needs.

A group started now, at version v, is judged when it is collected: by the batch being collected
right now (``awaited_groups`` it still waits for) at staleness 0, or by one of the next
``max_staleness`` batches (collected at versions v+1 .. v+max_staleness) at most
``max_staleness`` stale; a later batch would drop it.
"""

from __future__ import annotations


def admission_target(
    worker_slots: int, max_staleness: int, groups_per_update: int, awaited_groups: int
) -> int:
    """Groups to keep in flight or queued.

    ``worker_slots``: env workers x groups each plays at once; ``awaited_groups``: how many more
    trainable groups the learner's current batch is waiting for (0 while it trains).
    """
    fresh = max_staleness * groups_per_update + awaited_groups
    return min(worker_slots, fresh)
