"""The farm's own evals: the held-out views before and after training, and the periodic curve.

Each task is played as one group of ``run.eval_episodes`` independent draws at
``run.eval_temperature`` (one initial state, ``EVAL_SEED``) by the env workers under a chosen
adapter version, and scored by ``rlfarm eval``'s live metrics (``scoring.live_result``), so a
run's numbers and a later ``rlfarm eval`` of the same version mean the same thing.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

from cluster.base.progress import Progress
from cluster.farm.episode_log import EpisodeLog
from cluster.farm.eval_curve import EvalCurve
from rollout.env_contract import EnvTask
from rollout.types import TrajectoryGroup

PlayEval = Callable[[EnvTask, int, int], Awaitable[TrajectoryGroup]]  # (task, seed, version)


def fixed_training_tasks(train: list[EnvTask], per_tier: int) -> list[EnvTask]:
    """The first ``per_tier`` training tasks of each tier: the same ones at every periodic eval."""
    return [
        task
        for tier in dict.fromkeys(t.tier for t in train)
        for task in [t for t in train if t.tier == tier][:per_tier]
    ]


def overall(views: dict[str, dict]) -> dict:
    """Each view's all-tier result (for one log line)."""
    return {view: result["by_tier"].get("all") for view, result in views.items()}


class Evaluator:
    def __init__(
        self,
        play: PlayEval,
        views: dict[str, list[EnvTask]],
        train_tasks: list[EnvTask],
        episodes: int,
        log: EpisodeLog,
        curve: EvalCurve,
        event: Callable[[str], None],
    ) -> None:
        self.play = play
        self.views = views  # the held-out views (TaskSplit.views)
        self.train_tasks = train_tasks
        self.episodes = episodes
        self.log = log
        self.curve = curve
        self.event = event

    async def evaluate(
        self, version: int, tasks: list[EnvTask], name: str, update: int
    ) -> dict[str, dict]:
        """Every task of ``tasks`` under adapter ``version``: results by tier and by task."""
        from cluster.evaluation.live import EVAL_SEED
        from cluster.evaluation.scoring import live_result, record_from_trajectory

        progress = Progress(
            f"{name} eval of v{version}", len(tasks) * self.episodes, "episodes", stream=sys.stdout
        )

        async def play(task: EnvTask) -> list:
            group = await self.play(task, EVAL_SEED, version)
            self.log.add(group, "eval", f"{name} eval of v{version}", update)
            progress.advance(len(group.trajectories))
            return [record_from_trajectory(t) for t in group.trajectories]

        with progress:
            played = await asyncio.gather(*(play(t) for t in tasks))
        records = [record for group in played for record in group]
        return live_result(records, [t.tier for t in tasks])

    async def heldout(self, version: int, update: int) -> dict[str, dict]:
        """Every held-out view under ``version``; none with ``run.eval_episodes`` 0."""
        if self.episodes == 0:
            return {}
        return {
            view: await self.evaluate(version, tasks, f"held-out {view}", update)
            for view, tasks in self.views.items()
        }

    async def periodic(self, update: int, version: int, heldout: dict | None = None) -> None:
        """One point of the eval curve: the held-out views (``heldout`` if already played) and
        the fixed training tasks under ``version``."""
        if heldout is None:
            heldout = await self.heldout(version, update)
        train = await self.evaluate(version, self.train_tasks, "training-task", update)
        by_split = {view: result["by_tier"] for view, result in heldout.items()}
        by_split["train"] = train["by_tier"]
        await asyncio.to_thread(self.curve.add, update, version, by_split)
        overall = {split: tiers.get("all") for split, tiers in by_split.items()}
        self.event(f"periodic eval at update {update} (v{version}): {overall}")
