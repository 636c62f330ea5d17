"""What the model actually typed and what the env answered: every episode (or a sample) on disk.

The ledger books one fate per episode; with an ``EpisodeLog`` attached, each booked group is also
written here whole, turn by turn (reply, the action the env took, the env's answer, reward,
progress, hints, adapter version), with its task, tier, seed, end reason and ledger fate. The
held-out evaluations are written too (fate ``eval``), so two adapter versions can be compared on
the same task.

Writing is off the hot path: ``add`` builds plain dicts and queues them; a thread encodes and
appends them to ``episodes/NNNNNN.jsonl``. A segment that reaches ``segment_mb`` is gzipped
(``NNNNNN.jsonl.gz``) and a new one begins; the oldest compressed segments are deleted while the
directory exceeds ``max_mb``. ``run.episodes_sample`` keeps that share of groups (whole groups,
chosen by a hash of the group id, so a resumed run keeps the same ones). ``read_episodes`` reads
a live or finished run's segments in order.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import queue
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from rollout.types import Trajectory, TrajectoryGroup

SEGMENT_GLOB = "[0-9][0-9][0-9][0-9][0-9][0-9].jsonl*"


def episode_record(traj: Trajectory, group: TrajectoryGroup, fate: str, reason: str,
                   step: int, staleness: int | None) -> dict:  # fmt: skip
    """One episode as the log keeps it (and ``rlfarm view`` shows it)."""
    return {
        "group_id": group.group_id,
        "episode": traj.episode_index,
        "task_id": traj.task_id,
        "tier": traj.tier,
        "seed": traj.seed,
        "versions": sorted(set(traj.versions)),
        "fate": fate,
        "reason": reason or traj.error,
        "learner_step": step,
        "staleness": staleness,
        "reward": round(traj.total_reward, 6),
        "achieved": traj.achieved,
        "end": traj.end,
        "max_progress": traj.max_progress,
        "hints_used": traj.hints_used,
        "format_failures": traj.format_failures,
        "generated_tokens": traj.generated_tokens,
        "time": round(time.time(), 3),
        "turns": [
            {
                "version": turn.adapter_version,
                "reply": turn.reply,
                "action": turn.result.action,
                "observation": turn.result.text,
                "reward": turn.result.reward,
                "progress": turn.result.progress,
                "hints_used": turn.result.hints_used,
                "well_formed": turn.result.well_formed,
                "generate_s": round(turn.generate_s, 4),
                "env_s": round(turn.env_s, 4),
            }
            for turn in traj.turns
        ],
    }


def sampled(group_id: str, share: float) -> bool:
    """Whether a group is in the ``share`` kept: stable for its id across runs and resumes."""
    if share >= 1.0:
        return True
    digest = hashlib.sha256(group_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


class EpisodeLog:
    def __init__(self, directory: Path, share: float = 1.0, max_mb: float = 512.0,
                 segment_mb: float = 8.0) -> None:  # fmt: skip
        self.directory = directory
        self.share = share
        self.max_bytes = int(max_mb * 2**20)
        self.segment_bytes = int(segment_mb * 2**20)
        directory.mkdir(parents=True, exist_ok=True)
        existing = [int(p.name[:6]) for p in directory.glob(SEGMENT_GLOB)]
        self._index = max(existing, default=0)  # a resumed run starts a segment of its own
        self._file = None
        self._written = 0
        self.dropped_writes = 0
        self._queue: queue.SimpleQueue[list[dict] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._drain, name="episode-log", daemon=True)
        self._thread.start()

    def add(self, group: TrajectoryGroup, fate: str, reason: str = "", step: int = -1,
            staleness: int | None = None) -> None:  # fmt: skip
        """Queue a booked group's played episodes (a group that never played has none)."""
        if self.share <= 0 or not sampled(group.group_id, self.share):
            return
        records = [
            episode_record(t, group, fate, reason, step, staleness)
            for t in group.trajectories
            if t.turns
        ]
        if records:
            self._queue.put(records)

    def close(self) -> None:
        """Write what is queued, then close the current segment (left uncompressed)."""
        self._queue.put(None)
        self._thread.join(timeout=60)
        if self._file is not None:
            self._file.close()
            self._file = None

    # ---- the writer thread ----------------------------------------------------------------------

    def _drain(self) -> None:
        while (records := self._queue.get()) is not None:
            try:
                self._write(records)
            except OSError:
                self.dropped_writes += len(records)  # a full disk must not stop the run

    def _write(self, records: list[dict]) -> None:
        if self._file is None or self._written >= self.segment_bytes:
            self._rotate()
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        self._file.write(data)
        self._file.flush()
        self._written += len(data.encode())

    def _rotate(self) -> None:
        if self._file is not None:
            self._file.close()
            done = Path(self._file.name)
            with done.open("rb") as src, gzip.open(done.with_suffix(".jsonl.gz"), "wb") as dst:
                shutil.copyfileobj(src, dst)
            done.unlink()
            self._trim()
        self._index += 1
        self._file = (self.directory / f"{self._index:06d}.jsonl").open("a", encoding="utf-8")
        self._written = 0

    def _trim(self) -> None:
        segments = sorted(self.directory.glob(SEGMENT_GLOB))
        total = sum(p.stat().st_size for p in segments)
        for oldest in segments[:-1]:
            if total <= self.max_bytes:
                break
            total -= oldest.stat().st_size
            oldest.unlink()


def read_segment(path: Path, offset: int = 0) -> tuple[list[dict], int]:
    """The episodes of one segment from byte ``offset`` on (an open ``.jsonl`` segment: only
    whole lines, so a line still being written is read next time), and the offset reached."""
    records: list[dict] = []
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
            offset = 0
        else:
            with path.open("rb") as f:
                f.seek(offset)
                data = f.read()
            data = data[: data.rfind(b"\n") + 1]
    except (OSError, EOFError):
        return records, offset  # rotated (renamed) while we read it, or trimmed
    for line in data.splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records, offset + len(data)


def read_episodes(directory: Path) -> Iterator[dict]:
    """Every logged episode of a run, oldest first; a line still being written is skipped."""
    for path in sorted(directory.glob(SEGMENT_GLOB)):
        yield from read_segment(path)[0]
