"""``rlfarm bench env``: env step latency, against a subprocess ``aws`` baseline, and scaling.

Everything is measured side by side in one run, on the same fixed command mix:

1. step latency: ``AwsEnv.step`` on a one-worker pool, one command at a time (policy
   check, in-process awscli on moto, grading, reward, and the pipe to the worker);
2. subprocess baseline: the same commands run as real ``aws`` processes (the venv's
   ``aws``) against a moto server on 127.0.0.1 (``ThreadedMotoServer``), the way an
   env that shells out would run them;
3. throughput: steps per second with 1 and with 2 worker processes, each kept busy
   by several concurrent episodes, in alternating rounds (best round of each);
   ``scaling_2_workers`` is their ratio.

Also reported: each worker's resident memory before and after hosting many open
episodes, to size servers (``worker_rss_mb_per_episode``).

The JSON (``--json``) has at least ``step_latency_ms_p50``, ``subprocess_latency_ms_p50``,
``speedup_vs_subprocess`` and ``scaling_2_workers``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from cluster.farm.metrics import percentile
from env.catalog import Catalog
from env.environment import AwsEnv
from env.reward import RewardConfig
from env.sandbox_pool import SandboxPool
from env.task_spec import Task

BUCKET = "bench-bucket"
COMMAND_MIX: tuple[str, ...] = (
    "aws s3api list-buckets",
    "aws s3 ls",
    f"aws s3api head-bucket --bucket {BUCKET}",
    f"aws s3api put-object --bucket {BUCKET} --key reports/latest.csv",
    f"aws s3api list-objects-v2 --bucket {BUCKET}",
    "aws sqs list-queues",
    "aws sns list-topics",
    "aws dynamodb list-tables",
    "aws iam list-roles",
    "aws sts get-caller-identity",
)
MAX_STEPS = 10


def bench_task() -> Task:
    """A task whose check never passes, so episodes run their full length."""
    return Task.model_validate(
        {
            "id": "bench-never-done",
            "tier": "beginner",
            "description": "Benchmark episode: run the command mix.",
            "setup": [f"aws s3api create-bucket --bucket {BUCKET}"],
            "solution": ["aws s3api create-bucket --bucket bench-finish"],
            "checks": [
                {
                    "name": "finish bucket",
                    "call": {
                        "service": "s3",
                        "operation": "HeadBucket",
                        "params": {"Bucket": "bench-finish"},
                    },
                }
            ],
            "hints": ["S3", "CreateBucket", "aws s3api create-bucket --bucket bench-finish"],
        }
    )


class _Driver:
    """Steps one env through the command mix forever, resetting when an episode ends."""

    def __init__(self, env: AwsEnv, offset: int) -> None:
        self.env, self.i, self.seed = env, offset, offset
        env.reset("bench-never-done", seed=self.seed)

    def step(self) -> float:
        started = time.perf_counter()
        obs = self.env.step(COMMAND_MIX[self.i % len(COMMAND_MIX)])
        elapsed = time.perf_counter() - started
        if not obs.command_success:
            raise RuntimeError(f"bench command failed: {obs.error}")
        self.i += 1
        if obs.done:
            self.seed += 1000
            self.env.reset("bench-never-done", seed=self.seed)
        return elapsed


def measure_step_latency(catalog: Catalog, steps: int, prewarm: bool = True) -> dict[str, float]:
    with (
        SandboxPool(processes=1, prewarm=prewarm) as pool,
        AwsEnv(catalog, pool=pool, max_steps=MAX_STEPS) as env,
    ):
        driver = _Driver(env, 0)
        for _ in range(2 * len(COMMAND_MIX)):  # warm-up: first use of each command
            driver.step()
        times = [driver.step() * 1000.0 for _ in range(steps)]
    return {
        "step_latency_ms_p50": percentile(times, 0.5),
        "step_latency_ms_p95": percentile(times, 0.95),
        "step_latency_ms_mean": statistics.fmean(times),
        "steps_measured": len(times),
    }


def measure_subprocess(runs_per_command: int) -> dict[str, float]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log on our stdout
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        aws = str(Path(sys.executable).with_name("aws"))
        with tempfile.TemporaryDirectory() as home:
            env = {
                "PATH": os.environ.get("PATH", ""),
                "HOME": home,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_CONFIG_FILE": os.path.join(home, "config"),
                "AWS_SHARED_CREDENTIALS_FILE": os.path.join(home, "credentials"),
            }

            def run(command: str) -> float:
                argv = [aws, *command.split()[1:], "--endpoint-url", endpoint]
                started = time.perf_counter()
                subprocess.run(argv, env=env, capture_output=True, check=True, timeout=120)
                return time.perf_counter() - started

            run(f"aws s3api create-bucket --bucket {BUCKET}")
            times = [
                run(command) * 1000.0 for _ in range(runs_per_command) for command in COMMAND_MIX
            ]
    finally:
        server.stop()
    return {
        "subprocess_latency_ms_p50": percentile(times, 0.5),
        "subprocess_latency_ms_p95": percentile(times, 0.95),
        "subprocess_runs": len(times),
    }


class _Fleet:
    """``workers`` processes, each kept busy by ``envs_per_worker`` concurrent episodes."""

    def __init__(self, catalog: Catalog, workers: int, envs_per_worker: int, prewarm: bool):
        self.sandboxes = SandboxPool(processes=workers, prewarm=prewarm).start()
        self.envs = [
            AwsEnv(catalog, pool=self.sandboxes, max_steps=MAX_STEPS)
            for _ in range(workers * envs_per_worker)
        ]
        self.drivers = [_Driver(env, i) for i, env in enumerate(self.envs)]
        for d in self.drivers:  # warm-up
            for _ in range(len(COMMAND_MIX)):
                d.step()

    def steps_per_second(self, duration_s: float) -> float:
        counts = [0] * len(self.drivers)
        stop = threading.Event()

        def loop(index: int) -> None:
            while not stop.is_set():
                self.drivers[index].step()
                counts[index] += 1

        threads = [threading.Thread(target=loop, args=(i,)) for i in range(len(self.drivers))]
        started = time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(duration_s)
        stop.set()
        for t in threads:
            t.join()
        return sum(counts) / (time.perf_counter() - started)

    def close(self) -> None:
        for env in self.envs:
            env.close()
        self.sandboxes.close()


def measure_scaling(
    catalog: Catalog, envs_per_worker: int, duration_s: float, rounds: int, prewarm: bool = True
) -> dict[str, float]:
    """Throughput with 1 and 2 workers, measured in alternating rounds, every round kept.

    Each round measures both back to back, so its ratio is paired against what else the machine
    was doing then; the reported rates and ratio are the medians over rounds (with the range).
    """
    one = _Fleet(catalog, 1, envs_per_worker, prewarm)
    two = _Fleet(catalog, 2, envs_per_worker, prewarm)
    measured: list[tuple[float, float]] = []
    try:
        for _ in range(rounds):
            measured.append((one.steps_per_second(duration_s), two.steps_per_second(duration_s)))
    finally:
        one.close()
        two.close()
    ratios = [b / a for a, b in measured]
    return {
        "throughput_steps_per_s_1_worker": statistics.median(a for a, _ in measured),
        "throughput_steps_per_s_2_workers": statistics.median(b for _, b in measured),
        "scaling_2_workers": statistics.median(ratios),
        "scaling_2_workers_range": [min(ratios), max(ratios)],
        "scaling_rounds": [[round(a, 2), round(b, 2)] for a, b in measured],
    }


def measure_memory(catalog: Catalog, episodes: int, prewarm: bool = True) -> dict[str, float]:
    """Worker RSS with no episodes, then with ``episodes`` open ones (Linux /proc)."""
    with SandboxPool(processes=1, prewarm=prewarm) as pool:
        pid = pool.process_pid(0)
        idle = _rss_mb(pid)
        envs = [AwsEnv(catalog, pool=pool, max_steps=MAX_STEPS) for _ in range(episodes)]
        for i, env in enumerate(envs):
            _Driver(env, i).step()
        loaded = _rss_mb(pid)
        for env in envs:
            env.close()
    return {
        "worker_rss_mb_idle": idle,
        "worker_rss_mb_loaded": loaded,
        "worker_rss_mb_per_episode": (loaded - idle) / episodes,
        "memory_episodes": episodes,
    }


def _rss_mb(pid: int | None) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def run_bench(
    steps: int = 300,
    subprocess_runs: int = 3,
    duration_s: float = 5.0,
    envs_per_worker: int = 4,
    memory_episodes: int = 100,
    prewarm: bool = True,
    rounds: int = 3,
) -> dict[str, Any]:
    """All measurements; ``prewarm=False`` only to make smoke tests quicker."""
    catalog = Catalog([bench_task()])
    RewardConfig().check_finishing_dominates(MAX_STEPS, 3)
    result: dict[str, Any] = {
        "command_mix": list(COMMAND_MIX),
        "cpu_count": os.cpu_count(),
    }
    result.update(measure_step_latency(catalog, steps, prewarm))
    result.update(measure_subprocess(subprocess_runs))
    result["speedup_vs_subprocess"] = (
        result["subprocess_latency_ms_p50"] / result["step_latency_ms_p50"]
    )
    result.update(measure_scaling(catalog, envs_per_worker, duration_s, rounds, prewarm))
    result.update(measure_memory(catalog, memory_episodes, prewarm))
    return result


def main(args: argparse.Namespace) -> int:
    """``rlfarm bench env``."""
    result = run_bench(
        steps=args.steps,
        subprocess_runs=args.subprocess_runs,
        duration_s=args.duration,
        envs_per_worker=args.envs_per_process,
        memory_episodes=args.memory_episodes,
        rounds=args.rounds,
    )
    from benchmarks.records import record

    record("env", result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            if key != "command_mix":
                shown = f"{value:.2f}" if isinstance(value, float) else value
                print(f"{key:36} {shown}")
    return 0
