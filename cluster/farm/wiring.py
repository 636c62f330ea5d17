"""Starting a farm's Ray parts, and the run directory they write into.

``start_parts`` starts the engines, the learner and the env workers with bounded waits and
returns their handles; the driver never sees how they were placed. ``check_run_dir`` refuses to
start a run over another one, or to resume one that has nothing to resume, before any of it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cluster.base.config import FarmConfig
from cluster.base.placement import FarmPlacement
from cluster.farm.checkpoints import CheckpointStore
from cluster.farm.rollout_workers import RolloutWorkerSet
from serving.engine_pool import EnginePool

if TYPE_CHECKING:
    from ray.actor import ActorHandle

LEARNER_START_TIMEOUT_S = 600.0
# Set by Ray's job supervisor in the environment of every submitted job's driver.
RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # the learner loads its base model before it answers


class RunDirectoryError(ValueError):
    """A run directory is in use (start without --resume) or has nothing to resume."""


def run_directory(config: FarmConfig) -> Path:
    """Where the run's outputs go: ``run.out_dir/run.name``, absolute, on the driver's disk.

    A relative ``run.out_dir`` is relative to the working directory, except under ``ray job
    submit``: there the working directory is a copy Ray unpacks for the job (and deletes), so it
    is taken under ``$RLFARM_HOME`` instead (default ``~/.cache/rlfarm/runs/<name>``)."""
    out_dir = Path(config.run.out_dir).expanduser()
    if not out_dir.is_absolute() and os.environ.get(RAY_JOB_ENV):
        from cluster.models.tiny import rlfarm_home

        out_dir = rlfarm_home() / out_dir
    return out_dir.resolve() / config.run.name


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """Refuse to start a run over another one, or to resume one that has no checkpoint."""
    used = [n for n in ("ledger.jsonl", "checkpoints") if (run_dir / n).exists()]
    if used and not resume:
        raise RunDirectoryError(
            f"{run_dir} already holds a run ({', '.join(used)}): continue it with "
            "`rlfarm train --config FILE --resume`, or start a new one under another name "
            "(--set run.name=NEW), or remove the directory"
        )
    if resume and not CheckpointStore(run_dir, keep=1).updates():
        raise RunDirectoryError(
            f"nothing to resume in {run_dir}: it has no checkpoint; start the run without --resume"
        )


@dataclass(frozen=True)
class FarmParts:
    engine_pool: EnginePool
    learner: ActorHandle  # learner.actor.LearnerActor
    workers: RolloutWorkerSet
    control: ActorHandle  # cluster.farm.control.FarmControl
    placement: FarmPlacement  # the reserved resources, to release

    def stop(self) -> None:
        """Stop every part and release the resources reserved for them."""
        import ray

        self.workers.shutdown()
        self.engine_pool.shutdown()
        ray.kill(self.learner, no_restart=True)
        ray.kill(self.control)  # its name is global on the cluster: free it for the next run
        self.placement.release()


def start_parts(config: FarmConfig, model_path: str) -> FarmParts:
    """Start the engines, the learner and the env workers; returns when all can work."""
    import ray

    from cluster.base.placement import learner_memory_fraction
    from cluster.farm.control import start_control
    from learner.actor import create_learner_actor
    from rollout.worker import rollout_worker_class

    placement = FarmPlacement.reserve(config)
    # Engines, learner and workers load at once (each is mostly imports and a model load); the
    # waits come after. The workers only hold the engine pool's handles until their first request.
    engine_pool = EnginePool.launch(
        config.engine.with_model(model_path), config.run.engines, placement.engines
    )
    learner_config = config.learner.with_model(model_path)
    fraction = learner_memory_fraction(config)
    if fraction < 1.0:
        # Engines may share the learner's GPU: vLLM profiles its memory first, then the learner
        # plans within the share it is given.
        engine_pool.wait_ready()
        learner_config = learner_config.model_copy(update={"memory_fraction": fraction})
    learner = create_learner_actor(
        learner_config,
        torch_threads=config.run.learner_threads,
        max_restarts=config.run.max_learner_restarts,
        **placement.learner,
    )
    worker_cls = rollout_worker_class()
    env, max_steps = config.env, config.rollout.max_steps

    def start_worker(name: str, step_latency_s: float):
        settings = env.model_copy(update={"step_latency_s": step_latency_s})
        return worker_cls.options(name=None, num_cpus=env.worker_cpus).remote(
            name, engine_pool, model_path, settings, max_steps
        )

    workers = RolloutWorkerSet(factory=start_worker, step_latency_s=env.step_latency_s)
    workers.resize(env.workers)
    control = start_control(config.run.name, env.workers)
    engine_pool.wait_ready()
    ray.get(learner.state.remote(), timeout=LEARNER_START_TIMEOUT_S)
    return FarmParts(engine_pool, learner, workers, control, placement)
