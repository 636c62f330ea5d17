"""An engine actor owns its processes: a restarted one first ends what the dead one left behind.

vLLM runs its engine core in a child process of the engine actor (and, with tensor parallelism,
workers of its own). When the actor is killed, a child that outlives it keeps its share of GPU
memory, and the restarted actor then fails vLLM's free-memory check on every restart. So each
engine actor writes down its process family (pids with their start times, so a reused pid is
never mistaken for one) in a node-local file named by its Ray actor id (kept across restarts:
``serving.devices.ray_actor_id``); a restarted actor reads it, kills whatever of it still
runs, and waits until it is gone before vLLM starts. A replacement placed on another node
finds no file: the old node's leftovers are then outside its reach (its watch,
``cluster.farm.faults``, reports them).
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from pathlib import Path

Family = list[tuple[int, float]]  # (pid, start time)
REAP_WAIT_S = 30.0


def family(pid: int | None = None) -> Family:
    """The process ``pid`` (default: this one) and all its descendants."""
    import psutil

    root = psutil.Process(pid or os.getpid())
    members = [root, *root.children(recursive=True)]
    out = []
    for proc in members:
        try:
            out.append((proc.pid, proc.create_time()))
        except psutil.NoSuchProcess:
            continue
    return out


def alive(members: Family) -> list[int]:
    """Members still running (the same process: pid and start time both match)."""
    import psutil

    running = []
    for pid, started in members:
        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - started) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE:
                running.append(pid)
        except psutil.NoSuchProcess:
            continue
    return running


def reap(members: Family, wait_s: float = REAP_WAIT_S) -> list[int]:
    """SIGKILL every member still running, wait until all are gone; returns those it killed.
    Raises ``TimeoutError`` if one outlives ``wait_s`` (its device memory would stay held)."""
    killed = alive(members)
    for pid in killed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + wait_s
    while (left := alive(members)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if left:
        raise TimeoutError(f"processes {left} of a dead engine survived SIGKILL for {wait_s} s")
    return killed


def _record_path(key: str) -> Path:
    return Path(tempfile.gettempdir()) / "rlfarm-engine-processes" / f"{key}.json"


def remember(key: str, members: Family) -> None:
    path = _record_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(members))


def forget(key: str | None) -> None:
    if key is not None:
        _record_path(key).unlink(missing_ok=True)


def reap_previous_incarnation(key: str | None) -> list[int]:
    """In a (re)starting actor: end what the last incarnation under ``key`` left running, and
    forget it. A first start (no record) reaps nothing. Never this process or its parents."""
    if key is None:
        return []
    path = _record_path(key)
    if not path.exists():
        return []
    members = [(int(pid), float(t)) for pid, t in json.loads(path.read_text())]
    mine = {os.getpid(), os.getppid()}
    killed = reap([m for m in members if m[0] not in mine])
    path.unlink(missing_ok=True)
    return killed
