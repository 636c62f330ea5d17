"""What ``rlfarm view`` reads from a run directory, and only reads: metrics rows, the ledger's
fates, the summary of a finished run, and the episode log (indexed once, re-read when it grows).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cluster.farm.episode_log import SEGMENT_GLOB, read_segment
from cluster.farm.ledger import FATES, read_ledger

LIVE_WINDOW_S = 120.0  # a run without a summary that wrote within this is shown as live
SUMMARY_KEYS = ("group_id", "episode", "task_id", "tier", "seed", "versions", "fate", "reason",
                "reward", "achieved", "end", "learner_step", "staleness")  # fmt: skip


class NotARunError(FileNotFoundError):
    """The directory is not a run directory; the message says what a run directory holds."""


@dataclass
class EpisodeFilter:
    task: str | None = None
    tier: str | None = None
    version: int | None = None
    fate: str | None = None

    def keeps(self, episode: dict) -> bool:
        return (
            (self.task is None or episode["task_id"] == self.task)
            and (self.tier is None or episode["tier"] == self.tier)
            and (self.version is None or self.version in episode["versions"])
            and (self.fate is None or episode["fate"] == self.fate)
        )


@dataclass
class RunData:
    run_dir: Path
    # segment name -> (bytes read, its episodes)
    _segments: dict[str, tuple[int, list[dict]]] = field(default_factory=dict)

    @classmethod
    def open(cls, run_dir: Path) -> RunData:
        run_dir = run_dir.resolve()
        if not run_dir.is_dir():
            raise NotARunError(f"{run_dir} does not exist (a run directory is <out_dir>/<name>)")
        if not any(
            (run_dir / f).exists() for f in ("config.yaml", "metrics.jsonl", "ledger.jsonl")
        ):
            raise NotARunError(
                f"{run_dir} is not a run directory: it has no config.yaml, metrics.jsonl or "
                "ledger.jsonl (point --run at runs/<name>)"
            )
        return cls(run_dir)

    # ---- the run ------------------------------------------------------------------------------

    def run(self) -> dict:
        summary_path = self.run_dir / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
        return {
            "name": self.run_dir.name,
            "run_dir": str(self.run_dir),
            "config": self._config(),
            "live": summary is None and self._recently_written(),
            "summary": summary,
            "ledger": self.fates(),
        }

    def _config(self) -> dict:
        import yaml

        path = self.run_dir / "config.yaml"
        if not path.exists():
            return {}
        config = yaml.safe_load(path.read_text()) or {}
        return {
            "model": config.get("model"),
            "mode": (config.get("train") or {}).get("mode"),
            "updates": (config.get("train") or {}).get("updates"),
            "env": (config.get("env") or {}).get("backend"),
        }

    def _recently_written(self) -> bool:
        episodes = self.run_dir / "episodes"
        paths = [self.run_dir / f for f in ("metrics.jsonl", "ledger.jsonl", "events.log")]
        paths += sorted(episodes.glob(SEGMENT_GLOB))[-1:] if episodes.exists() else []
        mtimes = [p.stat().st_mtime for p in paths if p.exists()]
        return bool(mtimes) and time.time() - max(mtimes) < LIVE_WINDOW_S

    def fates(self) -> dict:
        path = self.run_dir / "ledger.jsonl"
        counts = Counter(line["fate"] for line in read_ledger(path)) if path.exists() else {}
        return {fate: counts.get(fate, 0) for fate in FATES}

    def evals(self) -> list[dict]:
        """The periodic evaluations (``train.eval_every``), one row per evaluated update."""
        from cluster.farm.eval_curve import EvalCurve

        return EvalCurve(self.run_dir).rows()

    def metrics(self) -> list[dict]:
        path = self.run_dir / "metrics.jsonl"
        rows = []
        for raw in path.read_text().splitlines() if path.exists() else []:
            try:
                rows.append(json.loads(raw))
            except json.JSONDecodeError:
                continue  # the row being written
        return rows

    # ---- episodes -----------------------------------------------------------------------------

    def episodes(self) -> list[dict]:
        """Every logged episode, oldest first. A live run's log is read incrementally: a
        compressed segment once, the open one from where the last read stopped."""
        directory = self.run_dir / "episodes"
        files = sorted(directory.glob(SEGMENT_GLOB)) if directory.exists() else []
        self._segments = {p.name: self._segments.get(p.name, (0, [])) for p in files}
        for path in files:
            offset, records = self._segments[path.name]
            if path.suffix == ".gz" and records:
                continue  # compressed segments never change
            more, offset = read_segment(path, offset)
            self._segments[path.name] = (offset, records + more)
        return [e for name in sorted(self._segments) for e in self._segments[name][1]]

    def find(self, filters: EpisodeFilter, limit: int, offset: int) -> dict:
        everything = self.episodes()
        matched = [e for e in everything if filters.keeps(e)]
        newest_first = matched[::-1][offset : offset + limit]
        return {
            "total": len(matched),
            "episodes": [
                {**{k: e.get(k) for k in SUMMARY_KEYS}, "turns": len(e["turns"])}
                for e in newest_first
            ],
            "facets": {
                "tasks": sorted({e["task_id"] for e in everything}),
                "tiers": sorted({e["tier"] for e in everything}),
                "versions": sorted({v for e in everything for v in e["versions"]}),
                "fates": sorted({e["fate"] for e in everything}),
            },
        }

    def episode(self, group_id: str, index: int) -> dict | None:
        for e in reversed(self.episodes()):
            if e["group_id"] == group_id and e["episode"] == index:
                return e
        return None

    def compare(self, task: str, a: int, b: int, per_side: int = 8) -> dict:
        """Episodes of one task under two adapter versions, newest first, greedy evals first."""

        def side(version: int) -> list[dict]:
            mine = [e for e in self.episodes() if e["task_id"] == task and version in e["versions"]]
            mine.sort(key=lambda e: (e["fate"] != "eval", -e["time"]))
            return mine[:per_side]

        return {"task": task, "a": {"version": a, "episodes": side(a)},
                "b": {"version": b, "episodes": side(b)}}  # fmt: skip
