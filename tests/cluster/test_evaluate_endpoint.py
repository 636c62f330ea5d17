"""`rlfarm eval --endpoint URL --endpoint-model NAME` against the real `rlfarm serve` (vLLM's
OpenAI server with a LoRA adapter): both modes through the message-level path, and the error an
unreachable endpoint gives before any work is done."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cluster.base.config import load_config
from cluster.commands.cli import main as rlfarm
from cluster.evaluation.scoring import score_reply
from tests.conftest import free_port

pytestmark = pytest.mark.vllm

TASKS = "[s3-list-buckets,iam-list-users,sqs-list-queues,sns-list-topics]"


def _cli(argv: list[str]) -> int:
    return rlfarm(argv)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    config = load_config(
        None,
        [
            "curriculum.tiers=[warmup]",
            "curriculum.start_tier=warmup",
            f"curriculum.tasks={TASKS}",
            "curriculum.holdout_fraction=0.5",
            "rollout.max_steps=2",
            "rollout.max_new_tokens=16",
        ],
    )
    path = tmp_path_factory.mktemp("config") / "eval.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return path


def test_endpoint_dataset_and_live_eval(served_adapter, config_file, tmp_path):
    argv = ["eval", "--endpoint", f"{served_adapter.url}/v1", "--endpoint-model", "trained",
            "--config", str(config_file), "--max-rows", "3", "--samples", "1",
            "--temperature", "0", "--out", str(tmp_path)]  # fmt: skip
    assert _cli(argv) == 0
    results = json.loads((tmp_path / "results.json").read_text())["targets"]
    assert list(results) == ["trained"]
    views = results["trained"]["live"]
    assert list(views) == ["new_tasks"]  # these warmup tasks name nothing to rename
    dataset, live = results["trained"]["dataset"]["all"], views["new_tasks"]["by_tier"]["all"]
    assert dataset["n"] == 3 and dataset["errors"] == 0 and dataset["latency_s"] > 0
    for row in map(json.loads, (tmp_path / "trained.dataset.jsonl").read_text().splitlines()):
        expected = score_reply(row["reply"], row["reference"])
        assert row["score"] == json.loads(json.dumps(expected.__dict__))
    # Two held-out tasks, one greedy episode each, played turn by turn through the endpoint.
    assert live["episodes"] == 2 and live["failed"] == 0
    path = tmp_path / "trained.new_tasks.live.jsonl"
    episodes = [json.loads(x) for x in path.read_text().splitlines()]
    assert all(1 <= e["steps"] <= 2 and len(e["commands"]) == e["steps"] for e in episodes)
    assert "## Live eval" in (tmp_path / "report.md").read_text()


def test_unreachable_endpoint_fails_before_any_work(config_file, tmp_path, capsys):
    url = f"http://127.0.0.1:{free_port()}"
    argv = ["eval", "--endpoint", url, "--endpoint-model", "m", "--config", str(config_file),
            "--out", str(tmp_path)]  # fmt: skip
    assert _cli(argv) == 2
    assert "did not answer" in capsys.readouterr().err
    assert not (tmp_path / "heldout_sft.jsonl").exists()
