"""``rlfarm bench env``: a small real run reports every headline number."""

from __future__ import annotations

from benchmarks.env_step import run_bench
from cluster.commands.cli import build_parser


def test_bench_env_reports_the_required_numbers() -> None:
    args = build_parser().parse_args(["bench", "env", "--json", "--steps", "20"])
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
