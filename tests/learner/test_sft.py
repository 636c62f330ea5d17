"""SFT warm start: assistant-only masks from the tokenizer's own template, data validation, and
a real trl run that raises held-out exact-command match for the built-in tiny model."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from learner.sft import (
    SftOptions,
    assistant_token_mask,
    choose_mode,
    exact_match,
    load_conversations,
    run_sft,
)
from tests.learner.sft_data import write_split

CONVERSATION = [
    {"role": "system", "content": "You are an AWS CLI agent."},
    {"role": "user", "content": "List my buckets."},
    {"role": "assistant", "content": "aws s3 ls"},
    {"role": "user", "content": "Output: bucket-a"},
    {"role": "assistant", "content": "aws s3 ls s3://bucket-a"},
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def masked_text(tokenizer, ids, mask) -> list[str]:
    """The masked-in spans as text, one string per contiguous run."""
    runs, current = [], []
    for token, bit in zip(ids, mask, strict=True):
        if bit:
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    if current:
        runs.append(tokenizer.decode(current))
    return runs


def test_only_assistant_content_and_end_of_turn_are_trained(tokenizer):
    ids, mask = assistant_token_mask(tokenizer, CONVERSATION)
    rendered = tokenizer.apply_chat_template(CONVERSATION, tokenize=True, return_dict=True)
    assert ids == list(rendered["input_ids"])  # the tokenizer's own rendering, untouched
    assert masked_text(tokenizer, ids, mask) == [
        "aws s3 ls<|im_end|>",
        "aws s3 ls s3://bucket-a<|im_end|>",
    ]


def test_weight_zero_turns_are_context_not_trained(tokenizer):
    # A row that shows an earlier command (here: a hint request or a wrong command) teaches only
    # its last one; the rendering is the same chat either way.
    context = [dict(m) for m in CONVERSATION]
    context[2]["weight"] = 0
    ids, mask = assistant_token_mask(tokenizer, context)
    assert ids == assistant_token_mask(tokenizer, CONVERSATION)[0]
    assert masked_text(tokenizer, ids, mask) == ["aws s3 ls s3://bucket-a<|im_end|>"]


def test_prefix_rendering_finds_the_same_mask_without_generation_markers(tokenizer):
    """Templates without {% generation %} markers (most hub models) get the same mask by
    rendering conversation prefixes with add_generation_prompt."""
    plain = tokenizer.chat_template.replace("{% generation %}", "").replace(
        "{% endgeneration %}", ""
    )
    assert plain != tokenizer.chat_template
    marked = assistant_token_mask(tokenizer, CONVERSATION)
    tokenizer_plain = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    tokenizer_plain.chat_template = plain
    assert assistant_token_mask(tokenizer_plain, CONVERSATION) == marked


def test_bad_data_gets_errors_that_name_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: the last message must be the assistant"):
        load_conversations(path)
    path.write_text('{"messages": [{"role": "user", "content": "hi"}, \n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: not valid JSON"):
        load_conversations(path)
    path.write_text('{"prompt": "x"}\n')
    with pytest.raises(ValueError, match="non-empty 'messages' list"):
        load_conversations(path)
    path.write_text('{"messages": [{"role": "robot", "content": "x"}]}\n')
    with pytest.raises(ValueError, match="role"):
        load_conversations(path)
    bad_weight = '{"messages": [{"role": "user", "content": "hi"}, '
    path.write_text(bad_weight + '{"role": "assistant", "content": "aws s3 ls", "weight": 2}]}\n')
    with pytest.raises(ValueError, match=r"messages\[1\] has weight 2: only assistant"):
        load_conversations(path)
    path.write_text(bad_weight + '{"role": "assistant", "content": "aws s3 ls", "weight": 0}]}\n')
    with pytest.raises(ValueError, match="the last message must be the assistant's"):
        load_conversations(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_conversations(tmp_path / "missing.jsonl")


def test_mode_follows_model_size_unless_explicit():
    assert choose_mode("auto", 4_000_000) == "full"
    assert choose_mode("auto", 134_515_008) == "lora"  # SmolLM2-135M keeps its pretraining
    assert choose_mode("auto", 3_000_000_000) == "lora"
    assert choose_mode("lora", 4_000_000) == "lora"


def test_full_sft_raises_held_out_exact_match(tiny_model_dir, tmp_path):
    # Converged, not mid-flight: at 100 steps the result was chaotic (0.33 to 1.0 across seeds and
    # CPUs: AMD without AVX-512 vs Intel), at 200 steps 1.0 for seeds 0-2 on both; 0.5 is headroom.
    train, held_out = write_split(tmp_path)
    result = run_sft(
        SftOptions(
            data=train, out=tmp_path / "model", model=str(tiny_model_dir), mode="full",
            max_steps=200, lr=3e-3, batch_size=16, eval_data=held_out, seed=0,
        )
    )  # fmt: skip
    assert result.mode == "full" and result.steps == 200
    assert result.exact_match_before == 0.0
    assert result.exact_match_after >= 0.5, result
    # the output is a base model directory that scores the same when loaded back
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "model")
    conversations = [json.loads(line)["messages"] for line in held_out.read_text().splitlines()]
    assert exact_match(model, tokenizer, conversations) == result.exact_match_after


def test_lora_sft_writes_an_adapter(tiny_model_dir, tmp_path):
    train, _ = write_split(tmp_path)
    result = run_sft(
        SftOptions(
            data=train, out=tmp_path / "adapter", model=str(tiny_model_dir), mode="lora",
            max_steps=2, batch_size=4,
        )
    )  # fmt: skip
    assert result.mode == "lora"
    files = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files


def test_lora_sft_with_merge_writes_a_base_model_for_grpo(tiny_model_dir, tmp_path):
    from learner.config import LearnerConfig
    from learner.trainer import Learner

    train, _ = write_split(tmp_path)
    run_sft(
        SftOptions(
            data=train, out=tmp_path / "merged", model=str(tiny_model_dir), mode="lora",
            merge=True, max_steps=2, batch_size=4,
        )
    )  # fmt: skip
    files = {p.name for p in (tmp_path / "merged").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    learner = Learner(LearnerConfig(model_path=str(tmp_path / "merged"), device="cpu"))
    assert (
        learner.tokenizer.chat_template
        == AutoTokenizer.from_pretrained(tiny_model_dir).chat_template
    )


def _plain_nll(model, batch) -> torch.Tensor:
    """trl's loss, written out: token-mean NLL of the labelled tokens over the full logits."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    return (
        torch.nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum"
        )
        / (labels != -100).sum()
    )


