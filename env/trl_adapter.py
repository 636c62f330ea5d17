"""The AWS env as a TRL ``environment_factory`` class, for users who train with TRL's GRPOTrainer.

    from trl import GRPOConfig, GRPOTrainer
    from env.trl_adapter import AwsCliTool, task_dataset

    trainer = GRPOTrainer(model="Qwen/Qwen2.5-0.5B-Instruct", environment_factory=AwsCliTool,
                          train_dataset=task_dataset("warmup"), args=GRPOConfig())
    trainer.train()

TRL makes one instance per rollout and calls ``reset(**row)`` with the dataset row (its
``task_id`` and ``seed`` pick the task and its seeded initial state); the task text it returns is
appended to the row's user message. Every public method is a tool: ``aws`` runs one AWS CLI
command against that rollout's own simulated account (moto, never real AWS, never a shell) and
returns what the command printed, in the env's own wording. ``get_reward`` is the episode's return
from the env's grader: the same reward the farm trains on (success, partial progress, penalties).
Instances share one sandbox process (``env.sandbox_pool.shared_pool``); episodes stay isolated.
"""

from __future__ import annotations

from typing import Any

from env.environment import AwsEnv
from env.prompts import SYSTEM_PROMPT, observation_text, render_task

INSTRUCTIONS = (
    "Solve the AWS task below. Call the `aws` tool with one AWS CLI command at a time, read its "
    "output, and continue until the task is done.\n\n"
)  # TRL appends reset()'s task text to this message as is: the blank line separates them


class AwsCliTool:
    """One rollout's AWS episode; TRL exposes ``aws`` as a tool and scores with ``get_reward``."""

    max_steps = 15

    def __init__(self) -> None:
        self._env = AwsEnv(max_steps=self.max_steps)
        self._return = 0.0
        self._done = False
        self.task_id: str | None = None

    def reset(self, task_id: str, seed: int = 0, **row: Any) -> str:
        """Start the row's task from its seeded initial state; the task text goes to the model."""
        obs = self._env.reset(task_id=task_id, seed=int(seed))
        self._return, self._done, self.task_id = 0.0, False, task_id
        return render_task(obs.task)

    def aws(self, command: str) -> str:
        """Run one AWS CLI command in this task's simulated AWS account.

        Args:
            command: One AWS CLI command, starting with `aws`, e.g. `aws s3api list-buckets`.

        Returns:
            What the command printed, or its error, plus a hint when one is due.
        """
        if self._done:
            return "The episode is over: no more commands run."
        obs = self._env.step(command)
        self._return += float(obs.reward or 0.0)
        self._done = bool(obs.done or obs.task_achieved)
        return observation_text(obs)

    def get_reward(self) -> float:
        """The episode's return so far, as the env's grader scored each command."""
        return self._return


def task_dataset(
    tier: str | None = None, seeds: int = 1, task_ids: list[str] | None = None,
    instructions: str = INSTRUCTIONS,
):  # fmt: skip
    """A ``datasets.Dataset`` of AWS tasks for TRL: one row per (task, seed), with a
    conversational ``prompt`` (the env's system prompt and ``instructions``, to which TRL appends
    the task text) and ``task_id``/``seed`` columns that ``AwsCliTool.reset`` reads."""
    from datasets import Dataset

    from env.catalog import load_catalog

    tasks = load_catalog().by_tier(tier) if tier else list(load_catalog())
    if task_ids is not None:
        tasks = [t for t in tasks if t.id in set(task_ids)]
    prompt = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": instructions},
    ]
    rows = [{"prompt": prompt, "task_id": t.id, "seed": s} for t in tasks for s in range(seeds)]
    return Dataset.from_list(rows)
