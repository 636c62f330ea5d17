"""SFT warm start: teach a model the task's format before GRPO, with trl's ``SFTTrainer``.

Input: JSONL, one conversation per line, ``{"messages": [{"role", "content"}, ...], ...}``
(extra keys such as ``task_id``/``tier``/``kind`` from env's exporter are ignored). Every
conversation is rendered with the tokenizer's *own* chat template, the very rendering rollouts and
eval use, and only assistant tokens carry loss: a template mismatch between training and use is
the classic way a fine-tune silently learns nothing. An assistant message with ``"weight": 0``
(OpenAI's fine-tuning convention) is context only: the exporter marks the earlier turns of a row
that way (a wrong command before its recovery, hint requests, commands already taught), so each
row teaches its last message.

Two modes:

- ``full``: every weight trains and ``out`` becomes a new base model directory (model +
  tokenizer). Needed for the built-in tiny model, whose weights start random; GRPO's LoRA then
  sits on top of the result.
- ``lora``: a peft adapter trains on a frozen base (how real models such as SmolLM2-135M or
  Qwen2.5-Coder-3B are warm-started); ``out`` holds the adapter, or with ``merge`` a merged full
  model.

``auto`` picks full below ``FULL_FINETUNE_MAX_PARAMS`` parameters and lora above.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from transformers import TrainerCallback

Mode = Literal["auto", "full", "lora"]
# Below this size a full fine-tune is cheap and a randomly initialised model (the tiny one, 4M)
# needs one; pretrained models from SmolLM2-135M up keep their pretraining under a LoRA.
FULL_FINETUNE_MAX_PARAMS = 50_000_000
ROLES = ("system", "user", "assistant", "tool")
GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")


@dataclass(frozen=True)
class SftOptions:
    """What ``run_sft`` does; the CLI maps its flags onto these fields one to one."""

    data: Path
    out: Path
    model: str
    mode: Mode = "auto"
    epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides epochs
    lr: float | None = None  # None: 1e-3 full on a small model, 2e-4 lora
    batch_size: int = 16
    max_length: int = 1024
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    merge: bool = False
    seed: int = 0
    eval_data: Path | None = None
    eval_limit: int = 200
    # Score eval_data before training too (False when the start is known: random weights score 0
    # and greedy-generate to the token limit on every row, the slowest eval there is).
    eval_before: bool = True


@dataclass
class SftResult:
    out: Path
    mode: str
    steps: int
    train_loss: float
    seconds: float
    examples: int
    assistant_tokens: int
    exact_match_before: float | None = None
    exact_match_after: float | None = None
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        data = dict(self.__dict__)
        data["out"] = str(self.out)
        return data


# ---------------------------------------------------------------- data


def load_conversations(path: Path) -> list[list[dict[str, str]]]:
    """Read and validate a messages JSONL file; errors name the line and what to fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SFT data file {path} does not exist: pass a messages JSONL file")
    conversations = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: not valid JSON ({err.msg}); one object per line") from err
        conversations.append(_validate_messages(row, where))
    if not conversations:
        raise ValueError(f"{path} has no conversations: each line must be a {{'messages': ...}}")
    return conversations


def _validate_messages(row: object, where: str) -> list[dict]:
    messages = row.get("messages") if isinstance(row, dict) else None
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{where}: expected an object with a non-empty 'messages' list")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise ValueError(f"{where}: messages[{i}] needs a 'role' in {ROLES}")
        if not isinstance(message.get("content"), str):
            raise ValueError(f"{where}: messages[{i}] needs a string 'content'")
        weight = message.get("weight", 1)
        if weight not in (0, 1) or (weight == 0 and message["role"] != "assistant"):
            raise ValueError(
                f"{where}: messages[{i}] has weight {weight!r}: only assistant messages "
                "take a weight, 0 (context, not trained) or 1 (trained, the default)"
            )
    if messages[-1]["role"] != "assistant" or messages[-1].get("weight", 1) == 0:
        raise ValueError(
            f"{where}: the last message must be the assistant's (the target), without weight 0"
        )
    return [_kept(m) for m in messages]


def _kept(message: dict) -> dict:
    kept = {"role": message["role"], "content": message["content"]}
    if message.get("weight", 1) == 0:
        kept["weight"] = 0
    return kept


