"""Learner checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint directory holds the adapter (peft layout), the AdamW and LR-scheduler state, every
RNG state (so LoRA dropout masks repeat), and ``state.json`` with the step, the newest published
version, the data cursor and the caller's own ``extra`` dict. It is written to ``<path>.tmp`` and
renamed into place; a previous checkpoint at ``path`` is moved to ``<path>.old`` first and
deleted only after the new one is in place, so a hard kill at any instant leaves one complete
checkpoint (``load_checkpoint`` falls back to ``<path>.old`` when ``path`` is missing).
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from learner.config import LearnerConfig

STATE_FILE = "state.json"
FORMAT_VERSION = 1
# Config fields that change the adapter's shape or meaning: resuming with different values would
# load weights into the wrong thing, so they must match.
MUST_MATCH = ("model_path", "lora_r", "lora_alpha", "target_modules")


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np

        state["numpy"] = np.random.get_state()
    except ImportError:
        pass
    return state


def _restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])


@dataclass
class TrainingState:
    """What a checkpoint holds of a learner: the peft model (only its adapter is saved), the
    optimizer and scheduler, its config, and its counters."""

    model: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    config: LearnerConfig
    device: torch.device
    step: int = 0
    version: int = 0
    data_cursor: int = 0


def save_checkpoint(learner: TrainingState, path: Path, extra: dict[str, Any]) -> Path:
    """Write ``learner``'s full training state to ``path`` atomically; returns ``path``."""
    try:
        json.dumps(extra)
    except TypeError as err:
        raise ValueError(f"checkpoint extra must be JSON-serialisable: {err}") from err
    path = Path(path)
    staging = path.with_name(path.name + ".tmp")
    previous = path.with_name(path.name + ".old")
    if staging.exists():
        shutil.rmtree(staging)  # left by a save that was killed; never a valid checkpoint
    staging.mkdir(parents=True)
    learner.model.save_pretrained(str(staging / "adapter"), safe_serialization=True)
    torch.save(learner.optimizer.state_dict(), staging / "optimizer.pt")
    torch.save(learner.scheduler.state_dict(), staging / "scheduler.pt")
    torch.save(_rng_state(), staging / "rng.pt")
    state = {
        "format": FORMAT_VERSION,
        "step": learner.step,
        "version": learner.version,
        "data_cursor": learner.data_cursor,
        "config": learner.config.model_dump(mode="json"),
        "extra": extra,
    }
    (staging / STATE_FILE).write_text(json.dumps(state, indent=1))
    if path.exists():
        if previous.exists():
            shutil.rmtree(previous)
        path.rename(previous)
    staging.rename(path)
    if previous.exists():
        shutil.rmtree(previous)
    return path


def load_checkpoint(learner: TrainingState, path: Path) -> dict[str, Any]:
    """Restore a checkpoint written by ``save_checkpoint`` into ``learner`` (its counters are
    set from the checkpoint); returns ``extra``."""
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / STATE_FILE).exists():
        previous = path.with_name(path.name + ".old")
        if (previous / STATE_FILE).exists():
            path = previous  # killed between the two renames of a save: the old one is complete
        else:
            raise FileNotFoundError(
                f"no checkpoint at {path} (no {STATE_FILE}): pass the directory given to "
                "save_checkpoint"
            )
    state = json.loads((path / STATE_FILE).read_text())
    if state.get("format") != FORMAT_VERSION:
        raise ValueError(
            f"{path} has checkpoint format {state.get('format')}, this learner reads "
            f"{FORMAT_VERSION}: resume with the rlfarm version that wrote it"
        )
    _check_compatible(learner, state["config"], path)
    weights = load_file(str(path / "adapter" / "adapter_model.safetensors"), device="cpu")
    result = set_peft_model_state_dict(learner.model, weights)
    unexpected = [k for k in result.unexpected_keys if "lora_" in k]
    if unexpected:
        raise ValueError(f"{path}: adapter weights {unexpected[:3]} do not fit this model")
    learner.optimizer.load_state_dict(
        torch.load(path / "optimizer.pt", map_location=learner.device, weights_only=True)
    )
    learner.scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    # RNG states contain numpy/python objects, which torch's safe loader refuses.
    _restore_rng(torch.load(path / "rng.pt", weights_only=False))
    learner.step = int(state["step"])
    learner.version = int(state["version"])
    learner.data_cursor = int(state["data_cursor"])
    return dict(state["extra"])


def _check_compatible(learner: TrainingState, saved: dict[str, Any], path: Path) -> None:
    current = learner.config.model_dump(mode="json")
    diffs = [f"{k}: checkpoint {saved.get(k)!r} vs now {current[k]!r}" for k in MUST_MATCH
             if saved.get(k) != current[k]]  # fmt: skip
    if diffs:
        raise ValueError(
            f"checkpoint {path} was written with a different adapter setup ({'; '.join(diffs)}): "
            "resume with the same model_path and LoRA settings, or start a new run"
        )
