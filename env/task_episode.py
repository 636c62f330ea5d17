"""One episode of an AWS task, run where its sandbox lives (inside a sandbox process).

``Episode.start()`` builds a fresh isolated world, runs the task's setup (including
seeded drift) and grades the starting state; ``Episode.step(command)`` runs one agent
command through the executor, applies a disruption if planned, re-grades, and shapes the
reward. The observation it returns is final: routers above it (the env pool, the
server) only carry it.

Episode rules:

- the episode ends (``done``) when the task is achieved or after ``max_steps`` steps;
  a step after that is answered with an error and changes nothing;
- ``aws help --task-hint`` returns the next of the task's three hints (services ->
  operations -> near-complete command) and costs ``hint_cost``; a fourth request is
  an invalid command;
- refusals, failed commands, timeouts and exhausted hints cost ``failure_cost``; a help page
  (``aws <service> help``) costs ``help_cost``;
- a grader crash (a broken task, not the agent's fault) is reported in the
  observation's metadata (``grade_error``); progress keeps its previous value.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from env import disruption as disruption_mod
from env.disruption import DisruptionConfig
from env.executor import CommandExecutor, Execution
from env.grader import Grade, grade
from env.reward import RewardConfig, StepOutcome, step_reward
from env.sandbox import MotoHost, Sandbox, seed_material
from env.types import AwsObservation, EnvState, TaskInfo

log = logging.getLogger(__name__)

MAX_HINTS = 3


class EpisodeConfig(BaseModel):
    """Per-episode settings, chosen by whoever resets (``AwsEnv`` or the server)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_steps: int = Field(default=15, ge=1, le=200)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    disruption: DisruptionConfig = Field(default_factory=DisruptionConfig)
    command_timeout_s: float = Field(default=10.0, gt=0, le=120)
    max_output_chars: int = Field(default=16384, ge=256, le=1_000_000)

    @model_validator(mode="after")
    def _finishing_dominates(self) -> EpisodeConfig:
        self.reward.check_finishing_dominates(self.max_steps, MAX_HINTS)
        return self


