"""What the farm reports: one ``UpdateRow`` per learner update, to JSONL, TensorBoard and
Prometheus (through Ray's metrics), a live progress line, events, and a reward-curve PNG.
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cluster.base.progress import Progress, duration
from cluster.farm.utilisation import EngineUtilisation
from learner.types import UpdateMetrics
from rollout.types import TrajectoryGroup
from serving.types import EngineHealth


@dataclass
class RunState:
    """The farm's running totals (never reset within a run; a resumed run continues them)."""

    version: int = 0
    updates: int = 0
    groups_played: int = 0
    episodes_played: int = 0
    generated_tokens: int = 0
    env_steps: int = 0
    staleness: dict[int, int] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def snapshot(self) -> dict[str, Any]:
        """JSON for a checkpoint (the clock as elapsed seconds, so a resumed run continues it)."""
        data = asdict(self)
        data.pop("started")
        data["elapsed_s"] = self.elapsed()
        data["staleness"] = {str(k): v for k, v in self.staleness.items()}
        return data

    def restore(self, data: dict[str, Any]) -> None:
        """Continue the totals of a ``snapshot`` (in place: the parts holding this state see it)."""
        data = dict(data)
        self.started = time.perf_counter() - data.pop("elapsed_s")
        self.staleness = {int(k): v for k, v in data.pop("staleness").items()}
        for name, value in data.items():
            setattr(self, name, value)


@dataclass(frozen=True)
class Totals:
    """Running totals at one instant: two of them bound a measuring window (``rates``)."""

    update: int
    time_s: float
    episodes_total: int
    generated_tokens_total: int
    env_steps_total: int
    engine_busy_s: float
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0

    @classmethod
    def of(cls, state: RunState, health: list[EngineHealth]) -> Totals:
        """The run's totals now, with the engines' own counters."""
        return cls(
            update=state.updates,
            time_s=state.elapsed(),
            episodes_total=state.episodes_played,
            generated_tokens_total=state.generated_tokens,
            env_steps_total=state.env_steps,
            engine_busy_s=sum(h.busy_s for h in health),
            prefix_cache_queries=sum(h.prefix_cache_queries for h in health),
            prefix_cache_hits=sum(h.prefix_cache_hits for h in health),
        )

    def rates(self, later: Totals, engines: int) -> dict[str, float]:
        """Rates over the window from this instant to ``later``. Engine idle = 1 - engine busy
        time / (window x engines); busy means at least one request in flight on that engine."""
        wall = later.time_s - self.time_s
        if wall <= 0:
            raise ValueError(f"an empty measuring window ({wall} s): measure at least one update")
        busy = (later.engine_busy_s - self.engine_busy_s) / (wall * engines)
        episodes = later.episodes_total - self.episodes_total
        return {
            "updates": later.update - self.update,
            "wall_s": wall,
            "episodes": episodes,
            "episodes_per_s": episodes / wall,
            "generated_tokens_per_s": (later.generated_tokens_total - self.generated_tokens_total)
            / wall,
            "env_steps_per_s": (later.env_steps_total - self.env_steps_total) / wall,
            "grpo_steps_per_hour": (later.update - self.update) * 3600 / wall,
            "engine_idle_fraction": min(1.0, max(0.0, 1.0 - busy)),
            "prefix_cache_hit_rate": _ratio(
                later.prefix_cache_hits - self.prefix_cache_hits,
                later.prefix_cache_queries - self.prefix_cache_queries,
            ),
        }


