"""Which task the next group plays: a curriculum over tiers (of the training tasks only; the
held-out ones are decided by ``cluster.base.task_split``).

Tiers unlock in order. The hardest unlocked tier (the frontier) gets ``frontier_weight`` of the
groups, the easier unlocked tiers share the rest; once the frontier's success rate over the last
``window`` episodes reaches ``promote_at`` the next tier unlocks. With ``curriculum.rename`` a group
plays a fresh renamed copy of its task (the env's ``training`` copy named by the group's seed),
where the env can rename it.

Draws are numbered, and draw ``n`` is a pure function of the sampler's seed, ``n`` and the
frontier: a resumed run continues the numbering past every draw the ledger saw, and a group lost
to a fault is replayed under its own draw number (the ledger's ``draw``), so no draw is played
for training twice and none is lost.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from cluster.base.config import CurriculumSettings
from cluster.base.task_split import tier_order
from rollout.env_backends import Renamer
from rollout.env_contract import EnvTask


@dataclass(frozen=True)
class Draw:
    """One pick of the curriculum: the task (its renamed copy where the env renames), the seed of
    its group's initial state, and the draw's number."""

    task: EnvTask
    seed: int
    index: int


class CurriculumSampler:
    def __init__(
        self, tasks: list[EnvTask], settings: CurriculumSettings, seed: int | str,
        renamer: Renamer | None = None,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.renamer = renamer if settings.rename and renamer is not None else Renamer()
        self.by_tier = {
            tier: [t for t in tasks if t.tier == tier]
            for tier in tier_order(tasks, settings)
            if any(t.tier == tier for t in tasks)
        }
        if not self.by_tier:
            raise ValueError("the curriculum has no tasks: check curriculum.tiers")
        self.order = list(self.by_tier)
        self.frontier = (
            self.order.index(settings.start_tier) if settings.start_tier in self.order else 0
        )
        self.recent: dict[str, deque[bool]] = {t: deque(maxlen=settings.window) for t in self.order}
        self.seed = str(seed)
        self.draws = 0  # draws made so far: the next draw's number

    @property
    def frontier_tier(self) -> str:
        return self.order[self.frontier]

    def next(self) -> tuple[EnvTask, int]:
        """The next task and the seed of its group's initial state."""
        draw = self.next_draw()
        return draw.task, draw.seed

    def next_draw(self) -> Draw:
        """The next draw, numbered."""
        index, self.draws = self.draws, self.draws + 1
        rng = random.Random(f"{self.seed}#{index}")
        unlocked = self.order[: self.frontier + 1]
        if len(unlocked) == 1 or rng.random() < self.settings.frontier_weight:
            tier = unlocked[-1]
        else:
            tier = rng.choice(unlocked[:-1])
        task, seed = rng.choice(self.by_tier[tier]), rng.randrange(2**31)
        copy = self.renamer.training(task.id, seed)
        return Draw(task if copy is None else EnvTask(copy, task.tier), seed, index)

    def skip_to(self, draw: int) -> None:
        """Continue the numbering at ``draw`` (a resumed run: the ledger saw the earlier ones)."""
        self.draws = max(self.draws, draw)

    def observe(self, tier: str, achieved: list[bool]) -> bool:
        """Record episode outcomes; returns True when this promoted the frontier."""
        if tier not in self.recent:
            return False
        self.recent[tier].extend(achieved)
        window = self.recent[self.frontier_tier]
        if (
            self.frontier + 1 < len(self.order)
            and len(window) >= self.settings.window
            and sum(window) / len(window) >= self.settings.promote_at
        ):
            self.frontier += 1
            return True
        return False

    def state(self) -> dict:
        """What a checkpoint keeps: the frontier, the recent outcomes, the seed and the draws."""
        return {
            "frontier": self.frontier,
            "recent": {tier: [bool(x) for x in window] for tier, window in self.recent.items()},
            "seed": self.seed,
            "draws": self.draws,
        }

    def load_state(self, state: dict) -> None:
        self.frontier = min(int(state["frontier"]), len(self.order) - 1)
        for tier, outcomes in state["recent"].items():
            if tier in self.recent:
                self.recent[tier].clear()
                self.recent[tier].extend(outcomes)
        if "draws" not in state:
            raise ValueError(
                "this checkpoint's curriculum state predates numbered draws (it saved an RNG): "
                "resume it with the rlfarm version that wrote it, or start a new run"
            )
        self.seed, self.draws = str(state["seed"]), int(state["draws"])
