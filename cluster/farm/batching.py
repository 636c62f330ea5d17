"""From finished groups to the learner's batches: each group's fate decided and booked.

A finished group is one of: failed (a part died under it), stale (sampled more than
``train.max_staleness`` versions before the newest), without signal (its rewards span no more
than ``learner.min_reward_spread``: GRPO's advantages would be noise; with ``train.signal:
success`` also every group whose episodes all succeeded or all failed), or trainable. Only the
last kind reaches the learner, as token-exact samples (``to_sample_group``); every other one is
booked in the ledger with its reason, so every episode played is accounted for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from cluster.farm.failures import FailureLimits
from cluster.farm.ledger import Ledger
from cluster.farm.publishing import Versions
from learner.types import Sample, SampleGroup, lacks_signal, reward_spread
from rollout.types import TrajectoryGroup

Batch = list[tuple[TrajectoryGroup, int]]  # trainable groups and their staleness


class Batcher:
    def __init__(
        self,
        queue: asyncio.Queue[TrajectoryGroup],
        ledger: Ledger,
        failures: FailureLimits,
        versions: Versions,
        max_staleness: int,
        min_reward_spread: float,
        on_trainable: Callable[[int], None],
        needs_mixed_outcomes: bool = False,
    ) -> None:
        self.queue = queue
        self.ledger = ledger
        self.failures = failures
        self.versions = versions
        self.max_staleness = max_staleness
        self.min_reward_spread = min_reward_spread
        self.on_trainable = on_trainable  # called with each trainable group's staleness
        self.needs_mixed_outcomes = needs_mixed_outcomes  # train.signal: success
        self.awaited = 0  # trainable groups the batch being collected still waits for

    async def collect(self, n: int, wait: bool, update: int) -> Batch:
        """Take up to ``n`` trainable groups from the queue; book every other group's fate
        (against ``update``, the last booked one).

        ``wait``: block until ``n`` trainable groups came (async); else take what is queued (sync).
        """
        batch: Batch = []
        while len(batch) < n and (wait or not self.queue.empty()):
            self.awaited = n - len(batch) if wait else 0
            group = await self.queue.get()
            self.awaited = 0
            if (kept := self._judge(group, update)) is not None:
                batch.append((group, kept))
                self.on_trainable(kept)
        return batch

    def _judge(self, group: TrajectoryGroup, update: int) -> int | None:
        """The staleness of a trainable group; None (its fate booked) for any other."""
        if group.failed:
            self.ledger.record(group, "failed", group.error, update)
            self.failures.failed_group(group)
            return None
        staleness = self.versions.staleness(group.min_version)
        wins = sum(t.achieved for t in group.trajectories)
        mixed = 0 < wins < len(group.trajectories)
        why = ""
        if lacks_signal(group.rewards, self.min_reward_spread):
            spread = reward_spread(group.rewards)
            why = f"reward spread {spread:.3g} <= learner.min_reward_spread" if spread else ""
            why = why or "every episode scored the same"
        elif self.needs_mixed_outcomes and not mixed:
            why = f"{wins} of {len(group.trajectories)} episodes succeeded (train.signal)"
        self.failures.played(group, not why, why)
        if staleness > self.max_staleness:
            self.ledger.record(group, "dropped_stale", f"staleness {staleness}", update)
        elif why:
            self.ledger.record(group, "dropped_zero_variance", why, update)
        else:
            return staleness
        return None


def to_sample_group(group: TrajectoryGroup) -> SampleGroup:
    """A scored rollout group as the learner's input: token-exact samples, nothing re-tokenised."""
    samples = [
        Sample(
            token_ids=t.token_ids(),
            loss_mask=t.loss_mask(),
            behaviour_logprobs=t.behaviour_logprobs(),
            reward=t.total_reward,
            adapter_version=min(t.versions),
        )
        for t in group.trajectories
    ]
    return SampleGroup(group_id=group.group_id, task_id=group.task_id, samples=samples)
