"""The farm on a second environment, different in kind from the AWS one (``tests.envs.word_env``),
through the same code path: once in-process by entry point (``env.backend: python``), once by URL
on an OpenEnv-wire server (``env.backend: openenv``). Each run trains two updates from the cold
tiny model (the env's continuous reward gives its groups a learning signal), evaluates held-out
tasks per tier of that env, and balances its ledger."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from cluster.config import load_config
from cluster.farm.episode_log import read_episodes
from cluster.farm.ledger import read_ledger
from tests.conftest import free_port
from tests.envs.openenv_server import serve
from tests.envs.word_env import WordEnv

pytestmark = pytest.mark.vllm

CONFIG = Path(__file__).parents[2] / "configs" / "local.yaml"
SMALL = [
    "run.warm_start=false",
    "run.eval_episodes=1",
    "run.watchdog_s=300",
    "train.updates=2",
    "train.groups_per_update=2",
    "train.max_staleness=1",
    "rollout.group_size=4",
    "rollout.max_steps=2",
    "rollout.max_new_tokens=8",
    "env.workers=1",
    "env.groups_per_worker=2",
    "curriculum.tiers=null",  # the env's own tiers, easiest first
    "curriculum.start_tier=null",
]


def _run(tmp_path: Path, name: str, env_overrides: list[str], tiny_model_path) -> dict:
    from cluster.main import run

    config = load_config(
        CONFIG, [f"run.out_dir={tmp_path}", f"run.name={name}", *SMALL, *env_overrides]
    )
    return asyncio.run(run(config, str(tiny_model_path)))


def _check(summary: dict, run_dir: Path) -> None:
    assert summary["stopped"]["kind"] == "completed", summary["stopped"]
    assert summary["updates"] == 2
    assert summary["ledger_balanced"] is True
    # Held-out evaluation per tier of this env (not the AWS tiers), before and after.
    for when in ("before", "after"):
        assert {"short", "long", "all"} <= set(summary[when]), summary[when]
        assert summary[when]["all"]["episodes"] == 2  # one held-out task per tier, one seed
    trained = [e for e in read_ledger(run_dir / "ledger.jsonl") if e.get("fate") == "trained"]
    assert len({e["group_id"] for e in trained}) == 2 * 2  # groups_per_update x updates
    assert {e["task_id"] for e in trained} <= set(WordEnv.tasks)
    # Every trained episode is on disk turn by turn, with the env's answers; so are the evals.
    logged = list(read_episodes(run_dir / "episodes"))
    by_fate = {f: [e for e in logged if e["fate"] == f] for f in ("trained", "eval")}
    assert len(by_fate["trained"]) == len(trained)
    assert {(e["group_id"], e["episode"]) for e in by_fate["trained"]} == {
        (e["group_id"], e["episode"]) for e in trained
    }
    assert len(by_fate["eval"]) == 4  # before and after, two held-out tasks
    turn = by_fate["trained"][0]["turns"][0]
    assert "the word is" in turn["observation"] or turn["observation"] == "Correct."
    assert isinstance(turn["reply"], str) and 0.0 <= turn["reward"] <= 1.0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in rows] == [1, 2]


def test_farm_trains_on_a_python_env_named_by_entry_point(ray_runtime, tiny_model_path, tmp_path):
    env = ["env.backend=python", "env.factory=tests.envs.word_env:WordEnv"]
    summary = _run(tmp_path, "word-python", env, tiny_model_path)
    _check(summary, Path(summary["run_dir"]))


def test_farm_trains_on_an_openenv_server_by_url(ray_runtime, tiny_model_path, tmp_path):
    tasks = ", ".join(f"{{id: {t}, tier: {tier}}}" for t, tier in WordEnv.tasks.items())
    with serve(WordEnv, free_port()) as url:
        env = [
            "env.backend=openenv",
            f"env.url={url}",
            f"env.tasks=[{tasks}]",
            "env.openenv.observation_field=text",
            "env.openenv.success_field=success",
            "env.openenv.progress_field=progress",
            f"env.system_prompt={WordEnv.system_prompt}",
        ]
        summary = _run(tmp_path, "word-openenv", env, tiny_model_path)
    _check(summary, Path(summary["run_dir"]))
