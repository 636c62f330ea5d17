"""`rlfarm eval` metric definitions, the live eval against real moto sandboxes, and the report.

Dataset scoring is checked on hand-written replies. The live eval's policy is the hand-written
``ScriptedEngine`` fake (tests/rollout/test_group.py): fixed replies as token ids, played through
the real rollout loop against real sandboxes, so per-tier completion, steps, hint use and format
failures have known right answers. The real engine's part is in test_evaluate_engine.py.
"""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from PIL import Image
from transformers import AutoTokenizer

from cluster.evaluation.command import compare_pairs
from cluster.evaluation.live import evaluate_live
from cluster.evaluation.policies import EnginePolicy, chat_url
from cluster.evaluation.report import write_report
from cluster.evaluation.scoring import (
    EpisodeRecord,
    RowResult,
    dataset_summary,
    live_result,
    live_summary,
    per_task,
    score_reply,
    task_counts,
    wilson_interval,
)
from rollout.env_contract import EnvTask
from rollout.episode_loop import EpisodeLimits
from tests.rollout.test_group import ScriptedEngine

RIGHT = "aws s3api list-buckets"
WARMUP = EnvTask("s3-list-buckets", "warmup")
BEGINNER = EnvTask("s3-create-bucket", "beginner")
LIMITS = EpisodeLimits(max_steps=3, max_model_len=2048, max_new_tokens=32).greedy()


# ---- dataset scoring ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        # reply                                         fmt    xtr    exact  svc    op
        ("aws s3api create-bucket --bucket logs", (True, True, True, True, True)),
        ("```bash\naws s3api create-bucket --bucket logs\n```", (False, True, True, True, True)),
        ("Sure! Run `aws s3api create-bucket --bucket logs`", (False, True, True, True, True)),
        ("$ aws s3api create-bucket --bucket 'logs'", (False, True, True, True, True)),
        ("aws s3api create-bucket --bucket other", (True, True, False, True, True)),
        ("aws s3api list-buckets", (True, True, False, True, False)),
        ("aws s3 mb s3://logs", (True, True, False, False, False)),
        ("I would create a bucket.", (False, False, False, False, False)),
        ("", (False, False, False, False, False)),
    ],
)
def test_score_reply_metric_definitions(reply, expected):
    score = score_reply(reply, "aws s3api create-bucket --bucket logs")
    assert (score.fmt, score.xtr, score.exact, score.svc, score.op) == expected


def test_exact_match_ignores_quoting_the_cli_would_not_see():
    reference = """aws sqs create-queue --queue-name q --attributes '{"DelaySeconds":"5"}'"""
    reply = """aws sqs create-queue --queue-name q --attributes "{\\"DelaySeconds\\":\\"5\\"}\""""
    assert score_reply(reply, reference).exact
    assert not score_reply(reply.replace("5", "6"), reference).exact


def _row(tier: str, reply: str, latency: float, error: str = "") -> RowResult:
    score = score_reply(reply, "aws s3 ls")
    return RowResult("t", tier, "first_step", reply, "aws s3 ls", score, latency, error)


def test_dataset_summary_per_tier_and_overall():
    rows = [
        _row("warmup", "aws s3 ls", 0.1),
        _row("warmup", "```\naws s3 ls\n```", 0.3),
        _row("beginner", "no idea", 0.2),
        _row("beginner", "", 9.0, error="ConnectError: refused"),
    ]
    summary = dataset_summary(rows)
    assert list(summary) == ["warmup", "beginner", "all"]
    assert summary["warmup"] | {"latency_s": None} == {
        "n": 2, "errors": 0, "fmt": 0.5, "xtr": 1.0, "exact": 1.0, "svc": 1.0, "op": 1.0,
        "latency_s": None, "reply_chars": (9 + 17) / 2,
    }  # fmt: skip
    assert summary["warmup"]["latency_s"] == pytest.approx(0.2)
    # A failed request scores nothing but is counted, and its time is not a reply latency.
    assert summary["beginner"]["errors"] == 1 and summary["beginner"]["xtr"] == 0.0
    assert summary["beginner"]["latency_s"] == pytest.approx(0.2)
    assert summary["all"]["n"] == 4 and summary["all"]["exact"] == 0.5


