"""How many groups the async producer keeps in flight: every worker busy, nothing born stale."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from cluster.config import load_config
from cluster.farm import Farm

LOCAL = Path(__file__).parents[2] / "configs" / "local.yaml"


@pytest.mark.parametrize(
    ("workers", "max_staleness", "awaited", "expected"),
    [
        (2, 1, 0, 4),  # 2 workers x 2 groups: the workers are the limit
        (8, 1, 0, 4),  # learner training: one batch (4 groups) can still be used in time
        (8, 1, 3, 7),  # learner waiting for 3 more groups: those are admitted as well
        (8, 2, 0, 8),  # two versions of slack: two batches
        (8, 0, 0, 0),  # on-policy only: nothing starts unless the learner is waiting for it
        (8, 0, 4, 4),
    ],
)
def test_admission_never_starts_a_group_that_must_go_stale(
    workers: int, max_staleness: int, awaited: int, expected: int
) -> None:
    config = load_config(LOCAL, [f"train.max_staleness={max_staleness}"])
    assert config.train.groups_per_update == 4 and config.env.groups_per_worker == 2
    farm = Farm(config, model_path="unused")
    farm.workers = SimpleNamespace(size=workers)
    farm.awaited_groups = awaited
    assert farm._admission_target() == expected
