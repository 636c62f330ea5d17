"""The learner's memory estimate against a measured update: a random-weight model of
SmolLM2-135M's shape, adapted as the learner adapts it, one real optimizer step on CPU. The
estimate must cover what the update held, and stay close enough to be worth trusting."""

from __future__ import annotations

import pytest

from learner.config import LearnerConfig
from learner.memory import ModelShape
from learner.memory_probe import measure_update

# SmolLM2-135M (config.json): 30 layers, hidden 576, intermediate 1536, 9 heads (3 K/V), tied head.
SMOLLM2 = ModelShape(params=134_515_008, layers=30, hidden=576, intermediate=1536, vocab=49152,
                     heads=9, kv_heads=3, tied_embeddings=True)  # fmt: skip
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
EVERY_LINEAR = [*ATTENTION, "gate_proj", "up_proj", "down_proj"]


@pytest.mark.parametrize(
    ("checkpointing", "modules", "dropout"),
    [(False, ATTENTION, 0.05), (True, ATTENTION, 0.05), (False, EVERY_LINEAR, 0.0)],
)
def test_the_estimate_covers_a_measured_update(checkpointing, modules, dropout):
    config = LearnerConfig(
        model_path="unused", micro_batch_tokens=512, gradient_checkpointing=checkpointing,
        target_modules=modules, lora_dropout=dropout, logit_chunk_tokens=0, dtype="float32",
    )  # fmt: skip
    reading = measure_update(SMOLLM2, config)
    assert reading.measured > reading.estimate.weights, "the update must hold more than weights"
    assert reading.estimate.total >= reading.measured, (
        f"estimate {reading.estimate.describe()} is below the measured "
        f"{reading.measured / 2**30:.2f} GiB"
    )
    assert reading.ratio < 1.5, f"estimate {reading.ratio:.2f}x the measured peak: too loose"