def _plain(messages: Sequence[dict]) -> list[dict[str, str]]:
    """Messages as the chat template sees them (a training weight is not part of the chat)."""
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _render(tokenizer, messages: Sequence[dict], **kwargs) -> dict:
    return tokenizer.apply_chat_template(list(messages), tokenize=True, return_dict=True, **kwargs)


def assistant_token_mask(tokenizer, messages: Sequence[dict]) -> tuple[list[int], list[int]]:
    """Token ids of the conversation under the tokenizer's own template, and a mask that is 1 on
    the tokens the model generates in assistant turns (content and end-of-turn token), except
    turns marked ``"weight": 0`` (context the row shows but does not teach, as in OpenAI's
    fine-tuning format).

    Templates with ``{% generation %}`` markers give the mask directly. Otherwise it is found by
    rendering prefixes: the tokens an assistant turn adds after ``add_generation_prompt`` are
    exactly what the model must generate, up to and including the end-of-turn token.
    """
    template = tokenizer.chat_template or ""
    weights = [m.get("weight", 1) for m in messages]
    messages = _plain(messages)
    if GENERATION_MARKER.search(template) and all(weights):
        rendered = _render(tokenizer, messages, return_assistant_tokens_mask=True)
        return list(rendered["input_ids"]), list(rendered["assistant_masks"])
    full = list(_render(tokenizer, messages)["input_ids"])
    mask = [0] * len(full)
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or not weights[i]:
            continue
        prompt = list(_render(tokenizer, messages[:i], add_generation_prompt=True)["input_ids"])
        turn = list(_render(tokenizer, messages[: i + 1])["input_ids"])
        if turn[: len(prompt)] != prompt or full[: len(turn)] != turn:
            raise ValueError(
                "the tokenizer's chat template is not prefix-preserving (rendering a prefix of a "
                "conversation changes earlier tokens), so assistant tokens cannot be located; "
                "use a template with {% generation %} markers"
            )
        end = len(turn)
        stops = [j for j in range(len(prompt), end) if turn[j] == tokenizer.eos_token_id]
        if stops:  # the template may add a newline after the end-of-turn token: not generated
            end = stops[0] + 1
        mask[len(prompt) : end] = [1] * (end - len(prompt))
    return full, mask


def tokenize_conversations(
    tokenizer, conversations: Sequence[Sequence[dict]], max_length: int
) -> list[dict[str, list[int]]]:
    """Pre-tokenised rows for trl: ``input_ids`` and ``labels`` (-100 off assistant tokens)."""
    rows = []
    for n, messages in enumerate(conversations):
        ids, mask = assistant_token_mask(tokenizer, messages)
        if len(ids) > max_length:
            raise ValueError(
                f"conversation {n} is {len(ids)} tokens, over max_length={max_length}: raise "
                "--max-length or shorten the data"
            )
        if not any(mask):
            raise ValueError(f"conversation {n} has no assistant tokens to train on")
        rows.append(
            {"input_ids": ids, "labels": [t if m else -100 for t, m in zip(ids, mask, strict=True)]}
        )
    return rows


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def exact_match(
    model, tokenizer, conversations: Sequence[Sequence[dict]], max_new_tokens: int = 48
) -> float:
    """Fraction of conversations whose last assistant message the model reproduces exactly
    (greedy, whitespace-stripped) from the preceding messages, rendered like a rollout prompt."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    hits = 0
    try:
        for messages in conversations:
            prompt = _render(tokenizer, _plain(messages[:-1]), add_generation_prompt=True)
            ids = torch.tensor([list(prompt["input_ids"])], device=device)
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            )
            text = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
            hits += text.strip() == messages[-1]["content"].strip()
    finally:
        model.train(was_training)
    return hits / len(conversations) if conversations else 0.0


# ---------------------------------------------------------------- training


def choose_mode(mode: Mode, num_params: int) -> Literal["full", "lora"]:
    if mode != "auto":
        return mode
    return "full" if num_params <= FULL_FINETUNE_MAX_PARAMS else "lora"


def run_sft(
    options: SftOptions, on_step: Callable[[int, int, dict], None] | None = None
) -> SftResult:
    """Fine-tune ``options.model`` on ``options.data`` and write the result to ``options.out``.
    ``on_step(step, total, latest_logs)`` is told after every optimizer step (progress for
    people); without it, the trainer's log lines go to stderr as JSON."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback

    from learner.sft_trainer import TrainedTokensSFTTrainer

    started = time.perf_counter()
    conversations = load_conversations(options.data)
    held_out = []
    if options.eval_data is not None:
        held_out = load_conversations(options.eval_data)[: options.eval_limit]
    tokenizer = AutoTokenizer.from_pretrained(options.model)
    if tokenizer.chat_template is None:
        raise ValueError(
            f"{options.model} has no chat template; SFT renders conversations with the "
            "tokenizer's own template, which rollouts also use: pick a chat/instruct model"
        )
    rows = tokenize_conversations(tokenizer, conversations, options.max_length)
    model = AutoModelForCausalLM.from_pretrained(options.model, dtype=torch.float32)
    mode = choose_mode(options.mode, sum(p.numel() for p in model.parameters()))
    peft_config = _lora_config(options) if mode == "lora" else None
    before = exact_match(model, tokenizer, held_out) if held_out and options.eval_before else None
    lr = options.lr if options.lr is not None else (1e-3 if mode == "full" else 2e-4)
    with tempfile.TemporaryDirectory(prefix="rlfarm-sft-") as scratch:
        args = _trainer_args(options, scratch, lr, len(rows))
        trainer = TrainedTokensSFTTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=peft_config,
        )
        # Progress goes to stderr so stdout carries only the command's own result (--json).
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(_StderrLogs() if on_step is None else _StepProgress(on_step))
        output = trainer.train()
        trained = trainer.model
    after = exact_match(trained, tokenizer, held_out) if held_out else None
    _save(trained, tokenizer, options.out, mode, options.merge)
    return SftResult(
        out=options.out,
        mode=mode,
        steps=int(output.global_step),
        train_loss=float(output.training_loss),
        seconds=time.perf_counter() - started,
        examples=len(rows),
        assistant_tokens=sum(sum(1 for t in r["labels"] if t != -100) for r in rows),
        exact_match_before=before,
        exact_match_after=after,
    )


