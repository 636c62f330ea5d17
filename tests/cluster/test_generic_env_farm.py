"""The farm on a second environment, different in kind from the AWS one (``tests.envs.word_env``),
through the same code path: once in-process by entry point (``env.backend: python``), once by URL
on an OpenEnv-wire server (``env.backend: openenv``). Each run trains two updates from the cold
tiny model (the env's continuous reward gives its groups a learning signal), evaluates held-out
tasks per tier of that env, and balances its ledger."""

from __future__ import annotations

import asyncio
import html
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from cluster.base.config import load_config
from cluster.farm.episode_log import read_episodes
from cluster.farm.eval_curve import EvalCurve
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
    from cluster.commands.train import run

    config = load_config(
        CONFIG, [f"run.out_dir={tmp_path}", f"run.name={name}", *SMALL, *env_overrides]
    )
    return asyncio.run(run(config, str(tiny_model_path)))


def _check(summary: dict, run_dir: Path, held_out_evals: int = 2) -> None:
    assert summary["stopped"]["kind"] == "completed", summary["stopped"]
    assert summary["updates"] == 2
    assert summary["ledger_balanced"] is True
    # Held-out evaluation per tier of this env (not the AWS tiers), before and after: one view,
    # new_tasks (a generic env has no renamed copies), with per-task success and the paired change.
    for when in ("before", "after"):
        assert list(summary[when]) == ["new_tasks"], summary[when]
        tiers = summary[when]["new_tasks"]["by_tier"]
        assert {"short", "long", "all"} <= set(tiers), tiers
        assert tiers["all"]["episodes"] == 2 and tiers["all"]["tasks"] == 2  # one per tier
        assert len(summary[when]["new_tasks"]["by_task"]) == 2
    assert summary["heldout_tasks"] == {"new_tasks": 2}
    assert summary["change"]["new_tasks"]["strata"] == 2
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
    held_out = [e for e in by_fate["eval"] if e["reason"].startswith("held-out new_tasks eval")]
    assert len(held_out) == 2 * held_out_evals  # two held-out tasks each time
    turn = by_fate["trained"][0]["turns"][0]
    assert "the word is" in turn["observation"] or turn["observation"] == "Correct."
    assert isinstance(turn["reply"], str) and 0.0 <= turn["reward"] <= 1.0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in rows] == [1, 2]


@pytest.fixture(scope="module")
def python_env_run(ray_runtime, tiny_model_path, tmp_path_factory) -> dict:
    env = ["env.backend=python", "env.factory=tests.envs.word_env:WordEnv", "train.eval_every=1"]
    return _run(tmp_path_factory.mktemp("runs"), "word-python", env, tiny_model_path)


def test_farm_trains_on_a_python_env_named_by_entry_point(python_env_run):
    run_dir = Path(python_env_run["run_dir"])
    _check(python_env_run, run_dir, held_out_evals=3)  # before, at update 1, after
    # The periodic eval (train.eval_every=1): at the start, after each update, at the end; the
    # held-out tasks and the same training tasks each time, by this env's tiers.
    rows = EvalCurve(run_dir).rows()
    assert [(r["update"], r["version"]) for r in rows] == [(0, 0), (1, 1), (2, 2)]
    train_tasks = {e["task_id"] for e in read_episodes(run_dir / "episodes")
                   if e["reason"].startswith("training-task eval")}  # fmt: skip
    assert len(train_tasks) == 4  # two per tier, the same ones at every eval
    for row in rows:
        held = row["new_tasks"]
        assert {"short", "long", "all"} <= set(held) and held["all"]["episodes"] == 2
        assert {"short", "long", "all"} <= set(row["train"]) and row["train"]["all"][
            "episodes"
        ] == 4
    assert row["new_tasks"] == python_env_run["after"]["new_tasks"]["by_tier"]
    assert (run_dir / "eval_curve.png").stat().st_size > 10_000


def test_rlfarm_view_shows_the_run_in_a_real_browser(python_env_run, tmp_path):
    """The finished run in headless chromium: charts drawn from its metrics, the ledger, and
    one episode (named in the URL) rendered turn by turn; a screenshot is taken."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.fail("chromium is not installed: `make test` installs it (apt-get install chromium)")
    run_dir = Path(python_env_run["run_dir"])
    episode = next(e for e in read_episodes(run_dir / "episodes") if e["fate"] == "trained")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "cluster.commands.cli", "view", "--run", str(run_dir),
         "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/#episode={episode['group_id']}/{episode['episode']}"
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000"]
    try:
        wait_until_up(f"http://127.0.0.1:{port}/api/run", server)
        dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True,
                             timeout=120).stdout  # fmt: skip
        shot = tmp_path / "view.png"
        subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1400,2600", url],
                       capture_output=True, timeout=120)  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert 'data-loaded="yes"' in dom, dom[-2000:]
    assert dom.count('<svg class="chart" id="chart-') == 9
    held_out_curve = dom[dom.index('id="chart-eval-new_tasks"') :][:4000]
    assert 'data-points="9"' in held_out_curve  # two tiers and all, at updates 0, 1, 2
    reward_chart = dom[dom.index('id="chart-reward"') :][:4000]
    assert 'class="series"' in reward_chart and "short" in reward_chart + dom
    assert 'id="status" class="badge">finished<' in dom
    assert f'<td class="fate-trained">{python_env_run["ledger"]["trained"]}</td>' in dom
    shown = dom[dom.index('id="episode"') :]
    assert html.escape(episode["turns"][0]["reply"], quote=False) in shown
    assert html.escape(episode["turns"][0]["observation"], quote=False) in shown
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def wait_until_up(url: str, process: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.3)
    pytest.fail(f"rlfarm view did not answer at {url}")


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


def test_sigterm_during_the_first_eval_stops_the_run_with_its_summary(
    ray_runtime, tiny_model_path, tmp_path, monkeypatch
):
    # Start-up and the held-out eval before training can take minutes on a real model; SIGTERM
    # then (an operator's Ctrl-C, `ray job stop`) must stop the run as it does in the loop: a
    # summary saying why, the ledger balanced, nothing trained. It once did nothing at all.
    import os
    import signal

    from cluster.farm.driver import Farm

    real_eval = Farm.evaluate_heldout

    async def signalled_eval(self, version):
        os.kill(os.getpid(), signal.SIGTERM)  # handled by the run's loop, mid-eval
        return await real_eval(self, version)

    monkeypatch.setattr(Farm, "evaluate_heldout", signalled_eval)
    env = ["env.backend=python", "env.factory=tests.envs.word_env:WordEnv"]
    summary = _run(tmp_path, "word-sigterm", env, tiny_model_path)
    assert summary["stopped"]["kind"] == "signal", summary["stopped"]
    assert "SIGTERM" in summary["stopped"]["message"]
    assert summary["updates"] == 0 and summary["before"] is None
    assert summary["ledger_balanced"] is True
    written = json.loads((Path(summary["run_dir"]) / "summary.json").read_text())
    assert written["stopped"] == summary["stopped"]
