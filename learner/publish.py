"""Publishing adapter versions for the engines: the files, in memory, and a probe.

A version is an ``AdapterVersion`` carrying its files (peft's ``save_pretrained`` layout: float32
safetensors and the adapter config, loadable by plain peft and by vLLM's LoRA loader), the
digest of its weights and a probe. It travels to the engines through Ray; the driver stores a
copy in its run directory (``serving.adapter_files``), the learner writes nowhere.

The probe is a fixed prompt and a fixed continuation, the base model's greedy reply to it, so the
tokens are the same for every version and the numbers of two versions can be compared: the
learner's logprobs of the continuation with the adapter (and without it, as a reference). An
engine that loaded the version recomputes them (``serving.probes`` judges the answer).
"""

from __future__ import annotations

import torch

from serving.types import AdapterProbe, AdapterVersion, now, weights_digest

# A short, fixed, chat-rendered prompt: the same ids every version, so probes are comparable; it
# names no env (the learner trains for any), and any prompt the base model answers will do.
PROBE_MESSAGES = [{"role": "user", "content": "Describe what you can do in one sentence."}]
PROBE_TOKENS = 8


def probe_prompt_ids(tokenizer) -> list[int]:
    """Token ids of the probe prompt, rendered with the tokenizer's own chat template."""
    rendered = tokenizer.apply_chat_template(
        PROBE_MESSAGES, add_generation_prompt=True, tokenize=True, return_dict=True
    )
    return list(rendered["input_ids"])


@torch.no_grad()
def _teacher_forced_logprobs(
    model, ids: list[int], start: int, device: torch.device
) -> list[float]:
    tokens = torch.tensor([ids], device=device)
    logits = model(input_ids=tokens).logits[0, :-1].float()
    logprobs = torch.log_softmax(logits, dim=-1).gather(-1, tokens[0, 1:, None]).squeeze(-1)
    return [float(x) for x in logprobs[start - 1 :].cpu()]


@torch.no_grad()
def probe_tokens(model, tokenizer, device: torch.device) -> tuple[list[int], list[int]]:
    """The probe's prompt and its fixed continuation: the base model's greedy reply (adapter
    disabled), fixed length, so every version is probed on the same tokens."""
    was_training = model.training
    model.eval()
    try:
        prompt = probe_prompt_ids(tokenizer)
        ids = list(prompt)
        with model.disable_adapter():
            for _ in range(PROBE_TOKENS):
                logits = model(input_ids=torch.tensor([ids], device=device)).logits[0, -1]
                ids.append(int(logits.argmax()))
    finally:
        model.train(was_training)
    return prompt, ids[len(prompt) :]


@torch.no_grad()
def compute_probe(
    model, prompt: list[int], completion: list[int], device: torch.device
) -> AdapterProbe:
    """The learner's logprobs of the probe continuation with and without the adapter, at
    temperature 1 (raw logits), as vLLM's prompt logprobs are. ``model`` is a peft model; it is
    put in eval mode (no dropout) and its mode is restored."""
    was_training = model.training
    model.eval()
    ids = list(prompt) + list(completion)
    try:
        logprobs = _teacher_forced_logprobs(model, ids, len(prompt), device)
        with model.disable_adapter():
            reference = _teacher_forced_logprobs(model, ids, len(prompt), device)
    finally:
        model.train(was_training)
    return AdapterProbe(list(prompt), list(completion), logprobs, reference)


def build_version(
    model, probe_ids: tuple[list[int], list[int]], version: int, learner_step: int,
    device: torch.device,
) -> AdapterVersion:  # fmt: skip
    """The model's current adapter as version ``version``: files in memory, digest, probe."""
    from learner.checkpoint import adapter_files

    files = adapter_files(model)
    return AdapterVersion(
        version=version,
        learner_step=learner_step,
        created_at=now(),
        probe=compute_probe(model, *probe_ids, device),
        sha256=weights_digest(files),
        files=files,
    )