def _trainer_args(options: SftOptions, scratch: str, lr: float, examples: int):
    from trl import SFTConfig

    use_cuda = torch.cuda.is_available()
    return SFTConfig(
        output_dir=scratch,
        num_train_epochs=options.epochs,
        max_steps=options.max_steps,
        learning_rate=lr,
        lr_scheduler_type="cosine",
        warmup_steps=math.ceil(0.05 * _total_steps(options, examples)),
        per_device_train_batch_size=options.batch_size,
        # Rows run from ~150 to ~1500 tokens: batching similar lengths together avoids
        # spending most of a CPU step on padding.
        train_sampling_strategy="group_by_length",
        max_length=options.max_length,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        seed=options.seed,
        data_seed=options.seed,
        gradient_checkpointing=False,
        bf16=use_cuda and torch.cuda.is_bf16_supported(),
        use_cpu=not use_cuda,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


class _StderrLogs(TrainerCallback):
    """Trainer log lines (loss, lr, ...) on stderr, one JSON object each."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            print(json.dumps({"step": state.global_step, **logs}), file=sys.stderr)


class _StepProgress(TrainerCallback):
    """Each optimizer step to ``on_step``, with the latest logged loss."""

    def __init__(self, on_step: Callable[[int, int, dict], None]) -> None:
        self.on_step = on_step
        self.latest: dict = {}

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.latest = dict(logs or {})

    def on_step_end(self, args, state, control, **kwargs):
        self.on_step(state.global_step, state.max_steps, self.latest)


def _total_steps(options: SftOptions, examples: int) -> int:
    if options.max_steps > 0:
        return options.max_steps
    return math.ceil(options.epochs * math.ceil(examples / options.batch_size))


def _lora_config(options: SftOptions):
    from peft import LoraConfig

    return LoraConfig(
        r=options.lora_r,
        lora_alpha=options.lora_alpha,
        lora_dropout=options.lora_dropout,
        target_modules=list(options.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def _save(model, tokenizer, out: Path, mode: str, merge: bool) -> None:
    """Write the result atomically: a temp sibling directory renamed into place."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(out.name + ".tmp")
    if staging.exists():
        shutil.rmtree(staging)
    if mode == "lora" and merge:
        model = model.merge_and_unload()
    model.save_pretrained(str(staging), safe_serialization=True)
    if mode == "full" or merge:
        tokenizer.save_pretrained(str(staging))  # a base model dir carries its tokenizer
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
