"""Session-wide fixtures shared by every package's tests: one local Ray runtime, one tiny model."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

# Benchmarks the suite runs record into a scratch directory, never into benchmarks/results/
# (whose newest lines are the README's figures). Set before any test, so subprocesses inherit it.
os.environ["RLFARM_RESULTS_DIR"] = os.path.join(
    os.environ.get("TMPDIR", "/tmp"), f"rlfarm-test-results-{os.getpid()}"
)


@pytest.fixture(scope="session")
def tiny_model_path() -> Path:
    from cluster.models.registry import build_default_model

    return build_default_model()


@pytest.fixture(scope="session")
def smollm2_path(tmp_path_factory) -> Path:
    """builtin:smollm2-135m converted from the installed wheel into a fresh home, once a session."""
    from cluster.models.smollm2 import ensure_smollm2

    return ensure_smollm2(home=tmp_path_factory.mktemp("smollm2-home"), log=lambda _: None)


@pytest.fixture(scope="session")
def ray_runtime():
    import ray

    from cluster.base.ray_runtime import init_ray

    # Logical CPUs: every test actor fits on a 2-core box (they share the real cores).
    init_ray(min_cpus=8)
    yield ray


@dataclass(frozen=True)
class ServedAdapter:
    url: str
    adapter: Path
    name: str


@pytest.fixture(scope="session")
def served_adapter(tiny_model_path, tmp_path_factory):
    """`rlfarm serve --adapter DIR` (vLLM's OpenAI server) on a free port, for the session."""
    from tests.serving.reference import Reference

    adapter = Reference(tiny_model_path, tmp_path_factory.mktemp("served")).make_adapter(seed=71)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cluster.commands.cli", "serve", "--adapter", str(adapter),
         "--name", "trained", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        else:
            pytest.fail("vLLM OpenAI server did not come up in 300 s")
        yield ServedAdapter(url=url, adapter=adapter, name="trained")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
