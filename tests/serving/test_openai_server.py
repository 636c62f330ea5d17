"""`rlfarm serve --adapter DIR`: vLLM's OpenAI server answers chat requests with the adapter."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.vllm


def test_chat_completion_uses_the_adapter(served_adapter, reference):
    base, adapter = served_adapter.url, served_adapter.adapter
    models = httpx.get(f"{base}/v1/models", timeout=10).json()
    assert served_adapter.name in {m["id"] for m in models["data"]}
    question = "list the sqs queues"
    reply = httpx.post(
        f"{base}/v1/chat/completions",
        json={
            "model": served_adapter.name,
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
