"""`rlfarm bench learning`'s arithmetic on constructed evaluations: targets, pooled seeds, the
paired differences and the verdict against the target. (That the farm learns, through the
whole farm, is tests/cluster/test_learning_check.py, on the letters env; the bench's own runs are
recorded in benchmarks/RESULTS.md.)"""

from __future__ import annotations

import pytest

from benchmarks.learning import TARGET, compare_views, verdict
from cluster.evaluation.scoring import EpisodeRecord, live_result


def _view(successes: list[int], episodes: int = 4, tiers: list[str] | None = None) -> dict:
    """A view's live result: task i (of tier ``tiers[i]``, default beginner) solved in
    ``successes[i]`` of ``episodes`` episodes."""
    tiers = tiers or ["beginner"] * len(successes)
    records = [
        EpisodeRecord(f"t{i}", tiers[i], 0, 1.0 if e < k else -0.1, e < k, 1, 0.0, 0, 0)
        for i, k in enumerate(successes)
        for e in range(episodes)
    ]
    return {"new_names": live_result(records)}


def test_seeds_are_pooled_by_task_and_compared_with_sft():
    sft = _view([0, 1, 1, 2, 0, 1, 1, 0, 2, 1])
    grpo = {0: _view([2, 2, 3, 3, 1, 2, 2, 1, 3, 2]), 1: _view([1, 3, 2, 4, 2, 1, 3, 1, 2, 3])}
    views = compare_views(sft, grpo, base=_view([0] * 10))
    out = views["new_names"]
    assert out["targets"]["sft"]["tasks"] == 10 and out["targets"]["sft"]["episodes"] == 40
    pooled = out["targets"]["grpo"]
    assert pooled["episodes"] == 80 and pooled["success"] == pytest.approx(43 / 80)
    assert out["targets"]["grpo_seed1"]["success"] == pytest.approx(22 / 40)
    diff = out["grpo_minus_sft"]["success"]
    # Each task: its success over both seeds' 8 episodes minus SFT's over 4, averaged.
    assert diff["difference"] == pytest.approx(43 / 80 - 9 / 40)
    assert diff["b_better"] == 10 and diff["p_value"] == pytest.approx(2 / 1024)
    assert out["grpo_minus_sft"]["reward"]["difference"] > 0
    assert set(out["grpo_minus_sft_by_seed"]) == {"0", "1"}
    assert out["sft_minus_base"]["success"]["difference"] == pytest.approx(9 / 40)


def test_each_tier_gets_its_own_paired_difference():
    # The beginner tasks all rose, the intermediate ones did not move: pooled over the view the
    # rise is diluted by half, within beginner it is whole.
    tiers = ["beginner"] * 6 + ["intermediate"] * 6
    sft = _view([1] * 6 + [0] * 6, tiers=tiers)
    grpo = {0: _view([3] * 6 + [0] * 6, tiers=tiers), 1: _view([3] * 6 + [0] * 6, tiers=tiers)}
    out = compare_views(sft, grpo, None)["new_names"]
    tier = out["grpo_minus_sft_by_tier"]
    assert set(tier) == {"beginner", "intermediate"}
    assert tier["beginner"]["difference"] == pytest.approx(0.5)
    assert tier["beginner"]["strata"] == 6 and tier["beginner"]["b_better"] == 6
    assert tier["intermediate"]["difference"] == 0 and tier["intermediate"]["p_value"] == 1.0
    assert out["grpo_minus_sft"]["success"]["difference"] == pytest.approx(0.25)
    # SFT never solved the 6 intermediate tasks: the reachable rise is beginner's 6 x (1 - 1/4)
    # over 12 tasks, 37.5 points; GRPO reached 25 points of it.
    assert out["sft_headroom"] == {
        "tasks": 12,
        "never_solved": 6,
        "always_solved": 0,
        "ceiling_points": 37.5,
    }


def test_the_verdict_says_by_how_much_it_fell_short():
    sft = _view([1] * 12)
    small_gain = compare_views(sft, {0: _view([1] * 11 + [2])}, None)
    short = verdict(small_gain, wall_s=3 * 3600)
    assert not short["met"] and short["measured_points"] == pytest.approx(100 / 48)
    assert short["short_by"]["points"] == pytest.approx(TARGET["min_points"] - 100 / 48)
    assert short["short_by"]["p_value"] == 1.0 and short["short_by"]["wall_s"] == 3600
    big_gain = compare_views(sft, {0: _view([3] * 12)}, None)
    met = verdict(big_gain, wall_s=3600)
    assert met["met"] and met["short_by"] is None and met["measured_p"] < 0.05


def test_what_trained_tells_groups_with_a_success_from_all_fail_groups(tmp_path):
    import json

    from benchmarks.learning import what_trained

    def fates(group: str, tier: str, fate: str, wins: int, episodes: int = 4) -> list[dict]:
        return [{"group_id": group, "episode": e, "task_id": "t", "tier": tier, "fate": fate,
                 "reward": 1.0, "achieved": e < wins} for e in range(episodes)]  # fmt: skip

    lines = [
        {"event": "start", "group_id": "a", "tier": "beginner", "episodes": 4},
        *fates("a", "beginner", "trained", wins=2),
        *fates("b", "intermediate", "trained", wins=0),  # partial-progress spread alone
        *fates("c", "intermediate", "dropped_zero_variance", wins=0),
        # A group booked twice: its last line wins (read_ledger's rule).
        *fates("d", "intermediate", "failed", wins=0),
        *fates("d", "intermediate", "trained", wins=1),
    ]
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = what_trained(ledger)
    assert out["beginner"] == {
        "groups_trained": 1, "trained_with_a_success": 1, "episodes": 4,
        "episodes_without_signal": 0, "share_without_signal": 0.0,
    }  # fmt: skip
    inter = out["intermediate"]
    assert inter["groups_trained"] == 2 and inter["trained_with_a_success"] == 1
    assert inter["episodes"] == 12 and inter["share_without_signal"] == pytest.approx(
        4 / 12, abs=1e-3
    )
