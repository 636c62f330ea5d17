"""Publishing adapter versions for the engines: atomic directories, a probe, and retention.

Each version is a directory ``<out_dir>/v000001`` in peft's ``save_pretrained`` layout (float32
safetensors, loadable by plain peft and by vLLM's LoRA loader) plus ``manifest.json`` written with
``serving.types.write_manifest``. It is written under a temporary name in the same directory and
then renamed, so an engine that sees ``v000001`` always sees a complete adapter. The manifest's
probe lets the engine prove that it loaded these exact weights (see ``serving/types.py``).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import torch

from serving.types import AdapterProbe, AdapterVersion, now, write_manifest

VERSION_DIR = re.compile(r"^v(\d{6,})$")
TEMP_PREFIX = ".publishing-"
# A short, fixed, chat-rendered prompt: the same ids every version, so probes are comparable.
PROBE_MESSAGES = [{"role": "user", "content": "List the S3 buckets in this account."}]
PROBE_TOKENS = 8


def version_dir_name(version: int) -> str:
    return f"v{version:06d}"


def published_versions(out_dir: Path) -> list[int]:
    """Versions present in ``out_dir`` (complete ones only: temp dirs never match), ascending."""
    if not out_dir.is_dir():
        return []
    found = (VERSION_DIR.match(p.name) for p in out_dir.iterdir() if p.is_dir())
    return sorted(int(m.group(1)) for m in found if m)


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
def compute_probe(model, tokenizer, device: torch.device) -> AdapterProbe:
    """Greedy continuation of the probe prompt under the adapter, and its logprobs with and
    without the adapter. Logprobs are at temperature 1 (raw logits), as vLLM's prompt logprobs are.

    ``model`` is a peft model; it is put in eval mode (no dropout) and its mode is restored.
    """
    was_training = model.training
    model.eval()
    try:
        prompt = probe_prompt_ids(tokenizer)
        ids = list(prompt)
        for _ in range(PROBE_TOKENS):  # greedy, no early stop: a fixed-length probe
            logits = model(input_ids=torch.tensor([ids], device=device)).logits[0, -1]
            ids.append(int(logits.argmax()))
        logprobs = _teacher_forced_logprobs(model, ids, len(prompt), device)
        with model.disable_adapter():
            reference = _teacher_forced_logprobs(model, ids, len(prompt), device)
    finally:
        model.train(was_training)
    return AdapterProbe(
        prompt_token_ids=prompt,
        completion_token_ids=ids[len(prompt) :],
        logprobs=logprobs,
        reference_logprobs=reference,
    )


def publish_adapter(
    model,
    tokenizer,
    out_dir: str | Path,
    *,
    min_version: int,
    learner_step: int,
    keep_last: int,
    device: torch.device,
) -> AdapterVersion:
    """Write the model's adapter as the next version in ``out_dir`` and return its carrier.

    The new version is ``max(min_version, newest version already in out_dir) + 1``, so versions
    never repeat even when a learner resumes from a checkpoint older than its last publish.
    Only the newest ``keep_last`` versions are kept.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    existing = published_versions(out_dir)
    version = max([min_version, *existing]) + 1
    final = out_dir / version_dir_name(version)
    staging = out_dir / f"{TEMP_PREFIX}{version_dir_name(version)}-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    try:
        model.save_pretrained(str(staging), safe_serialization=True)
        adapter = AdapterVersion(
            version=version,
            path=str(final),
            learner_step=learner_step,
            created_at=now(),
            probe=compute_probe(model, tokenizer, device),
        )
        write_manifest(adapter, staging)
        os.rename(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    prune_versions(out_dir, keep_last)
    return adapter


def prune_versions(out_dir: Path, keep_last: int) -> list[int]:
    """Delete all but the newest ``keep_last`` versions; returns the deleted version numbers."""
    versions = published_versions(out_dir)
    doomed = versions[:-keep_last] if keep_last > 0 else versions
    for version in doomed:
        shutil.rmtree(out_dir / version_dir_name(version), ignore_errors=True)
    return doomed
