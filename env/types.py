"""Wire types of the AWS environment: the action, the observation, the state.

These are the typed carriers that cross process boundaries (sandbox process -> env
pool -> HTTP/WebSocket server -> client -> rollout worker). They follow OpenEnv's
conventions so existing OpenEnv clients interoperate: the action is
``{"command": "aws ..."}``; an observation carries ``done``, ``reward`` and
``metadata``; the state carries ``episode_id`` and ``step_count``.

Observation fields, in the agent's terms:

- ``command_success``: the command ran and exited 0. False for AWS errors, CLI usage
  errors, refusals by the safety policy, timeouts, and steps after the episode ended.
- ``output`` / ``error``: the command's stdout / stderr (both capped), or for a refusal
  an empty output and an error that says what was wrong and what is allowed.
- ``partial_progress``: the grader's progress in [0, 1] after this step (1 only when
  ``task_achieved``).
- ``reward``: the shaped reward of this step (see ``env.reward``); None on reset.
- ``hint_text``: the hint returned by ``aws help --task-hint`` on this step, else "".
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_COMMAND_CHARS = 8192


class AwsAction(BaseModel):
    """One agent action: a single AWS CLI command line, e.g. ``aws s3 ls``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: str = Field(
        min_length=1,
        max_length=MAX_COMMAND_CHARS,
        description="One AWS CLI command, e.g. 'aws s3api list-buckets'. No shell syntax.",
    )
    metadata: dict[str, Any] = Field(default_factory=dict, description="Ignored by the env.")


class TaskInfo(BaseModel):
    """What the agent may know about its task (never the checks or the solution)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    tier: str
    description: str


class AwsObservation(BaseModel):
    """What the agent sees after ``reset`` or one ``step`` (OpenEnv-shaped)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command_success: bool = False
    output: str = ""
    error: str = ""
    task_achieved: bool = False
    partial_progress: float = Field(default=0.0, ge=0.0, le=1.0)
    reward: float | None = None
    done: bool = False
    step: int = Field(default=0, ge=0, description="Steps taken so far in this episode.")
    hints_used: int = Field(default=0, ge=0)
    hint_text: str = ""
    task: TaskInfo | None = None
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "For trainers and logs, not for the agent's prompt: episode_id, refusal code, "
            "duration_ms, checks passed/failed, disruptions."
        ),
    )


FinishReason = Literal["achieved", "max_steps", "running", "not_started"]


class EnvState(BaseModel):
    """The environment's bookkeeping for one episode (OpenEnv ``State``-shaped)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    episode_id: str | None = None
    step_count: int = Field(default=0, ge=0)
    task: TaskInfo | None = None
    seed: int | None = None
    hints_used: int = 0
    partial_progress: float = 0.0
    task_achieved: bool = False
    done: bool = False
    finish_reason: FinishReason = "not_started"
    total_reward: float = 0.0
    max_steps: int = 0
    commands: list[str] = Field(default_factory=list, description="Agent commands, in order.")
    disruptions: list[str] = Field(default_factory=list)


class ErrorBody(BaseModel):
    """The JSON body of every 4xx/5xx answer of the env server."""

    model_config = ConfigDict(extra="forbid")

    error: str = Field(description="A stable machine-readable code, e.g. 'unknown_session'.")
    message: str = Field(description="What was wrong and what to do about it.")
    detail: Any = None
