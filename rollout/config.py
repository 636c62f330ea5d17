"""Typed settings of rollouts: where episodes run (``EnvSettings``) and how they are sampled
(``RolloutSettings``). The farm's config embeds both; rollout workers receive them as they are
(pydantic models pickle across Ray), never as dicts."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class EnvSettings(BaseModel):
    """Where episodes run and how many run at once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["local", "http"] = Field(
        default="local", description="'local': in-process sandboxes; 'http': an env server."
    )
    url: str | None = Field(default=None, description="Env server URL when backend is 'http'.")
    workers: int = Field(
        default=2,
        ge=1,
        description="Env workers: rollout-worker actors, each with its own sandbox process (local "
        "backend) or server sessions (http). `rlfarm scale --env-workers N` changes it live.",
    )
    groups_per_worker: int = Field(
        default=1, ge=1, description="Groups one worker plays concurrently."
    )
    step_timeout_s: float = Field(default=30.0, gt=0, description="Bound on one env call.")
    attempts: int = Field(
        default=2,
        ge=1,
        description="Tries per episode (fresh sandbox each) before the group fails.",
    )
    chaos: bool = Field(default=False, description="Inject destructive changes mid-episode.")

    @model_validator(mode="after")
    def _url_for_http(self) -> EnvSettings:
        if self.backend == "http" and not self.url:
            raise ValueError("env.backend is 'http' but env.url is empty: set env.url")
        return self


class RolloutSettings(BaseModel):
    """How one episode is sampled."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    group_size: int = Field(default=8, ge=2, description="G: episodes per task and seed.")
    max_steps: int = Field(default=15, ge=1, description="Agent turns per episode.")
    max_new_tokens: int = Field(default=64, ge=1, description="Tokens per agent reply.")
    temperature: float = Field(default=1.0, ge=0, description="Sampling temperature.")
    top_p: float = Field(default=1.0, gt=0, le=1, description="Nucleus sampling mass.")
