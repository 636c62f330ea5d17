"""`rlfarm serve --adapter DIR`: vLLM's OpenAI server answers chat requests with the adapter."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

pytestmark = pytest.mark.vllm


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served_adapter(reference):
    adapter = reference.make_adapter(seed=71)
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cluster.cli", "serve", "--adapter", str(adapter),
         "--name", "trained", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        else:
            pytest.fail("vLLM OpenAI server did not come up in 300 s")
        yield base, adapter
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_chat_completion_uses_the_adapter(served_adapter, reference):
    base, adapter = served_adapter
    models = httpx.get(f"{base}/v1/models", timeout=10).json()
    assert "trained" in {m["id"] for m in models["data"]}
    question = "list the sqs queues"
    reply = httpx.post(
        f"{base}/v1/chat/completions",
        json={
            "model": "trained",
            "messages": [{"role": "user", "content": question}],
            "max_tokens": 10,
            "temperature": 0,
            "skip_special_tokens": False,
        },
        timeout=120,
    ).json()
    text = reply["choices"][0]["message"]["content"]
    # Same chat template, same greedy decoding: the reply is the adapter's own greedy output.
    prompt = reference.prompt(question)
    expected = reference.tokenizer.decode(reference.greedy(adapter, prompt, 10))
    assert text == expected
    assert text != reference.tokenizer.decode(reference.greedy(None, prompt, 10))
