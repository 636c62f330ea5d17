"""Subprocess for the hard-kill resume test: trains forever, checkpoints once, prints losses.

    python -m tests.learner.resume_worker MODEL_DIR CHECKPOINT_DIR SAVE_AT

Each update's data is a pure function of the learner's data cursor, so a resumed learner sees
the same batches. One JSON line per update: {"step", "loss", "cursor"}; after the update that
reaches SAVE_AT it checkpoints and prints {"saved": SAVE_AT}. It runs until killed.
"""

from __future__ import annotations

import json
import random
import sys

import torch

from learner.config import LearnerConfig
from learner.trainer import Learner
from learner.types import SampleGroup
from tests.learner.samples import random_group

MAX_STEPS = 500  # a bound in case the parent test dies without killing us


def config_for(model_dir: str) -> LearnerConfig:
    # dropout stays on: a resume that forgot the RNG state would draw other dropout masks
    return LearnerConfig(model_path=model_dir, device="cpu", lr=5e-3, lora_dropout=0.05, seed=7)


def batch_at(cursor: int) -> list[SampleGroup]:
    rng = random.Random(cursor)
    return [random_group(rng, f"{cursor}-{i}", [0.0, 1.0, 0.5, 1.0]) for i in range(2)]


def main(model_dir: str, checkpoint_dir: str, save_at: int) -> None:
    torch.set_num_threads(1)
    learner = Learner(config_for(model_dir))
    while learner.step < MAX_STEPS:
        metrics = learner.train_step(batch_at(learner.data_cursor))
        print(json.dumps({"step": metrics.step, "loss": metrics.loss}), flush=True)
        if metrics.step == save_at:
            learner.save_checkpoint(checkpoint_dir, extra={"saved_by": "resume_worker"})
            print(json.dumps({"saved": save_at}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
