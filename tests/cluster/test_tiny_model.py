"""The built-in tiny model: deterministic, cached, and loadable by transformers and peft."""

from __future__ import annotations

import hashlib

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cluster.models.tiny import TinyModelSpec, ensure_tiny_model

SMALL = TinyModelSpec(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2)


def _digest(path) -> str:
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


def test_build_is_deterministic_and_cached(tmp_path):
    a = ensure_tiny_model(home=tmp_path / "a", extra_texts=["create the audit bucket"], spec=SMALL)
    b = ensure_tiny_model(home=tmp_path / "b", extra_texts=["create the audit bucket"], spec=SMALL)
    assert a.name == b.name
    assert _digest(a) == _digest(b)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()
    mtime = (a / "model.safetensors").stat().st_mtime
    assert (
        ensure_tiny_model(home=tmp_path / "a", extra_texts=["create the audit bucket"], spec=SMALL)
        == a
    )
    assert (a / "model.safetensors").stat().st_mtime == mtime  # cached, not rebuilt
    other = ensure_tiny_model(home=tmp_path / "a", extra_texts=["other texts"], spec=SMALL)
    assert other != a  # a different corpus is a different model


def test_tokenizer_knows_aws_cli_and_chatml(tiny_model_path):
    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    assert tok.eos_token == "<|im_end|>"
    # AWS CLI vocabulary is in the BPE merges: operation and flag names are few tokens each.
    assert len(tok("aws dynamodb create-table --table-name")["input_ids"]) <= 8
    assert (
        tok.decode(tok("aws s3api put-bucket-policy")["input_ids"]) == "aws s3api put-bucket-policy"
    )
    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "list buckets"},
        {"role": "assistant", "content": "aws s3 ls"},
    ]
    rendered = tok.apply_chat_template(messages, tokenize=False)
    assert rendered == (
        "<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\nlist buckets<|im_end|>\n"
        "<|im_start|>assistant\naws s3 ls<|im_end|>\n"
    )
    masked = tok.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    trained = [t for t, m in zip(masked["input_ids"], masked["assistant_masks"], strict=True) if m]
    assert tok.decode(trained) == "aws s3 ls<|im_end|>"


def test_model_loads_and_runs(tiny_model_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    n_params = sum(p.numel() for p in model.parameters())
    assert 1_000_000 < n_params < 20_000_000
    assert model.config.model_type == "qwen2"
    logits = model(torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, model.config.vocab_size)
