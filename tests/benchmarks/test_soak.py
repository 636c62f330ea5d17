"""``rlfarm bench soak``'s instruments, on real processes: what it samples per part, how it
measures growth after warm-up, the config it runs, and when it passes. (The soak itself runs an
hour; its recorded result is in benchmarks/results/soak.jsonl.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from benchmarks import records
from benchmarks.soak import growth, passed, sample, soak_overrides
from cluster.base.config import load_config

REPO = Path(__file__).resolve().parents[2]


def test_sample_sums_memory_and_descriptors_per_part_of_a_real_process_tree():
    # A driver of its own (32 MiB), whose child's command line says it is a sandbox process,
    # holding 64 MiB and 20 files. Its own driver, not pytest: sandbox processes other tests
    # keep for the session would be counted too.
    sandbox = ("import sys, time; b = bytearray(64 << 20); fs = [open(sys.executable, 'rb') "
               "for _ in range(20)]; print('ready', flush=True); time.sleep(60)")  # fmt: skip
    driver_code = (
        "import subprocess, sys, time; b = bytearray(32 << 20); "
        f"c = subprocess.Popen([sys.executable, '-c', {sandbox!r}, 'env.sandbox_process'], "
        "stdout=subprocess.PIPE, text=True); print(c.stdout.readline().strip(), flush=True); "
        "time.sleep(60)"
    )
    driver = subprocess.Popen([sys.executable, "-c", driver_code], stdout=subprocess.PIPE,
                              text=True, start_new_session=True)  # fmt: skip
    try:
        assert driver.stdout.readline().strip() == "ready"
        parts = sample(driver.pid)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    assert parts["driver"]["processes"] == 1 and parts["driver"]["rss_mib"] > 32
    assert parts["sandboxes"]["processes"] == 1
    assert parts["sandboxes"]["rss_mib"] >= 64 and parts["sandboxes"]["fds"] >= 20
    assert set(parts) == {"driver", "sandboxes"}
    assert sample(2**22 + 12345) == {}  # a driver that is gone: nothing to sample


def test_growth_compares_the_window_after_warm_up_with_the_last():
    def at(t: float, engine: float, fds: int) -> dict:
        parts = {"engine": {"rss_mib": engine, "fds": fds, "processes": 1},
                 "driver": {"rss_mib": 100.0, "fds": 10, "processes": 1}}  # fmt: skip
        return {"t": t, "parts": parts}

    warm_up = [at(t, 500.0 + t, 50) for t in range(0, 600, 30)]  # growing while warming up
    steady = [at(t, 1100.0, 60) for t in range(600, 1800, 30)]
    late = [at(t, 1155.0, 60) for t in range(1800, 2100, 30)]
    grown = growth(warm_up + steady + late, warmup_s=600)
    assert grown["engine"]["rss_mib"] == [1100.0, 1155.0]
    assert grown["engine"]["rss_mib_growth"] == 0.05
    assert grown["driver"]["rss_mib_growth"] == 0.0
    assert grown["total"]["rss_mib"] == [1200.0, 1255.0]
    assert grown["total"]["fds_growth"] == 0.0
    assert growth(warm_up, warmup_s=600) == {}  # never past warm-up: no claim


def test_a_part_restarted_by_a_fault_does_not_read_as_growth():
    def at(t: float, workers: float) -> dict:
        return {"t": t, "parts": {"rollout_workers": {"rss_mib": workers, "fds": 100}}}

    samples = [at(t, 1120.0) for t in range(0, 3600, 30)]
    samples[21] = at(630, 860.0)  # one worker killed and replaced, 30 s after warm-up
    grown = growth(samples, warmup_s=600)
    assert grown["rollout_workers"]["rss_mib"] == [1120.0, 1120.0]
    assert grown["rollout_workers"]["rss_mib_growth"] == 0.0
    # a one-minute window is two samples: the dip halves into "before" and reads as +13%
    assert growth(samples, warmup_s=600, window_s=60)["rollout_workers"]["rss_mib_growth"] > 0.1


def test_the_soak_config_loads_and_cycles_every_fault_kind():
    config = load_config(
        REPO / "configs" / "local.yaml", soak_overrides(Path("/tmp/x"), "s", 60, 5)
    )
    kinds = [f.kind for f in config.run.faults]
    assert [f.at_update for f in config.run.faults[:3]] == [5, 10, 15]
    assert set(kinds[:5]) == {"kill_rollout_worker", "kill_sandbox", "hang_sandbox",
                              "kill_engine", "kill_learner"}  # fmt: skip
    assert config.engine.max_restarts >= 100 and config.run.max_learner_restarts >= 100


def test_passing_needs_every_fault_survived_a_clean_audit_and_bounded_growth():
    result = {"faults_not_survived": [], "updates": 100, "audit_defects": 0,
              "rss_growth_total": 0.03}  # fmt: skip
    assert passed(result)
    assert passed({**result, "faults_not_survived": ["kill_engine@100"]})  # still recovering
    assert not passed({**result, "faults_not_survived": ["kill_engine@50"]})
    assert not passed({**result, "audit_defects": 1})
    assert not passed({**result, "rss_growth_total": 0.12})
    assert not passed({**result, "rss_growth_total": None})


def test_a_recorded_run_names_its_command_commit_machine_and_date(tmp_path, monkeypatch):
    monkeypatch.setenv("RLFARM_RESULTS_DIR", str(tmp_path))
    records.record("soak", {"rounds": [1, 2]}, ["bench", "soak", "--minutes", "60"])
    records.record("soak", {"rounds": [3]}, ["bench", "soak", "--minutes", "61"])
    newest = records.latest("soak")
    assert newest["command"] == "rlfarm bench soak --minutes 61"
    assert newest["result"] == {"rounds": [3]}
    assert len(newest["commit"]) >= 12 and newest["date"].startswith("20")
    assert newest["machine"]["cores"] == os.cpu_count() and newest["machine"]["cpu"]
    lines = (tmp_path / "soak.jsonl").read_text().splitlines()
    assert [json.loads(line)["result"] for line in lines] == [{"rounds": [1, 2]}, {"rounds": [3]}]
