"""Helpers for the env tests: small hand-made tasks and a real env server process."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from env.catalog import Catalog
from env.task_spec import Task

REPO_ROOT = Path(__file__).resolve().parents[2]


def make_task(
    task_id: str,
    *,
    setup: list[Any] | None = None,
    checks: list[dict[str, Any]] | None = None,
    solution: list[str] | None = None,
    tier: str = "beginner",
    description: str = "A task made up by the env tests.",
) -> Task:
    """A valid catalog ``Task``; by default: create bucket 'target-bucket'."""
    return Task.model_validate(
        {
            "id": task_id,
            "tier": tier,
            "description": description,
            "setup": setup or [],
            "solution": solution or ["aws s3api create-bucket --bucket target-bucket"],
            "checks": checks
            or [
                {
                    "name": "bucket exists",
                    "call": {
                        "service": "s3",
                        "operation": "HeadBucket",
                        "params": {"Bucket": "target-bucket"},
                    },
                }
            ],
            "hints": [
                "hint one: S3",
                "hint two: CreateBucket",
                "hint three: aws s3api create-bucket",
            ],
        }
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def run_server(*args: str, ready_timeout_s: float = 120.0) -> Iterator[str]:
    """Start ``python -m env.server`` on a free local port; yield its base URL; stop it."""
    port = free_port()
    command = [sys.executable, "-m", "env.server", "--port", str(port), *args]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    url = f"http://127.0.0.1:{port}"
    # A file, not a pipe: nobody reads the access log, and a full pipe would block the server.
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            _wait_healthy(process, url, log, ready_timeout_s)
            yield url
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def _wait_healthy(process: subprocess.Popen, url: str, log: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            log.seek(0)
            output = log.read().decode(errors="replace")
            raise RuntimeError(f"env server exited early:\n{output[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError("env server did not become healthy in time")
        time.sleep(0.2)


def catalog_of(*tasks: Task) -> Catalog:
    return Catalog(list(tasks))