@dataclass(frozen=True)
class UpdateRow:
    """One learner update, as ``metrics.jsonl`` records it.

    Rates (``*_per_s``) and percentiles cover the time since the previous update; ``*_total`` and
    ``engine_busy_s`` are running totals, so any window of updates can be measured from two rows.
    ``engine_idle_fraction`` is None on the first update (no previous busy time to compare).
    """

    update: int
    version: int
    time_s: float
    reward_by_tier: dict[str, float]
    success_by_tier: dict[str, float]
    episode_len_mean: float
    generated_tokens_per_s: float
    env_steps_per_s: float
    episodes_per_s: float
    env_step_ms_p50: float
    env_step_ms_p99: float
    generate_ms_p50: float
    engine_idle_fraction: float | None
    episodes_total: int
    generated_tokens_total: int
    env_steps_total: int
    engine_busy_s: float
    prefix_cache_hit_rate: float | None
    prefix_cache_queries: int
    prefix_cache_hits: int
    queue_depth: int
    env_workers: int
    staleness_histogram: dict[int, int]
    ledger: dict[str, int]
    swap_s: float | None
    frontier_tier: str
    learner: dict[str, Any] | None
    # Engine utilisation over the window, from vLLM's own scheduler reports (None before a
    # first window): generated and prompt tokens/s summed over engines; ``engine_batch_fill`` the
    # mean running sequences per engine step over ``max_num_seqs``; KV-cache use per step (0-1);
    # sequences waiting now (summed over engines).
    engine_generated_tokens_per_s: float | None = None
    engine_prompt_tokens_per_s: float | None = None
    engine_prefilled_tokens_per_s: float | None = None  # prompt tokens not served by the cache
    engine_batch_fill: float | None = None
    engine_kv_cache_usage: float | None = None
    engine_waiting: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def totals(self) -> Totals:
        return Totals(
            self.update, self.time_s, self.episodes_total, self.generated_tokens_total,
            self.env_steps_total, self.engine_busy_s, self.prefix_cache_queries,
            self.prefix_cache_hits,
        )  # fmt: skip


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Metrics:
    def __init__(self, run_dir: Path, total_updates: int, resume_after: int | None = None) -> None:
        """``resume_after``: a resumed run continues after this update; rows of later updates
        (lost with the driver) are dropped from ``metrics.jsonl`` and TensorBoard."""
        self.run_dir = run_dir
        self.history: list[UpdateRow] = []
        if resume_after is not None:
            self.history = _keep_rows(run_dir / "metrics.jsonl", resume_after)
        self.jsonl = (run_dir / "metrics.jsonl").open("a")
        self.events = (run_dir / "events.log").open("a")
        self.total_updates = total_updates
        self._window: dict[str, deque] = defaultdict(lambda: deque(maxlen=256))
        self._tier_reward: dict[str, deque] = defaultdict(lambda: deque(maxlen=64))
        self._tier_success: dict[str, deque] = defaultdict(lambda: deque(maxlen=64))
        self._since = time.perf_counter()
        self._counts = defaultdict(float)
        self._engine_busy_prev: float | None = None
        self._cache_prev = (0, 0)  # prefix-cache (queries, hits) at the previous update
        self._utilisation = EngineUtilisation()
        self._tb = _tensorboard(run_dir / "tb", None if resume_after is None else resume_after + 1)
        self._gauges = _ray_gauges()
        self._bar: Progress | None = None  # the GRPO phase's bar, from the first update on

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
        self,
        state: RunState,
        learner: UpdateMetrics | None,
        swap_s: float | None,
        health: list[EngineHealth],
        queue_depth: int,
        workers: int,
        ledger: dict[str, int],
        frontier_tier: str,
    ) -> UpdateRow:
        now = time.perf_counter()
        elapsed = max(now - self._since, 1e-9)
        busy, idle, queries, hits, hit_rate = self._engine_window(health, elapsed)
        utilisation = self._utilisation.window(health, elapsed)
        row = UpdateRow(
            update=state.updates,
            version=state.version,
            time_s=round(now - state.started, 3),
            reward_by_tier={t: _mean(v) for t, v in self._tier_reward.items()},
            success_by_tier={t: _mean(v) for t, v in self._tier_success.items()},
            episode_len_mean=_mean(self._window["episode_len"]),
            generated_tokens_per_s=self._counts["tokens"] / elapsed,
            env_steps_per_s=self._counts["env_steps"] / elapsed,
            episodes_per_s=self._counts["episodes"] / elapsed,
            env_step_ms_p50=percentile(list(self._window["env_ms"]), 0.5),
            env_step_ms_p99=percentile(list(self._window["env_ms"]), 0.99),
            generate_ms_p50=percentile(list(self._window["gen_ms"]), 0.5),
            engine_idle_fraction=idle,
            episodes_total=state.episodes_played,
            generated_tokens_total=state.generated_tokens,
            env_steps_total=state.env_steps,
            engine_busy_s=busy,
            prefix_cache_hit_rate=hit_rate,
            prefix_cache_queries=queries,
            prefix_cache_hits=hits,
            queue_depth=queue_depth,
            env_workers=workers,
            staleness_histogram=dict(state.staleness),
            ledger=ledger,
            swap_s=swap_s,
            frontier_tier=frontier_tier,
            learner=learner.as_dict() if learner is not None else None,
            **utilisation,
        )
        self._since = now
        self._counts.clear()
        self.history.append(row)
        self.jsonl.write(json.dumps(row.as_dict()) + "\n")
        self.jsonl.flush()
        self._export(row)
        self._progress(row)
        return row

    def _engine_window(self, health: list[EngineHealth], elapsed: float) -> tuple:
        """The engines' busy seconds, idle fraction, prefix-cache queries, hits and hit rate,
        over the window since the last update (no idle fraction before a first window)."""
        busy = sum(h.busy_s for h in health)
        idle = None
        if self._engine_busy_prev is not None:
            idle = min(
                1.0, max(0.0, 1.0 - (busy - self._engine_busy_prev) / (elapsed * len(health)))
            )
        self._engine_busy_prev = busy
        queries = sum(h.prefix_cache_queries for h in health)
        hits = sum(h.prefix_cache_hits for h in health)
        hit_rate = _ratio(hits - self._cache_prev[1], queries - self._cache_prev[0])
        self._cache_prev = (queries, hits)
        return busy, idle, queries, hits, hit_rate

    def _export(self, row: UpdateRow) -> None:
        step = row.update
        scalars = {
            k: v
            for k, v in row.as_dict().items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        for tier, value in row.reward_by_tier.items():
            scalars[f"reward/{tier}"] = value
        for tier, value in row.success_by_tier.items():
            scalars[f"success/{tier}"] = value
        for key, value in (row.learner or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                scalars[f"learner/{key}"] = value
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key, value, step)
            self._tb.flush()
        for key, gauge in self._gauges.items():
            if scalars.get(key) is not None:
                gauge.set(float(scalars[key]))

    def _progress(self, row: UpdateRow) -> None:
        rewards = " ".join(f"{t[:4]}={v:.2f}" for t, v in row.reward_by_tier.items())
        idle, cache = row.engine_idle_fraction, row.prefix_cache_hit_rate
        fill = row.engine_batch_fill
        line = (
            f"[update {row.update}/{self.total_updates}] v{row.version} "
            f"reward {rewards} | {row.episodes_per_s:.2f} ep/s "
            f"{row.generated_tokens_per_s:.0f} tok/s {row.env_steps_per_s:.1f} steps/s | "
            f"idle {'-' if idle is None else f'{idle:.0%}'} "
            f"fill {'-' if fill is None else f'{fill:.0%}'} "
            f"cache {'-' if cache is None else f'{cache:.0%}'} "
            f"queue {row.queue_depth} "
            f"workers {row.env_workers} | ledger {row.ledger['trained']} trained "
            f"{row.ledger['dropped_stale']} stale {row.ledger['failed']} failed"
        )
        if self._bar is None:  # the clock starts at this process's first update
            self._bar = Progress("GRPO", self.total_updates, "updates", stream=sys.stdout,
                                 initial=row.update, lines=False)  # fmt: skip
        self._bar.update_to(row.update)
        eta = self._bar.eta_s()
        self._bar.write(line + (f" | ETA {duration(eta)}" if eta else ""))

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
        tiers = sorted({t for row in self.history for t in row.reward_by_tier})
        for tier in tiers:
            rows = [r for r in self.history if tier in r.reward_by_tier]
            xs = [r.update for r in rows]
            ys = [r.reward_by_tier[tier] for r in rows]
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
        if self._bar is not None:
            self._bar.close()
        self.jsonl.close()
        self.events.close()
        if self._tb is not None:
            self._tb.close()


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def _tensorboard(path: Path, purge_step: int | None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a declared dependency; keep the run going without it
        return None
    # purge_step: TensorBoard hides events at or after it written before a resume.
    return SummaryWriter(log_dir=str(path), purge_step=purge_step)


def _keep_rows(path: Path, last_update: int) -> list[UpdateRow]:
    """Rewrite ``metrics.jsonl`` with the rows up to ``last_update`` (atomically); return them."""
    if not path.exists():
        return []
    rows = []
    for raw in path.read_text().splitlines():
        try:
            row = json.loads(raw)
        except json.JSONDecodeError:
            continue  # a row cut short by a kill
        if row["update"] <= last_update:
            row["staleness_histogram"] = {int(k): v for k, v in row["staleness_histogram"].items()}
            rows.append(UpdateRow(**row))
    staging = path.with_name(path.name + ".tmp")
    staging.write_text("".join(json.dumps(r.as_dict()) + "\n" for r in rows))
    staging.replace(path)
    return rows


def _ray_gauges() -> dict:
    """Gauges exported by Ray's metrics agent to Prometheus (ray_rlfarm_* series)."""
    try:
        from ray.util.metrics import Gauge
    except ImportError:
        return {}
    names = (
        "episodes_per_s", "generated_tokens_per_s", "env_steps_per_s", "env_step_ms_p50",
        "env_step_ms_p99", "engine_idle_fraction", "queue_depth", "env_workers", "version",
        "swap_s", "engine_generated_tokens_per_s", "engine_prompt_tokens_per_s",
        "engine_prefilled_tokens_per_s",
        "engine_batch_fill", "engine_kv_cache_usage", "engine_waiting",
    )  # fmt: skip
    return {n: Gauge(f"rlfarm_{n}", description=f"rlfarm {n.replace('_', ' ')}") for n in names}
