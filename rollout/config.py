"""Typed settings of rollouts: where episodes run (``EnvSettings``) and how they are sampled
(``RolloutSettings``). The farm's config embeds both; rollout workers receive them as they are
(pydantic models pickle across Ray), never as dicts."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

AWS_BACKENDS = ("local", "http")


class TaskEntry(BaseModel):
    """A task of a generic env, declared in the config: its id and (optionally) its tier."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    tier: str = Field(default="default", min_length=1)


class OpenEnvMapping(BaseModel):
    """How the rollout loop speaks to an OpenEnv server: which action field carries the model's
    reply, which observation field becomes the next user turn, and which reset field names the
    task. The defaults fit OpenEnv's text envs (``{"message": ...}`` actions)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action_field: str = Field(
        default="message", description="Action key the model's reply (as written) goes into."
    )
    observation_field: str | None = Field(
        default=None,
        description="Observation key whose value is the next user turn (default: every "
        "observation field as 'key: value' lines).",
    )
    task_field: str = Field(
        default="task_id", description="Reset key that carries the task id (with seed)."
    )
    success_field: str | None = Field(
        default=None, description="Observation key that is true when the task is achieved."
    )
    progress_field: str | None = Field(
        default=None, description="Observation key with partial credit in [0, 1]."
    )


class EnvSettings(BaseModel):
    """Where episodes run and how many run at once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["local", "http", "openenv", "python"] = Field(
        default="local",
        description="'local': the AWS env in in-process sandboxes; 'http': the AWS env server at "
        "env.url; 'openenv': any OpenEnv server at env.url (WebSocket sessions); 'python': an "
        "env class named by env.factory.",
    )
    url: str | None = Field(
        default=None, description="Server URL when backend is 'http' or 'openenv'."
    )
    token: str | None = Field(
        default_factory=lambda: os.environ.get("RLFARM_ENV_TOKEN") or None,
        repr=False,
        exclude=True,  # never written into a run's config.yaml
        description="Bearer token for an env server that requires one (default: "
        "$RLFARM_ENV_TOKEN); kept out of saved configs.",
    )
    factory: str | None = Field(
        default=None,
        description="'package.module:name' of a callable returning one env instance per episode "
        "(backend 'python').",
    )
    openenv: OpenEnvMapping = Field(
        default_factory=OpenEnvMapping, description="Reply/observation mapping (backend openenv)."
    )
    tasks: list[TaskEntry] | None = Field(
        default=None,
        description="Tasks of a generic env (openenv; python when its class has no `tasks`).",
    )
    system_prompt: str | None = Field(
        default=None, description="System turn for a generic env (default: none)."
    )
    workers: int = Field(
        default=2,
        ge=1,
        description="Env workers: rollout-worker actors, each with its own sandbox process (local "
        "backend) or server sessions (http). `rlfarm scale --env-workers N` changes it live; "
        "'auto' sizes it from the engines and turns on autoscale.",
    )
    groups_per_worker: int = Field(
        default=1, ge=1, description="Groups one worker plays concurrently."
    )
    autoscale: bool = Field(
        default=False,
        description="Let the farm add and remove env workers from the engines' measured "
        "utilisation and throughput, between min_workers and max_workers, starting at `workers` "
        "(cluster/farm/autoscale.py). `workers: auto` turns it on with a start sized from the "
        "engines (cluster/base/capacity.py).",
    )
    min_workers: int = Field(default=1, ge=1, description="Fewest env workers autoscale keeps.")
    max_workers: int | None = Field(
        default=None,
        ge=1,
        description="Most env workers autoscale starts (None: enough to reach the farm's "
        "in-flight cap, train.max_inflight_groups).",
    )
    worker_cpus: float = Field(
        default=0.5,
        gt=0,
        description="Ray CPUs one env worker reserves (its sandbox process and tokenizer; an env "
        "behind a server needs less).",
    )
    cpu_nice: int = Field(
        default=0,
        ge=0,
        le=19,
        description="Niceness an env worker's sandbox processes (where the env's steps run) add "
        "to the worker's own (Ray starts workers at 15; the kernel caps it at 19). Like "
        "engine.cpu_nice: where the env shares the learner's cores (async mode on one CPU box), "
        "a nicer env yields the learner, async's critical path, a larger share while it trains.",
    )
    step_latency_s: float = Field(
        default=0.0,
        ge=0,
        description="Latency added to every env step, as a remote env would have (benches and "
        "tests of how the farm copes with a slower env; the `slow_env` fault changes it live).",
    )
    step_timeout_s: float = Field(default=30.0, gt=0, description="Bound on one env call.")
    attempts: int = Field(
        default=2,
        ge=1,
        description="Tries per episode (fresh sandbox each) before the group fails.",
    )
    disrupt: bool = Field(
        default=False,
        description="One destructive change to the world mid-episode (env.disruption).",
    )

    @model_validator(mode="before")
    @classmethod
    def _auto_workers(cls, data):
        """``workers: auto`` outside a farm config (which sizes the start from its engines):
        autoscale from ``min_workers``."""
        if isinstance(data, dict) and data.get("workers") == "auto":
            data = {**data, "autoscale": True, "workers": data.get("min_workers", 1)}
        return data

    @field_validator("tasks", mode="before")
    @classmethod
    def _task_ids(cls, value):
        """``tasks: [a, b]`` is short for ``tasks: [{id: a}, {id: b}]``."""
        if isinstance(value, list):
            return [{"id": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _backend_needs(self) -> EnvSettings:
        if self.max_workers is not None and self.max_workers < self.min_workers:
            raise ValueError(
                f"env.max_workers={self.max_workers} < env.min_workers={self.min_workers}: "
                "raise max_workers or lower min_workers"
            )
        most = self.max_workers or self.workers
        if self.autoscale and not self.min_workers <= self.workers <= most:
            raise ValueError(
                f"env.workers={self.workers} (autoscale's start) is outside env.min_workers="
                f"{self.min_workers} .. env.max_workers={self.max_workers}: start inside the range"
            )
        if self.backend in ("http", "openenv") and not self.url:
            raise ValueError(f"env.backend is {self.backend!r} but env.url is empty: set env.url")
        if self.backend == "openenv" and not self.tasks:
            raise ValueError(
                "env.backend is 'openenv' but env.tasks is empty: list the task ids the server "
                "resets to (env.tasks: [id, ...] or [{id: ..., tier: ...}])"
            )
        if self.backend == "python" and (not self.factory or ":" not in self.factory):
            raise ValueError(
                "env.backend is 'python': set env.factory to 'package.module:name' (a class or "
                "function returning one env instance per episode)"
            )
        return self

    @property
    def is_aws(self) -> bool:
        """The built-in AWS env (its catalog, tiers, warm start and prompts apply)."""
        return self.backend in AWS_BACKENDS


class RolloutSettings(BaseModel):
    """How one episode is sampled."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    group_size: int = Field(default=8, ge=2, description="G: episodes per task and seed.")
    max_steps: int = Field(default=15, ge=1, description="Agent turns per episode.")
    max_new_tokens: int = Field(default=64, ge=1, description="Tokens per agent reply.")
    temperature: float = Field(default=1.0, ge=0, description="Sampling temperature.")
    top_p: float = Field(default=1.0, gt=0, le=1, description="Nucleus sampling mass.")