@pytest.mark.parametrize("lora", [False, True])
def test_trained_token_loss_equals_the_full_logits_loss(tiny_model_dir, tokenizer, lora):
    # The warm start's loss projects only labelled positions and runs the rows' shared prefix
    # once: its value and every gradient must be those of the plain NLL over full logits.
    from peft import LoraConfig, get_peft_model
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from learner.forward import shared_prefix_length
    from learner.sft import tokenize_conversations
    from learner.sft_trainer import MIN_SHARED_PREFIX, TrainedTokensSFTTrainer

    system = {"role": "system", "content": "You operate an AWS account through the AWS CLI. " * 3}
    conversations = [
        [system, *CONVERSATION[1:]],
        [system, {"role": "user", "content": "Make a queue jobs."},
         {"role": "assistant", "content": "aws sqs create-queue --queue-name jobs"}],
        [system, {"role": "user", "content": "Delete bucket b."},
         {"role": "assistant", "content": "aws s3 rb s3://b"}],
    ]  # fmt: skip
    rows = tokenize_conversations(tokenizer, conversations, max_length=512)
    batch = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)(rows)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    if lora:
        config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
        model = get_peft_model(model, config)
        for name, param in model.named_parameters():  # LoRA B starts at 0: give it a value
            if "lora_B" in name:
                torch.nn.init.normal_(param, std=0.02)
    trained = [p for p in model.parameters() if p.requires_grad]

    def loss_and_grads(compute):
        model.zero_grad()
        loss = compute()
        loss.backward()
        return loss.item(), [p.grad.clone() for p in trained]

    plain_loss, plain_grads = loss_and_grads(lambda: _plain_nll(model, batch))
    trainer = TrainedTokensSFTTrainer.__new__(TrainedTokensSFTTrainer)  # only compute_loss runs
    ours_loss, ours_grads = loss_and_grads(lambda: trainer.compute_loss(model, dict(batch)))
    # the system prompt is long enough for the shared-prefix path to run
    assert shared_prefix_length([r["input_ids"] for r in rows]) >= MIN_SHARED_PREFIX
    assert ours_loss == pytest.approx(plain_loss, rel=1e-5)
    for ours, plain in zip(ours_grads, plain_grads, strict=True):
        torch.testing.assert_close(ours, plain, rtol=1e-4, atol=1e-6)
