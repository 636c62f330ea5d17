"""``LearnerActor``: the ``Learner`` in a Ray actor, so the cluster can place it on its own GPU.

The actor is a thin pass-through; all behaviour lives in ``learner/trainer.py`` (testable without
Ray). Results are the plain dataclasses from ``learner/types.py`` and ``serving/types.py``, which
Ray pickles across processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ray

from learner.config import LearnerConfig
from learner.types import LearnerPosition, LearnerState, SampleGroup, UpdateMetrics
from serving.types import AdapterVersion


@dataclass(frozen=True)
class UpdateResult:
    """One farm update: the learner's report, the version it published (None when no group had
    signal), and its full training state right after the update (``export_state`` blobs), which
    the driver keeps so a restarted learner can continue from exactly here."""

    metrics: UpdateMetrics
    adapter: AdapterVersion | None
    state: LearnerState


@ray.remote
class LearnerActor:
    def __init__(self, config: LearnerConfig, torch_threads: int | None = None) -> None:
        import torch

        from learner.trainer import Learner

        if torch_threads is not None:
            torch.set_num_threads(torch_threads)
        self.learner = Learner(config)

    def train_step(self, groups: Sequence[SampleGroup]) -> UpdateMetrics:
        return self.learner.train_step(groups)

    def train_and_publish(
        self, groups: Sequence[SampleGroup], out_dir: str | None = None
    ) -> tuple[UpdateMetrics, AdapterVersion | None]:
        return self.learner.train_and_publish(groups, out_dir)

    def update(self, groups: Sequence[SampleGroup], min_version: int = 0) -> UpdateResult:
        """One update; the new version (files in memory, numbered above ``min_version``) and
        the state to continue from travel back to the driver: the learner writes no files."""
        metrics, adapter = self.learner.train_and_publish(groups, min_version=min_version)
        return UpdateResult(metrics, adapter, self.learner.export_state())

    def export_state(self) -> LearnerState:
        return self.learner.export_state()

    def import_state(self, saved: LearnerState) -> LearnerPosition:
        """Continue from exported state; returns where the learner now is."""
        self.learner.import_state(saved)
        return self.state()

    def publish(self, min_version: int = 0) -> AdapterVersion:
        """The current weights as a new version (files in memory, nothing written)."""
        return self.learner.publish(min_version=min_version)

    def save_checkpoint(self, path: str, extra: dict[str, Any] | None = None) -> str:
        return str(self.learner.save_checkpoint(path, extra))

    def load_checkpoint(self, path: str) -> dict[str, Any]:
        return self.learner.load_checkpoint(path)

    def pid(self) -> int:
        """This actor's process (a restarted actor answers from a new one)."""
        import os

        return os.getpid()

    def node_id(self) -> str:
        """The Ray node this learner runs on."""
        return ray.get_runtime_context().get_node_id()

    def state(self) -> LearnerPosition:
        """Where the learner is: updates done, newest published version, groups consumed."""
        return LearnerPosition(self.learner.step, self.learner.version, self.learner.data_cursor)


def learner_num_gpus(config: LearnerConfig) -> int:
    """GPUs to reserve for the actor: one for a CUDA device, none for CPU; 'auto' asks Ray
    whether the cluster has any."""
    if config.device == "cpu":
        return 0
    if config.device.startswith("cuda"):
        return 1
    return 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0


def create_learner_actor(
    config: LearnerConfig, torch_threads: int | None = None, **options: Any
) -> ray.actor.ActorHandle:
    """Start a ``LearnerActor`` with the right GPU reservation; ``options`` go to ``.options``."""
    options.setdefault("num_gpus", learner_num_gpus(config))
    options.setdefault("num_cpus", 1)
    return LearnerActor.options(**options).remote(config, torch_threads)
