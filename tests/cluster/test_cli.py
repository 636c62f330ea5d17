"""The ``rlfarm`` command line: one parser for every command, light to build, run as users do."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cluster.commands.cli import build_parser, main
from env.server_settings import ServerSettings, settings_from_args
from tests.learner.sft_data import write_split

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "trl", "peft", "vllm", "ray", "fastapi", "uvicorn", "moto",
         "awscli", "botocore")  # fmt: skip


def test_building_the_parser_imports_nothing_heavy():
    """``rlfarm --help`` (and every mistyped flag) must answer at once."""
    code = (
        "import sys; from cluster.commands.cli import build_parser; build_parser(); "
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_every_command_group_is_registered_once():
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    expected = {"train", "scale", "eval", "model", "serve", "sft", "tasks", "env", "bench"}
    assert expected <= set(commands)
    bench = next(a for a in commands["bench"]._actions if a.dest == "bench_command").choices
    assert {"rollout", "chaos", "hotswap", "learner", "env"} <= set(bench)


def test_env_serve_defaults_match_the_server_settings():
    args = build_parser().parse_args(["env", "serve"])
    assert settings_from_args(args) == ServerSettings()
    custom = build_parser().parse_args(
        ["env", "serve", "--port", "9000", "--max-sessions", "512", "--sandbox-processes", "3"]
    )
    settings = settings_from_args(custom)
    assert (settings.port, settings.max_sessions, settings.sandbox_processes) == (9000, 512, 3)


def test_sft_command_runs_and_reports_json(tiny_model_path, tmp_path, capsys):
    train, _ = write_split(tmp_path)
    code = main(
        ["sft", "--data", str(train), "--out", str(tmp_path / "out"), "--model",
         str(tiny_model_path), "--max-steps", "2", "--batch-size", "4", "--json"]
    )  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["mode"] == "full" and result["steps"] == 2
    assert (tmp_path / "out" / "config.json").exists()


def test_bench_learner_json_prints_the_headline_numbers(tiny_model_path, capsys):
    code = main(
        ["bench", "learner", "--json", "--model", str(tiny_model_path), "--updates", "2",
         "--groups", "2", "--group-size", "4", "--prompt-tokens", "24",
         "--completion-tokens", "8", "--device", "cpu"]
    )  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("tokens_per_s", "update_s_p50", "publish_s_p50"):
        assert result[key] > 0, key
    assert result["updates"] == 2
    assert result["trained_tokens_per_update"] == 2 * 4 * 8


def test_a_persons_mistake_is_one_sentence_not_a_traceback(tmp_path):
    """Common mistakes exit with status 2 and say what was wrong, naming the command."""
    cases = [
        (["serve", "--adapter", str(tmp_path / "missing")], "no adapter_config.json"),
        (["train", "--config", str(tmp_path / "none.yaml")], "does not exist"),
        (["train", "--config", "configs/local.yaml", "--set", "train.updatez=3"], "train.updatez"),
        (["tasks", "list", "--catalog", str(tmp_path / "none.yaml")], "none.yaml"),
    ]
    for argv, expected in cases:
        done = subprocess.run([sys.executable, "-m", "cluster.commands.cli", *argv], cwd=REPO,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 2, (argv, done.stderr)
        assert expected in done.stderr and f"rlfarm {argv[0]}" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr, done.stderr