def test_live_summary_definitions():
    episodes = [
        EpisodeRecord("a", "warmup", 0, 1.0, True, 2, 1.0, 1, 1),
        EpisodeRecord("b", "warmup", 0, 0.2, False, 4, 0.5, 0, 0),
        EpisodeRecord("c", "warmup", 0, 0.0, False, 0, 0.0, 0, 0, error="env reset failed"),
    ]
    s = live_summary(episodes)["warmup"]
    assert s.pop("reward_se") == pytest.approx(0.4)  # stdev(1.0, 0.2) / sqrt(2)
    assert s.pop("completion_ci95") == list(wilson_interval(1, 2))
    assert s == {
        "tasks": 2, "episodes": 2, "failed": 1, "reward": 0.6, "completion_rate": 0.5,
        "steps_to_complete": 2.0, "max_progress": 0.75, "hint_rate": 0.5,
        "format_failure_rate": 1 / 6,
    }  # fmt: skip


def test_per_task_success_counts_each_task_once_with_its_interval():
    episodes = [
        EpisodeRecord("a", "warmup", 0, 1.0, True, 1, 1.0, 0, 0),
        EpisodeRecord("a", "warmup", 1, 0.0, False, 5, 0.2, 0, 0),
        EpisodeRecord("a", "warmup", 2, 1.0, True, 2, 1.0, 0, 0),
        EpisodeRecord("b", "beginner", 0, 0.0, False, 5, 0.0, 0, 0),
        EpisodeRecord("b", "beginner", 1, 0.0, False, 0, 0.0, 0, 0, error="env down"),
    ]
    rows = per_task(episodes)
    assert rows["a"] == {"tier": "warmup", "episodes": 3, "successes": 2, "reward_sum": 2.0,
                         "rate": 2 / 3, "ci95": list(wilson_interval(2, 3))}  # fmt: skip
    # An env failure is not an episode of the policy.
    assert rows["b"]["episodes"] == 1 and rows["b"]["successes"] == 0
    assert task_counts(rows, "seed1/") == {"seed1/a": (2, 3), "seed1/b": (0, 1)}
    assert task_counts(rows, metric="reward_sum") == {"a": (2.0, 3), "b": (0.0, 1)}
    assert live_summary(episodes)["all"]["tasks"] == 2


def test_compare_pairs_gives_every_pair_per_view_by_task():
    def result(successes: list[int]) -> dict:
        records = [
            EpisodeRecord(f"t{i}", "beginner", s, 0.0, s < k, 1, 0.0, 0, 0)
            for i, k in enumerate(successes)
            for s in range(4)
        ]
        return {"new_names": live_result(records)}

    targets = {
        "base": {"live": result([0] * 8)},
        "sft": {"live": result([1, 1, 2, 0, 1, 2, 1, 0])},
        "grpo": {"live": result([3, 4, 3, 2, 4, 3, 4, 2])},
    }
    pairs = {(c["a"], c["b"]): c for c in compare_pairs(targets)}
    assert set(pairs) == {("base", "sft"), ("base", "grpo"), ("sft", "grpo")}
    better = pairs[("sft", "grpo")]
    assert better["view"] == "new_names" and better["strata"] == 8
    assert better["difference"] == pytest.approx((25 - 8) / 32)
    # GRPO beats SFT on all 8 tasks: the exact sign-flip p-value is 2 / 2^8.
    assert better["p_value"] == pytest.approx(2 / 256)
    assert better["ci95"][0] > 0 and better["b_better"] == 8


def test_wilson_interval_matches_published_values():
    # Wilson 95% intervals as tabulated by Newcombe (1998): 0/10 and 5/10 successes.
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 0) is None


