"""The learner's memory estimate: the GPU configs fit the devices they are written for, and a
config that cannot fit is refused with the fields to change. Qwen2.5-3B's shape is built from
its published architecture numbers (config.json) on the meta device: nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen2Config

from cluster.base.config import load_config
from cluster.base.placement import learner_memory_fraction
from learner.memory import GIB, LearnerMemoryError, ModelShape, check_fits, estimate

CONFIGS = Path(__file__).parents[2] / "configs"
CARD_24GB = 22.3 * GIB  # what a 24 GB card reports as total
H100 = 79.1 * GIB  # an 80 GB H100's total


@pytest.fixture(scope="module")
def qwen3b() -> ModelShape:
    cfg = Qwen2Config(
        hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
        num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
    )  # fmt: skip
    with torch.device("meta"):
        params = sum(p.numel() for p in AutoModelForCausalLM.from_config(cfg).parameters())
    assert 3.0e9 < params < 3.2e9  # Qwen2.5-3B: 3.09B
    return ModelShape.from_hf_config(cfg, params)


def test_one_gpu_config_fits_a_24gb_card_beside_its_engine(qwen3b):
    config = load_config(CONFIGS / "gpu-1x.yaml")
    # The engine shares the learner's GPU: the learner is given what vLLM leaves.
    fraction = learner_memory_fraction(config, gpus_in_cluster=1)
    assert fraction == pytest.approx(1 - config.engine.gpu_memory_utilization)
    given = int(CARD_24GB * fraction)
    need = check_fits(qwen3b, config.learner, given)
    assert 9.0 * GIB < need.total < 9.6 * GIB and need.lora_state < 0.1 * GIB  # the yaml's 9.3
    no_checkpointing = config.learner.model_copy(update={"gradient_checkpointing": False})
    with pytest.raises(LearnerMemoryError, match="gradient_checkpointing: true"):
        check_fits(qwen3b, no_checkpointing, given)


def test_the_learner_is_given_its_own_gpu_unless_engines_share_it():
    h100 = load_config(CONFIGS / "h100-8x.yaml")
    assert learner_memory_fraction(h100, gpus_in_cluster=8) == 1.0
    one = load_config(CONFIGS / "gpu-1x.yaml")
    alone = one.model_copy(update={"run": one.run.model_copy(update={"learner_gpu_share": 1.0})})
    assert learner_memory_fraction(alone, gpus_in_cluster=1) == 1.0  # no engine fits beside it
    greedy = one.model_copy(
        update={"engine": one.engine.model_copy(update={"gpu_memory_utilization": 0.97})}
    )
    with pytest.raises(ValueError, match=r"engine\.gpu_memory_utilization"):
        learner_memory_fraction(greedy, gpus_in_cluster=1)


def test_h100_config_fits_its_own_gpu_and_the_old_micro_batch_would_not(qwen3b):
    config = load_config(CONFIGS / "h100-8x.yaml")
    need = check_fits(qwen3b, config.learner, int(H100))
    assert 60 * GIB < need.total < 62 * GIB  # the yaml's 61.0
    old = config.learner.model_copy(update={"micro_batch_tokens": 32768, "logit_chunk_tokens": 0})
    with pytest.raises(LearnerMemoryError) as refused:
        check_fits(qwen3b, old, int(H100))
    message = str(refused.value)
    assert "learner.micro_batch_tokens (now 32768)" in message
    assert "learner.logit_chunk_tokens: 1024" in message


def test_chunking_and_checkpointing_shrink_what_they_should(qwen3b):
    config = load_config(CONFIGS / "h100-8x.yaml").learner
    whole = estimate(qwen3b, config.model_copy(update={"logit_chunk_tokens": 0}))
    assert whole.logits == 8192 * 151936 * 4 * 5 and estimate(qwen3b, config).logits < whole.logits
    checkpointed = estimate(qwen3b, config.model_copy(update={"gradient_checkpointing": True}))
    assert checkpointed.activations < estimate(qwen3b, config).activations / 10
