"""Recorded results: every benchmark run appends itself to ``benchmarks/results/<bench>.jsonl``.

One line per run, written by the benchmark when it finishes: the command as typed, the commit
(``+dirty`` when the tree had changes), the machine (CPU model, cores, the vector extensions
torch's kernels care about, memory), the date, and the whole result with all its rounds. The
README's Measured figures are read from the newest line of each file
(``tests/benchmarks/test_readme_figures.py`` fails when they differ), so a figure is always the
latest run, never a chosen one. ``$RLFARM_RESULTS_DIR`` sends records elsewhere (the test suite
points it at a temporary directory, so its short runs never become the README's figures).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
RESULTS_ENV = "RLFARM_RESULTS_DIR"
VECTOR_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def record(bench: str, result: dict[str, Any], argv: list[str] | None = None) -> Path:
    """Append one run of ``bench`` with its ``result``; returns the file."""
    directory = results_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{bench}.jsonl"
    entry = {
        "bench": bench,
        "command": " ".join(["rlfarm", *(sys.argv[1:] if argv is None else argv)]),
        "commit": _commit(),
        "machine": machine(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "result": result,
    }
    with path.open("a") as f:
        f.write(json.dumps(entry, default=str) + "\n")
    return path


def results_dir() -> Path:
    """Where runs are recorded: ``$RLFARM_RESULTS_DIR``, else the repo's benchmarks/results."""
    return Path(os.environ.get(RESULTS_ENV) or RESULTS_DIR)


def latest(bench: str, directory: Path | None = None) -> dict[str, Any]:
    """The newest recorded run of ``bench``."""
    path = (directory or results_dir()) / f"{bench}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"no recorded run of {bench}: run `rlfarm bench {bench}` first")
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return json.loads(lines[-1])


def machine() -> dict[str, Any]:
    """What the numbers depend on: CPU model and cores, vector extensions, memory."""
    model, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    memory_gib = None
    with open("/proc/meminfo") if Path("/proc/meminfo").exists() else open(os.devnull) as f:
        for line in f:
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 2**20, 1)
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "vector": [flag for flag in VECTOR_FLAGS if flag in flags],
        "memory_gib": memory_gib,
        "python": platform.python_version(),
    }


def _commit() -> str:
    try:
        head = _git("rev-parse", "--short=12", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True)
    return done.stdout.strip()