def test_chat_url_accepts_root_or_v1_base():
    assert chat_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000/v1/chat/completions"
    assert chat_url("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000/v1/chat/completions"


# ---- live eval: the real rollout loop and real sandboxes, a scripted policy -------------------


@pytest.fixture(scope="module")
def tokenizer(tiny_model_path):
    return AutoTokenizer.from_pretrained(tiny_model_path)


@pytest.fixture(scope="module")
def new_env():
    from rollout.aws_backend import AwsSessions
    from rollout.config import EnvSettings

    with AwsSessions(EnvSettings(), LIMITS.max_steps, threads=8) as sessions:
        yield sessions.new


def _live(tokenizer, new_env, script: list[str], tasks, episodes: int = 1) -> dict:
    policy = EnginePolicy("scripted", ScriptedEngine(tokenizer, script), tokenizer)

    async def play(task, seed, episodes):
        return await policy.play(task.id, task.tier, seed, episodes, new_env, LIMITS, 30.0)

    records = asyncio.run(evaluate_live(play, tasks, episodes=episodes))
    assert len(records) == len(tasks) * episodes and not any(r.error for r in records)
    return live_result(records)


@pytest.fixture(scope="module")
def right_script(tokenizer, new_env):
    return _live(tokenizer, new_env, [RIGHT], [WARMUP, BEGINNER], episodes=2)


def test_live_eval_right_script_completes_its_tier_only(right_script):
    tiers = right_script["by_tier"]
    warm, beginner = tiers["warmup"], tiers["beginner"]
    assert warm["episodes"] == 2 and warm["completion_rate"] == 1.0
    assert warm["steps_to_complete"] == 1.0 and warm["max_progress"] == 1.0
    assert warm["reward"] > 0 and warm["hint_rate"] == 0.0 and warm["format_failure_rate"] == 0.0
    # The same command does not create a bucket: the beginner task is never completed.
    assert beginner["completion_rate"] == 0.0 and beginner["steps_to_complete"] is None
    assert beginner["reward"] < warm["reward"]
    assert tiers["all"]["episodes"] == 4 and tiers["all"]["completion_rate"] == 0.5
    assert right_script["by_task"]["s3-list-buckets"]["successes"] == 2


def test_live_eval_counts_hint_use(tokenizer, new_env):
    s = _live(tokenizer, new_env, ["aws help --task-hint", RIGHT], [WARMUP])["by_tier"]["warmup"]
    assert s["hint_rate"] == 1.0 and s["completion_rate"] == 1.0
    assert s["steps_to_complete"] == 2.0 and s["format_failure_rate"] == 0.0


def test_live_eval_counts_format_failures_per_turn(tokenizer, new_env):
    fenced = _live(tokenizer, new_env, [f"Sure:\n```\n{RIGHT}\n```"], [WARMUP])["by_tier"]["warmup"]
    # The command is still extracted and solves the task, but the turn fails the format gate.
    assert fenced["completion_rate"] == 1.0 and fenced["format_failure_rate"] == 1.0
    prose = _live(tokenizer, new_env, ["I am not sure.", RIGHT], [WARMUP])["by_tier"]["warmup"]
    assert prose["completion_rate"] == 1.0 and prose["steps_to_complete"] == 2.0
    assert prose["format_failure_rate"] == 0.5


# ---- report ------------------------------------------------------------------------------------


def test_report_tables_charts_and_results(right_script, tmp_path):
    data = dataset_summary([_row("warmup", "aws s3 ls", 0.1), _row("beginner", "nope", 0.1)])
    live = {"new_tasks": right_script}
    targets = {
        "sft": {"describe": "model m", "dataset": data, "live": live},
        "grpo": {"describe": "model m + adapter a", "dataset": data, "live": live},
    }
    unseen = {"s3-create-bucket": ["s3api create-bucket"]}
    spec = {"temperature": 1.0, "episodes_per_task": 2, "views": {"new_tasks": {
        "tasks": 2, "episodes": 4, "unseen_operations": unseen,
    }}}  # fmt: skip
    results = {"eval": spec, "targets": targets, "comparisons": compare_pairs(targets)}
    report = write_report(results, tmp_path)
    text = report.read_text()
    assert "## Dataset eval" in text and "## Live eval: new_tasks" in text
    assert "2 episode(s) per task, sampled at temperature 1" in text
    assert "- `s3-create-bucket`: s3api create-bucket" in text
    assert "| target | n | errs | fmt% | +xtr% | exact% | svc% | op% | lat (s) | len |" in text
    assert "### new_tasks: grpo by tier" in text and "| warmup | 1 | 2 | 0 |" in text
    # No completed beginner episode: no steps to complete, shown as a dash.
    # Columns: tasks, episodes, env failed, reward, its standard error, completion, its 95% CI,
    # steps.
    assert re.search(
        r"\| beginner \| 1 \| 2 \| 0 \| -?\d+\.\d\d \| \d+\.\d\d \| 0% \| 0-66% \| – \|", text
    )
    # Per-task success and the paired comparison of the two (identical) targets.
    assert "| s3-list-buckets | warmup | 2/2 (34-100%) | 2/2 (34-100%) |" in text
    assert "| new_tasks | sft | grpo | 2 | 50.0% | 50.0% | +0.0 |" in text
    assert json.loads((tmp_path / "results.json").read_text()) == results
    for name in ("dataset.png", "live_new_tasks_completion_rate.png", "live_new_tasks_reward.png"):
        assert f"]({name})" in text
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100
