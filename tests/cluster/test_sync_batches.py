"""Sync mode's batches are full: a group without signal is replaced, not trained short.

On the letters env (``env/letters.py``, reward 1 or 0 per answer) with groups of 2, about half of
the groups answer alike and carry no signal. Each sync update must still train
``train.groups_per_update`` groups, played with the version it trains (staleness 0), the
signal-less ones booked as such, and the ledger must balance: async mode's batches already wait
for trainable groups, and a sync batch that kept only its survivors trained most updates of a
weak model on one group (benchmarks/RESULTS.md, "Learning on SmolLM2-135M").
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from cluster.base.config import load_config
from cluster.farm.audit import audit_run

pytestmark = pytest.mark.vllm

CONFIG = Path(__file__).parents[2] / "configs" / "letters-cpu.yaml"


def test_sync_updates_replace_groups_without_signal(ray_runtime, tmp_path):
    from cluster.farm.driver import Farm
    from cluster.models.warm_start import prepare_model

    config = load_config(
        CONFIG,
        [
            f"run.out_dir={tmp_path}", "run.name=sync-batches", "run.eval_episodes=0",
            "train.mode=sync", "train.updates=3", "train.groups_per_update=4",
            "rollout.group_size=2",
        ],
    )  # fmt: skip
    farm = Farm.start(config, prepare_model(config, log=lambda *_: None))
    try:
        asyncio.run(farm.main_loop())
    finally:
        farm.shutdown()

    ledger = farm.ledger
    rows = [json.loads(line) for line in (farm.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["learner"]["groups"] for row in rows] == [4, 4, 4]
    assert farm.state.staleness == {0: 12}  # every trained group played by the version it trained
    # Groups answered alike were played and dropped, and replaced: more started than trained.
    assert ledger.counts["dropped_zero_variance"] > 0, ledger.counts
    assert ledger.counts["trained"] == 12 * 2
    assert ledger.balanced and audit_run(farm.run_dir).defects == 0
