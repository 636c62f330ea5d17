"""Token exactness of multi-turn conversations, and command extraction from replies."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from rollout.chat import Conversation
from rollout.parse import parse_reply


@pytest.fixture(scope="module")
def tokenizer():
    from cluster.models.registry import build_default_model

    return AutoTokenizer.from_pretrained(build_default_model())


def _encode(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("ends_with_eos", [True, False])
def test_conversation_tokens_equal_a_full_template_render(tokenizer, ends_with_eos):
    conv, first = Conversation.start(tokenizer, "system text", "Task: list buckets")
    assert first == conv.token_ids
    replies = ["aws s3api list-buckets", "aws s3 ls", "aws sts get-caller-identity"]
    for i, reply in enumerate(replies):
        sampled = _encode(tokenizer, reply) + ([tokenizer.eos_token_id] if ends_with_eos else [])
        text = conv.add_completion(sampled)
        assert text == reply
        added = conv.add_user(f'OK\nobservation {i} {{"Buckets": []}}')
        assert added, "every user turn adds prompt-side tokens"
    rendered = tokenizer.apply_chat_template(conv.messages, add_generation_prompt=True)
    # Sampled tokens were kept verbatim, and the whole stream is what the template renders.
    assert conv.token_ids == list(rendered["input_ids"])


def test_sampled_tokens_are_kept_even_when_retokenising_would_differ(tokenizer):
    conv, _ = Conversation.start(tokenizer, "sys", "task")
    # An unusual split of "aws s3 ls" into single characters: decoding then re-encoding would
    # merge them; the conversation must keep the engine's ids as they were sampled.
    odd = [tid for ch in "aws s3 ls" for tid in _encode(tokenizer, ch)] + [tokenizer.eos_token_id]
    before = len(conv.token_ids)
    conv.add_completion(odd)
    conv.add_user("OK")
    assert conv.token_ids[before : before + len(odd)] == odd


@pytest.mark.parametrize(
    ("reply", "command", "bare"),
    [
        ("aws s3 ls", "aws s3 ls", True),
        ("```bash\naws s3 ls\n```", "aws s3 ls", False),
        ("Sure! Run: `aws sqs list-queues` now", "aws sqs list-queues", False),
        ("$ aws ec2 describe-vpcs", "aws ec2 describe-vpcs", False),
        ("I would run\naws iam list-users", "aws iam list-users", False),
        ("no idea", None, False),
        ("", None, False),
    ],
)
def test_parse_reply(reply, command, bare):
    parsed = parse_reply(reply)
    assert parsed.command == command
    assert parsed.bare is bare
    assert parsed.extracted is (command is not None)
