"""The env's CLI wiring (``env serve``, ``bench env``) and a small real benchmark run."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from env.bench import run_bench
from env.commands import register, register_bench, register_env_group, register_serve
from env.server import ServerSettings, settings_from_args
from tests.env.env_support import REPO_ROOT


def build() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlfarm")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    bench = sub.add_parser("bench").add_subparsers(dest="bench_command", required=True)
    register_bench(bench)
    return parser


def test_env_group_is_shared_and_serve_defaults_match_the_settings() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    group = register_env_group(sub)
    register_serve(group)
    assert register_env_group(sub) is group  # another package can add to the same group
    args = build().parse_args(["env", "serve"])
    assert settings_from_args(args) == ServerSettings()
    custom = build().parse_args(["env", "serve", "--port", "9000", "--max-sessions", "512"])
    assert settings_from_args(custom).port == 9000
    assert settings_from_args(custom).max_sessions == 512


def test_cli_module_stays_light() -> None:
    """Building the parser must not import the server or sandbox stacks (fast --help)."""
    script = (
        "import argparse, sys\n"
        "from env.commands import register, register_bench\n"
        "sub = argparse.ArgumentParser().add_subparsers()\n"
        "register(sub); register_bench(sub.add_parser('bench').add_subparsers())\n"
        "print([m for m in ('fastapi', 'moto', 'awscli', 'uvicorn', 'botocore') "
        "if m in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"


def test_bench_env_reports_the_required_numbers() -> None:
    args = build().parse_args(["bench", "env", "--json", "--steps", "20"])
    assert args.json and args.steps == 20
    result = run_bench(
        steps=20,
        subprocess_runs=1,
        duration_s=1.0,
        envs_per_worker=2,
        memory_episodes=5,
        prewarm=False,
        rounds=1,
    )
    for key in (
        "step_latency_ms_p50",
        "subprocess_latency_ms_p50",
        "speedup_vs_subprocess",
        "scaling_2_workers",
        "throughput_steps_per_s_1_worker",
        "throughput_steps_per_s_2_workers",
    ):
        assert result[key] > 0, key
    assert result["steps_measured"] == 20
    assert result["subprocess_runs"] == len(result["command_mix"])
