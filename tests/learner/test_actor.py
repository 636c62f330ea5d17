"""The Ray actor wrapper: a real local Ray runtime, a LearnerActor on CPU, one update."""

from __future__ import annotations

import random

from learner.config import LearnerConfig
from learner.types import LearnerPosition
from serving.types import read_manifest, weights_digest
from tests.learner.samples import random_group


def test_learner_actor_trains_publishes_and_checkpoints(ray_runtime, tiny_model_dir, tmp_path):
    from learner.actor import create_learner_actor, learner_num_gpus

    config = LearnerConfig(model_path=str(tiny_model_dir), device="cpu", lr=1e-3)
    assert learner_num_gpus(config) == 0
    actor = create_learner_actor(config, torch_threads=1)
    groups = [random_group(random.Random(0), "g", [0.0, 1.0, 0.5])]
    metrics, adapter = ray_runtime.get(
        actor.train_and_publish.remote(groups, str(tmp_path / "adapters")), timeout=180
    )
    assert metrics.stepped and metrics.publish_s is not None and metrics.publish_s > 0
    assert adapter.version == 1 and read_manifest(adapter.path) == adapter
    path = ray_runtime.get(actor.save_checkpoint.remote(str(tmp_path / "ckpt"), {"k": 1}))
    assert ray_runtime.get(actor.load_checkpoint.remote(path)) == {"k": 1}
    assert ray_runtime.get(actor.state.remote()) == LearnerPosition(
        step=1, version=1, data_cursor=1
    )
    # The farm's path: the version's files and the learner's state come back through Ray; the
    # actor writes nothing, and numbers its version above the driver's floor.
    result = ray_runtime.get(actor.update.remote(groups, 5), timeout=180)
    assert result.adapter.version == 6 and result.adapter.path is None
    assert set(result.adapter.files) == {"adapter_config.json", "adapter_model.safetensors"}
    assert result.adapter.sha256 == weights_digest(result.adapter.files)
    assert {"state.json", "optimizer.pt", "adapter/adapter_model.safetensors"} <= set(
        result.state.blobs
    )
    ray_runtime.kill(actor)
