"""Publishing adapter versions: layout, manifest and probe, retention, plain-peft loading."""

from __future__ import annotations

import random

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from learner.config import LearnerConfig
from learner.trainer import Learner
from serving.adapter_files import published_versions
from serving.types import read_manifest
from tests.learner.samples import random_group


@pytest.fixture(scope="module")
def trained(tiny_model_dir) -> Learner:
    """A learner whose adapter has moved away from the base (so the probe can tell them apart)."""
    config = LearnerConfig(
        model_path=str(tiny_model_dir), device="cpu", lr=0.05, keep_last=2, lora_dropout=0.0
    )
    learner = Learner(config)
    rng = random.Random(0)
    for _ in range(2):
        learner.train_step([random_group(rng, "g", [0.0, 1.0, 0.0, 1.0])])
    return learner


def teacher_forced(model, ids: list[int], start: int) -> list[float]:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
        logprobs = torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(ids[1:])[:, None])
    return logprobs[start - 1 :, 0].tolist()


def test_publish_writes_versions_atomically_and_keeps_the_last_k(trained, tmp_path):
    versions = [trained.publish(tmp_path) for _ in range(3)]
    assert [v.version for v in versions] == [1, 2, 3]
    assert trained.version == 3
    assert published_versions(tmp_path) == [2, 3]  # keep_last=2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v000002", "v000003"]  # no temp dirs
    latest = versions[-1]
    files = {p.name for p in (tmp_path / "v000003").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "manifest.json"} <= files
    manifest = read_manifest(latest.path)
    assert manifest == latest
    assert manifest.learner_step == trained.step == 2
    assert manifest.created_at > 0
    tensors = load_file(tmp_path / "v000003" / "adapter_model.safetensors")
    assert tensors and all(t.dtype == torch.float32 for t in tensors.values())


def test_probe_is_reproduced_by_plain_peft(trained, tmp_path, tiny_model_dir):
    adapter = trained.publish(tmp_path)
    probe = adapter.probe
    assert probe is not None
    assert len(probe.completion_token_ids) == len(probe.logprobs) == 8
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    loaded = PeftModel.from_pretrained(base, adapter.path).eval()
    ids = probe.prompt_token_ids + probe.completion_token_ids
    start = len(probe.prompt_token_ids)
    assert teacher_forced(loaded, ids, start) == pytest.approx(probe.logprobs, abs=1e-5)
    with loaded.disable_adapter():
        assert teacher_forced(loaded, ids, start) == pytest.approx(
            probe.reference_logprobs, abs=1e-5
        )
    # the adapter has moved: the probe can tell it apart from the base model
    assert (
        max(abs(a - b) for a, b in zip(probe.logprobs, probe.reference_logprobs, strict=True))
        > 1e-3
    )
    # the completion is the base model's greedy continuation: the same tokens for every version
    with torch.no_grad(), loaded.disable_adapter():
        logits = loaded(input_ids=torch.tensor([ids])).logits[0, start - 1 : -1]
    assert logits.argmax(-1).tolist() == probe.completion_token_ids
    assert trained.publish().probe.completion_token_ids == probe.completion_token_ids


def test_versions_never_repeat_when_a_new_learner_publishes_into_the_same_dir(
    trained, tmp_path, tiny_model_dir
):
    trained.publish(tmp_path)
    trained.publish(tmp_path)
    fresh = Learner(LearnerConfig(model_path=str(tiny_model_dir), device="cpu", keep_last=5))
    assert fresh.version == 0
    assert fresh.publish(tmp_path).version == trained.version + 1


def test_bfloat16_base_still_publishes_float32_adapters(tiny_model_dir, tmp_path):
    learner = Learner(LearnerConfig(model_path=str(tiny_model_dir), device="cpu", dtype="bfloat16"))
    assert all(p.dtype == torch.float32 for p in learner.params)
    adapter = learner.publish(tmp_path)
    tensors = load_file(f"{adapter.path}/adapter_model.safetensors")
    assert all(t.dtype == torch.float32 for t in tensors.values())


def test_train_and_publish_reports_publish_time_and_staleness(tiny_model_dir, tmp_path):
    learner = Learner(LearnerConfig(model_path=str(tiny_model_dir), device="cpu"))
    rng = random.Random(1)
    metrics, first = learner.train_and_publish([random_group(rng, "g", [0.0, 1.0])], tmp_path)
    assert first is not None and first.version == 1 and metrics.publish_s > 0
    assert metrics.max_staleness == 0
    metrics, second = learner.train_and_publish([random_group(rng, "g", [0.0, 1.0])], tmp_path)
    assert second.version == 2
    assert metrics.max_staleness == 1  # samples made by version 0, learner at version 1
    metrics, nothing = learner.train_and_publish([random_group(rng, "g", [1.0, 1.0])], tmp_path)
    assert nothing is None and not metrics.stepped and learner.version == 2
