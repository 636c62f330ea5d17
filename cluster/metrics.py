"""What the farm reports: per-update metrics to JSONL, TensorBoard and Prometheus (through Ray's
metrics), a live progress line, a reward-curve PNG, and a watchdog that fails loudly on a stall.
"""

from __future__ import annotations

import faulthandler
import json
import sys
import threading
import time
from collections import defaultdict, deque
from dataclasses import asdict, is_dataclass
from pathlib import Path

from rollout.types import TrajectoryGroup


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Metrics:
    def __init__(self, run_dir: Path, config) -> None:
        self.run_dir = run_dir
        self.jsonl = (run_dir / "metrics.jsonl").open("a")
        self.events = (run_dir / "events.log").open("a")
        self.total_updates = config.train.updates
        self.last: dict = {}
        self.history: list[dict] = []
        self._window: dict[str, deque] = defaultdict(lambda: deque(maxlen=256))
        self._tier_reward: dict[str, deque] = defaultdict(lambda: deque(maxlen=64))
        self._tier_success: dict[str, deque] = defaultdict(lambda: deque(maxlen=64))
        self._since = time.perf_counter()
        self._counts = defaultdict(float)
        self._engine_busy_prev: float | None = None
        self._tty = sys.stdout.isatty()
        self._tb = _tensorboard(run_dir / "tb")
        self._gauges = _ray_gauges()

    def observe_group(self, group: TrajectoryGroup) -> None:
        for traj in group.trajectories:
            if traj.end == "failed":
                continue
            self._tier_reward[group.tier].append(traj.total_reward)
            self._tier_success[group.tier].append(float(traj.achieved))
            self._window["episode_len"].append(len(traj.turns))
            self._counts["tokens"] += traj.generated_tokens
            self._counts["env_steps"] += len(traj.turns)
            self._counts["episodes"] += 1
            self._counts["format_failures"] += traj.format_failures
            for turn in traj.turns:
                self._window["env_ms"].append(turn.env_s * 1000)
                self._window["gen_ms"].append(turn.generate_s * 1000)

    def log_update(
        self, state, learner, swap_s, health, queue_depth, workers, ledger, sampler
    ) -> None:
        now = time.perf_counter()
        elapsed = max(now - self._since, 1e-9)
        busy = sum(h["busy_s"] for h in health)
        idle = None
        if self._engine_busy_prev is not None:
            idle = max(0.0, 1.0 - (busy - self._engine_busy_prev) / (elapsed * len(health)))
        self._engine_busy_prev = busy
        row = {
            "update": state.updates,
            "version": state.version,
            "time_s": round(now - state.started, 3),
            "reward_by_tier": {t: _mean(v) for t, v in self._tier_reward.items()},
            "success_by_tier": {t: _mean(v) for t, v in self._tier_success.items()},
            "episode_len_mean": _mean(self._window["episode_len"]),
            "generated_tokens_per_s": self._counts["tokens"] / elapsed,
            "env_steps_per_s": self._counts["env_steps"] / elapsed,
            "episodes_per_s": self._counts["episodes"] / elapsed,
            "env_step_ms_p50": percentile(list(self._window["env_ms"]), 0.5),
            "env_step_ms_p99": percentile(list(self._window["env_ms"]), 0.99),
            "generate_ms_p50": percentile(list(self._window["gen_ms"]), 0.5),
            "engine_idle_fraction": idle,
            # Running totals, so any window of updates can be measured from two rows.
            "episodes_total": state.episodes_played,
            "generated_tokens_total": state.generated_tokens,
            "env_steps_total": state.env_steps,
            "engine_busy_s": busy,
            "queue_depth": queue_depth,
            "env_workers": workers,
            "staleness_histogram": dict(state.staleness),
            "ledger": ledger,
            "swap_s": swap_s,
            "frontier_tier": sampler.frontier_tier,
            "learner": asdict(learner) if is_dataclass(learner) else learner,
        }
        self._since = now
        self._counts.clear()
        self.last = row
        self.history.append(row)
        self.jsonl.write(json.dumps(row) + "\n")
        self.jsonl.flush()
        self._export(row)
        self._progress(row)

    def _export(self, row: dict) -> None:
        step = row["update"]
        scalars = {
            k: v for k, v in row.items() if isinstance(v, int | float) and not isinstance(v, bool)
        }
        for tier, value in row["reward_by_tier"].items():
            scalars[f"reward/{tier}"] = value
        for tier, value in row["success_by_tier"].items():
            scalars[f"success/{tier}"] = value
        for key, value in (row["learner"] or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                scalars[f"learner/{key}"] = value
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key, value, step)
            self._tb.flush()
        for key, gauge in self._gauges.items():
            if scalars.get(key) is not None:
                gauge.set(float(scalars[key]))

    def _progress(self, row: dict) -> None:
        rewards = " ".join(f"{t[:4]}={v:.2f}" for t, v in row["reward_by_tier"].items())
        idle = row["engine_idle_fraction"]
        line = (
            f"[update {row['update']}/{self.total_updates}] v{row['version']} "
            f"reward {rewards} | {row['episodes_per_s']:.2f} ep/s "
            f"{row['generated_tokens_per_s']:.0f} tok/s {row['env_steps_per_s']:.1f} steps/s | "
            f"idle {'-' if idle is None else f'{idle:.0%}'} queue {row['queue_depth']} "
            f"workers {row['env_workers']} | ledger {row['ledger']['trained']} trained "
            f"{row['ledger']['dropped_stale']} stale {row['ledger']['failed']} failed"
        )
        print(line, flush=True)

    def event(self, message: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        self.events.write(f"{stamp} {message}\n")
        self.events.flush()
        print(f"[{stamp}] {message}", flush=True)

    def plot(self, path: Path) -> Path:
        """The reward curve by tier over updates, as a PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        tiers = sorted({t for row in self.history for t in row["reward_by_tier"]})
        for tier in tiers:
            xs = [r["update"] for r in self.history if tier in r["reward_by_tier"]]
            ys = [r["reward_by_tier"][tier] for r in self.history if tier in r["reward_by_tier"]]
            ax.plot(xs, ys, marker="o", label=tier)
        ax.set_xlabel("learner update")
        ax.set_ylabel("mean episode reward (recent episodes)")
        ax.set_title("rlfarm reward curve")
        if tiers:
            ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path

    def close(self) -> None:
        self.jsonl.close()
        self.events.close()
        if self._tb is not None:
            self._tb.close()


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def _tensorboard(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a declared dependency; keep the run going without it
        return None
    return SummaryWriter(log_dir=str(path))


def _ray_gauges() -> dict:
    """Gauges exported by Ray's metrics agent to Prometheus (ray_rlfarm_* series)."""
    try:
        from ray.util.metrics import Gauge
    except ImportError:
        return {}
    names = (
        "episodes_per_s", "generated_tokens_per_s", "env_steps_per_s", "env_step_ms_p50",
        "env_step_ms_p99", "engine_idle_fraction", "queue_depth", "env_workers", "version",
        "swap_s",
    )  # fmt: skip
    return {n: Gauge(f"rlfarm_{n}", description=f"rlfarm {n.replace('_', ' ')}") for n in names}


class WatchdogTimeout(RuntimeError):
    pass


class Watchdog:
    """If no group or update finishes for ``timeout_s``, dump every thread's stack and fail."""

    def __init__(self, timeout_s: float, run_dir: Path) -> None:
        self.timeout_s = timeout_s
        self.dump_path = run_dir / "watchdog-stacks.txt"
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="rlfarm-watchdog", daemon=True)
        self.fired = False

    def start(self) -> None:
        self._last = time.monotonic()
        self._thread.start()

    def beat(self) -> None:
        self._last = time.monotonic()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            stalled = time.monotonic() - self._last
            if stalled > self.timeout_s:
                self.fired = True
                with self.dump_path.open("w") as f:
                    f.write(f"no progress for {stalled:.0f}s; stacks of the driver:\n")
                    faulthandler.dump_traceback(file=f, all_threads=True)
                sys.stderr.write(
                    f"rlfarm watchdog: no progress for {stalled:.0f}s (run.watchdog_s="
                    f"{self.timeout_s:.0f}); stacks in {self.dump_path}; failing the run\n"
                )
                faulthandler.dump_traceback(all_threads=True)
                import _thread

                _thread.interrupt_main()
                return
