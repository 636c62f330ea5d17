"""``rlfarm view``'s JSON API over a run directory written by the farm's own ledger, episode log
and metrics rows; and the command's mistakes (no run named, not a run directory)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cluster.farm.episode_log import EpisodeLog
from cluster.farm.ledger import Ledger
from cluster.view.server import build_app
from rollout.env_contract import StepResult
from rollout.types import Trajectory, TrajectoryGroup, Turn

REPO = Path(__file__).resolve().parents[2]


def played(group_id: str, task: str, tier: str, version: int, rewards: list[float]):
    trajs = []
    for i, reward in enumerate(rewards):
        result = StepResult(text=f"output {i}", reward=reward, action=f"aws s3 ls --v{version}")
        turn = Turn([1], [2, 3], [-0.5, -0.5], version, f"<reply {i} of {group_id}>", result)
        trajs.append(Trajectory(task, tier, group_id, i, 11, turns=[turn], end="max_steps"))
    return TrajectoryGroup(group_id, task, tier, 11, trajs)


@pytest.fixture
def run_dir(tmp_path) -> Path:
    run = tmp_path / "demo"
    run.mkdir()
    (run / "config.yaml").write_text("model: builtin:tiny\ntrain: {mode: async, updates: 2}\n")
    ledger, log = Ledger(run / "ledger.jsonl"), EpisodeLog(run / "episodes")
    ledger.on_fate = log.add
    for gid, task, tier, version, fate in [
        ("g1", "s3-list", "warmup", 0, "trained"),
        ("g2", "iam-users", "beginner", 1, "dropped_zero_variance"),
        ("g3", "s3-list", "warmup", 1, "trained"),
    ]:
        ledger.start(gid, task, tier, 2)
        ledger.record(played(gid, task, tier, version, [0.0, 1.0]), fate, "", step=version)
    log.add(played("e1", "s3-list", "warmup", 2, [1.0]), "eval", "held-out eval of v2")
    ledger.close()
    log.close()
    rows = [{"update": u, "version": u, "reward_by_tier": {"warmup": 0.1 * u},
             "success_by_tier": {"warmup": 0.5}, "staleness_histogram": {"0": 2}}
            for u in (1, 2)]  # fmt: skip
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_the_run_its_metrics_and_ledger_fates(run_dir):
    client = TestClient(build_app(run_dir))
    run = client.get("/api/run").json()
    assert run["name"] == "demo" and run["summary"] is None
    assert run["config"] == {"model": "builtin:tiny", "mode": "async", "updates": 2, "env": None}
    assert run["ledger"]["trained"] == 4 and run["ledger"]["dropped_zero_variance"] == 2
    assert [r["update"] for r in client.get("/api/metrics").json()] == [1, 2]
    assert client.get("/api/eval").json() == []  # no periodic eval in this run
    page = client.get("/")
    assert page.status_code == 200 and "<script>" in page.text  # charts are drawn in the page
    assert "https://" not in page.text and "http://" not in page.text  # nothing from the internet


def test_episodes_filter_by_task_tier_version_and_fate_newest_first(run_dir):
    client = TestClient(build_app(run_dir))
    everything = client.get("/api/episodes").json()
    assert everything["total"] == 7
    assert everything["facets"] == {
        "tasks": ["iam-users", "s3-list"], "tiers": ["beginner", "warmup"],
        "versions": [0, 1, 2], "fates": ["dropped_zero_variance", "eval", "trained"],
    }  # fmt: skip
    assert [e["group_id"] for e in everything["episodes"]][:2] == ["e1", "g3"]
    assert "turns" in everything["episodes"][0] and everything["episodes"][0]["turns"] == 1

    def ids(**query) -> list[str]:
        page = client.get("/api/episodes", params=query).json()
        return [f"{e['group_id']}/{e['episode']}" for e in page["episodes"]]

    assert ids(task="s3-list", fate="trained") == ["g3/1", "g3/0", "g1/1", "g1/0"]
    assert ids(tier="beginner") == ["g2/1", "g2/0"]
    assert ids(version=0) == ["g1/1", "g1/0"]
    assert ids(task="s3-list", limit=1, offset=1) == ["g3/1"]
    assert client.get("/api/episodes", params={"limit": 0}).status_code == 422


def test_one_episode_turn_by_turn_and_two_versions_side_by_side(run_dir):
    client = TestClient(build_app(run_dir))
    episode = client.get("/api/episodes/g3/1").json()
    assert episode["fate"] == "trained" and episode["versions"] == [1]
    assert episode["turns"][0]["reply"] == "<reply 1 of g3>"
    assert episode["turns"][0]["action"] == "aws s3 ls --v1"
    assert episode["turns"][0]["observation"] == "output 1" and episode["turns"][0]["reward"] == 1
    assert client.get("/api/episodes/g9/0").status_code == 404
    both = client.get("/api/compare", params={"task": "s3-list", "a": 0, "b": 2}).json()
    assert [e["group_id"] for e in both["a"]["episodes"]] == ["g1", "g1"]
    assert [e["fate"] for e in both["b"]["episodes"]] == ["eval"]


def test_view_mistakes_are_sentences(tmp_path):
    def view(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cluster.commands.cli", "view", *argv],
                              cwd=REPO, capture_output=True, text=True, timeout=60)  # fmt: skip

    for argv, expected in [((), "name the run"),
                           ((str(tmp_path / "nope"),), "does not exist"),
                           ((str(tmp_path),), "is not a run directory")]:  # fmt: skip
        done = view(*argv)
        assert done.returncode == 2 and expected in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
