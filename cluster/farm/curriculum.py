"""Which task the next group plays: a curriculum over tiers (of the training tasks only; the
held-out ones are decided by ``cluster.base.task_split``).

Tiers unlock in order. The hardest unlocked tier (the frontier) gets ``frontier_weight`` of the
groups, the easier unlocked tiers share the rest; once the frontier's success rate over the last
``window`` episodes reaches ``promote_at`` the next tier unlocks. With ``curriculum.rename`` a group
plays a fresh renamed copy of its task (the env's ``training`` copy named by the group's seed),
where the env can rename it.

Within a tier, ``curriculum.task_sampling: learnability`` picks a task in proportion to
p(1 - p), p its estimated success rate: the variance of one episode's outcome, so the chance that
a group's episodes disagree and give GRPO a signal (the learnability weighting of Foster &
Foerster 2025, "Learning to Reason at the Frontier of Learnability"). A task's p counts its last
``task_window`` episodes (renamed copies count for their task) plus one pseudo-episode at its
tier's recent success rate (kept within 5-95%): a task never played starts where its tier is,
and one solved, or failed, every time sinks towards 0.

Draws are numbered, and draw ``n`` is a pure function of the sampler's seed, ``n``, the frontier
and (with learnability) the outcomes observed before it, which checkpoints keep: a resumed run
continues the numbering past every draw the ledger saw, and a group lost to a fault is replayed
under its own draw number (the ledger's ``draw``), so no draw is played for training twice and
none is lost.
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
        self.task_recent: dict[str, deque[bool]] = {}  # outcomes per (unrenamed) task
        self.task_ids = {t.id for t in tasks}
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
        task, seed = self._pick(rng, tier), rng.randrange(2**31)
        copy = self.renamer.training(task.id, seed)
        return Draw(task if copy is None else EnvTask(copy, task.tier), seed, index)

    def _pick(self, rng: random.Random, tier: str) -> EnvTask:
        tasks = self.by_tier[tier]
        if self.settings.task_sampling == "uniform":
            return rng.choice(tasks)
        return rng.choices(tasks, [self.learnability(t.id, tier) for t in tasks])[0]

    def learnability(self, task_id: str, tier: str) -> float:
        """p(1 - p) of a task's estimated success rate p (see the module's docstring)."""
        seen = self.task_recent.get(task_id, ())
        window = self.recent[tier]
        # Kept off 0 and 1: a tier nobody has solved yet must still be explored.
        prior = min(0.95, max(0.05, sum(window) / len(window))) if window else 0.5
        p = (sum(seen) + prior) / (len(seen) + 1)
        return p * (1 - p)

    def skip_to(self, draw: int) -> None:
        """Continue the numbering at ``draw`` (a resumed run: the ledger saw the earlier ones)."""
        self.draws = max(self.draws, draw)

    def observe(self, tier: str, achieved: list[bool], task_id: str = "") -> bool:
        """Record a group's episode outcomes (``task_id``: the task or its renamed copy it
        played); returns True when this promoted the frontier."""
        if tier not in self.recent:
            return False
        self.recent[tier].extend(achieved)
        base = task_id if task_id in self.task_ids else task_id.rpartition("@")[0]
        if base in self.task_ids:
            window = self.settings.task_window
            self.task_recent.setdefault(base, deque(maxlen=window)).extend(achieved)
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
            "task_recent": {t: [bool(x) for x in seen] for t, seen in self.task_recent.items()},
            "seed": self.seed,
            "draws": self.draws,
        }

    def load_state(self, state: dict) -> None:
        self.frontier = min(int(state["frontier"]), len(self.order) - 1)
        for tier, outcomes in state["recent"].items():
            if tier in self.recent:
                self.recent[tier].clear()
                self.recent[tier].extend(outcomes)
        self.task_recent = {
            t: deque(seen, maxlen=self.settings.task_window)
            for t, seen in state.get("task_recent", {}).items()
            if t in self.task_ids
        }
        if "draws" not in state:
            raise ValueError(
                "this checkpoint's curriculum state predates numbered draws (it saved an RNG): "
                "resume it with the rlfarm version that wrote it, or start a new run"
            )
        self.seed, self.draws = str(state["seed"]), int(state["draws"])