class Episode:
    """The state machine of one episode (see the module docstring)."""

    def __init__(
        self, host: MotoHost, task: Any, seed: int, episode_id: str, config: EpisodeConfig
    ) -> None:
        self.host = host
        self.task = task
        self.seed = seed
        self.episode_id = episode_id
        self.config = config
        self.executor = CommandExecutor(
            host, timeout_s=config.command_timeout_s, max_output_chars=config.max_output_chars
        )
        self.info = TaskInfo(id=task.id, tier=task.tier, description=task.description)
        self.sandbox: Sandbox | None = None
        self.step_count = 0
        self.hints_used = 0
        self.progress = 0.0
        self.achieved = False
        self.total_reward = 0.0
        self.commands: list[str] = []
        self.disruptions: list[str] = []
        self._disruption_step = config.disruption.plan(task.tier, seed, config.max_steps)
        self._last_grade: Grade | None = None

    @property
    def done(self) -> bool:
        return self.achieved or self.step_count >= self.config.max_steps

    def start(self) -> AwsObservation:
        """Build the world and run the setup; raises ``SetupError`` for a broken task."""
        started = time.perf_counter()
        self.sandbox = Sandbox(self.host, seed_material(self.task.id, self.seed))
        try:
            for step in self.task.setup_steps(self.seed):
                self.sandbox.run_setup(step, self.executor.setup_argv)
            initial = self._grade()
        except Exception:
            self.close()
            raise
        if initial is None:
            self.close()
            raise RuntimeError(f"task {self.task.id!r}: grading the initial state failed")
        self.progress, self.achieved = initial.progress, initial.achieved
        return AwsObservation(
            command_success=True,
            partial_progress=self.progress,
            task_achieved=self.achieved,
            done=self.done,
            task=self.info,
            metadata={
                "episode_id": self.episode_id,
                "task_id": self.task.id,
                "seed": self.seed,
                "setup_ms": round((time.perf_counter() - started) * 1000.0, 2),
            },
        )

    def step(self, command: str) -> AwsObservation:
        if self.sandbox is None:
            raise RuntimeError("the episode has not started")
        if self.done:
            return self._after_end()
        started = time.perf_counter()
        self.step_count += 1
        self.commands.append(command)
        execution = self.executor.execute(self.sandbox, command)
        hint_text = ""
        if execution.kind == "hint":
            execution, hint_text = self._hint()
        disruption = self._maybe_disrupt()
        before, was_achieved = self.progress, self.achieved
        grade_error = None
        if execution.touched_world or disruption:
            graded = self._grade()
            if graded is None:
                grade_error = "grading failed; progress unchanged (a task problem, not yours)"
            else:
                self.progress, self.achieved = graded.progress, graded.achieved or was_achieved
                self._last_grade = graded
        reward = step_reward(
            self.config.reward,
            StepOutcome(
                progress_before=before,
                progress_after=self.progress,
                newly_achieved=self.achieved and not was_achieved,
                hint=execution.kind == "hint",
                failed=not execution.success,
                help_page=execution.kind == "help",
            ),
        )
        self.total_reward += reward
        return AwsObservation(
            command_success=execution.success,
            output=execution.output,
            error=execution.error,
            task_achieved=self.achieved,
            partial_progress=self.progress,
            reward=reward,
            done=self.done,
            step=self.step_count,
            hints_used=self.hints_used,
            hint_text=hint_text,
            task=self.info,
            metadata=self._metadata(execution, started, disruption, grade_error),
        )

    def state(self) -> EnvState:
        if self.achieved:
            reason = "achieved"
        elif self.step_count >= self.config.max_steps:
            reason = "max_steps"
        else:
            reason = "running"
        return EnvState(
            episode_id=self.episode_id,
            step_count=self.step_count,
            task=self.info,
            seed=self.seed,
            hints_used=self.hints_used,
            partial_progress=self.progress,
            task_achieved=self.achieved,
            done=self.done,
            finish_reason=reason,
            total_reward=self.total_reward,
            max_steps=self.config.max_steps,
            commands=list(self.commands),
            disruptions=list(self.disruptions),
        )

    def close(self) -> None:
        if self.sandbox is not None:
            self.sandbox.close()

    # -- pieces ------------------------------------------------------------------------

    def _hint(self) -> tuple[Execution, str]:
        hints = list(self.task.hints)
        if self.hints_used >= len(hints):
            return (
                Execution(
                    kind="refused",
                    success=False,
                    error=f"no more hints: all {len(hints)} hints for this task were used",
                    refusal_code="no_more_hints",
                ),
                "",
            )
        text = hints[self.hints_used]
        self.hints_used += 1
        return Execution(kind="hint", success=True, output=text), text

    def _maybe_disrupt(self) -> str | None:
        if self._disruption_step is None or self.step_count != self._disruption_step:
            return None
        assert self.sandbox is not None
        event = disruption_mod.inject(self.sandbox.call_api, self.seed, self.step_count)
        if event:
            self.disruptions.append(event)
        return event

    def _grade(self) -> Grade | None:
        assert self.sandbox is not None
        try:
            return grade(self.task, self.sandbox.call_api, events=list(self.sandbox.events))
        except Exception:
            log.exception("grading task %s failed", self.task.id)
            return None

    def _after_end(self) -> AwsObservation:
        return AwsObservation(
            command_success=False,
            error="the episode is over (task achieved or step limit reached); call reset",
            task_achieved=self.achieved,
            partial_progress=self.progress,
            reward=0.0,
            done=True,
            step=self.step_count,
            hints_used=self.hints_used,
            task=self.info,
            metadata={"episode_id": self.episode_id, "refusal": "episode_over"},
        )

    def _metadata(
        self, execution: Execution, started: float, disruption: str | None, grade_error: str | None
    ) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "episode_id": self.episode_id,
            "kind": execution.kind,
            "duration_ms": round((time.perf_counter() - started) * 1000.0, 3),
        }
        if execution.refusal_code:
            meta["refusal"] = execution.refusal_code
        if execution.exit_code is not None:
            meta["exit_code"] = execution.exit_code
        if execution.timed_out:
            meta["timed_out"] = True
        if self._last_grade is not None:
            meta["checks_passed"] = list(self._last_grade.passed)
            meta["checks_failed"] = list(self._last_grade.failed)
        if disruption:
            meta["disruption"] = disruption
        if grade_error:
            meta["grade_error"] = grade_error
        return meta
