"""Every started episode ends in exactly one ledger line; the counts always balance.

Fates: ``trained``; ``dropped_stale`` (sampled more than ``max_staleness`` versions ago);
``dropped_zero_variance`` (every episode of the group scored the same: no learning signal);
``failed`` (an env or engine failure, or a worker that died; the whole group goes); and
``dropped_end_of_run`` (finished after the last update). Groups are recorded whole.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from rollout.types import TrajectoryGroup

FATES = ("trained", "dropped_stale", "dropped_zero_variance", "failed", "dropped_end_of_run")


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a")
        self.started = 0
        self.counts: Counter[str] = Counter()

    def start(self, episodes: int) -> None:
        """Count episodes as started before they run, so a lost group shows as imbalance."""
        self.started += episodes

    def record(
        self,
        group: TrajectoryGroup,
        fate: str,
        reason: str = "",
        step: int = -1,
        staleness: int | None = None,
    ) -> None:
        if fate not in FATES:
            raise ValueError(f"unknown fate {fate!r}; one of {FATES}")
        for traj in group.trajectories:
            line = {
                "group_id": group.group_id,
                "episode": traj.episode_index,
                "task_id": group.task_id,
                "tier": group.tier,
                "fate": fate,
                "reason": reason or traj.error,
                "reward": round(traj.total_reward, 6),
                "achieved": traj.achieved,
                "turns": len(traj.turns),
                "versions": sorted(set(traj.versions)),
                "learner_step": step,
                "staleness": staleness,
            }
            self._file.write(json.dumps(line) + "\n")
            self.counts[fate] += 1
        self._file.flush()

    @property
    def balanced(self) -> bool:
        return self.started == sum(self.counts.values())

    def summary(self) -> dict:
        return {"started": self.started, **{fate: self.counts[fate] for fate in FATES}}

    def close(self) -> None:
        self._file.close()


def read_ledger(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
