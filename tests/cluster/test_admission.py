"""How many groups the async producer keeps in flight: every worker busy, nothing born stale."""

from __future__ import annotations

import pytest

from cluster.farm.admission import admission_target


@pytest.mark.parametrize(
    ("slots", "max_staleness", "awaited", "expected"),
    [
        (4, 1, 0, 4),  # 2 workers x 2 groups: the workers are the limit
        (16, 1, 0, 4),  # learner training: one batch (4 groups) can still be used in time
        (16, 1, 3, 7),  # learner waiting for 3 more groups: those are admitted as well
        (16, 2, 0, 8),  # two versions of slack: two batches
        (16, 0, 0, 0),  # on-policy only: nothing starts unless the learner is waiting for it
        (16, 0, 4, 4),
    ],
)
def test_admission_never_starts_a_group_that_must_go_stale(
    slots: int, max_staleness: int, awaited: int, expected: int
) -> None:
    assert admission_target(slots, max_staleness, 4, awaited) == expected
