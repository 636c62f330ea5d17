"""Learner checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint directory holds the adapter (peft layout), the AdamW and LR-scheduler state, every
RNG state (so LoRA dropout masks repeat), and ``state.json`` with the step, the newest published
version, the data cursor, the record of group ids trained per update and the caller's own
``extra`` dict. It is written to ``<path>.tmp`` and
renamed into place; a previous checkpoint at ``path`` is moved to ``<path>.old`` first and
deleted only after the new one is in place, so a hard kill at any instant leaves one complete
checkpoint (``load_checkpoint`` falls back to ``<path>.old`` when ``path`` is missing).

The same state also exists in memory as named blobs (``export_state``/``import_state``): the
farm keeps the learner's latest state that way, restores a restarted learner actor from it, and
writes it to the driver's run directory, so no file ever has to be shared between nodes.
"""

from __future__ import annotations

import io
import json
import random
import shutil
from dataclasses import dataclass, field
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
    # Per train_step call, the group ids it trained (the learner's ``record``).
    record: list[list[str]] = field(default_factory=list)


def export_state(learner: TrainingState, extra: dict[str, Any]) -> dict[str, bytes]:
    """``learner``'s full training state as named blobs (file name -> bytes): what a checkpoint
    directory holds, in memory, so it can travel through Ray to whoever writes it to disk."""
    try:
        json.dumps(extra)
    except TypeError as err:
        raise ValueError(f"checkpoint extra must be JSON-serialisable: {err}") from err
    blobs = {f"adapter/{name}": data for name, data in adapter_files(learner.model).items()}
    blobs["optimizer.pt"] = _torch_bytes(learner.optimizer.state_dict())
    blobs["scheduler.pt"] = _torch_bytes(learner.scheduler.state_dict())
    blobs["rng.pt"] = _torch_bytes(_rng_state())
    state = {
        "format": FORMAT_VERSION,
        "step": learner.step,
        "version": learner.version,
        "data_cursor": learner.data_cursor,
        "record": learner.record,
        "config": learner.config.model_dump(mode="json"),
        "extra": extra,
    }
    blobs[STATE_FILE] = json.dumps(state, indent=1).encode()
    return blobs


def import_state(learner: TrainingState, blobs: dict[str, bytes], where: str = "state") -> dict:
    """Restore blobs made by ``export_state`` into ``learner`` (its counters included); returns
    the ``extra`` dict. ``where`` names the source in errors."""
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load as load_safetensors

    state = json.loads(blobs[STATE_FILE])
    if state.get("format") != FORMAT_VERSION:
        raise ValueError(
            f"{where} has checkpoint format {state.get('format')}, this learner reads "
            f"{FORMAT_VERSION}: resume with the rlfarm version that wrote it"
        )
    _check_compatible(learner, state["config"], where)
    weights = load_safetensors(blobs["adapter/adapter_model.safetensors"])
    result = set_peft_model_state_dict(learner.model, weights)
    unexpected = [k for k in result.unexpected_keys if "lora_" in k]
    if unexpected:
        raise ValueError(f"{where}: adapter weights {unexpected[:3]} do not fit this model")
    learner.optimizer.load_state_dict(
        torch.load(
            io.BytesIO(blobs["optimizer.pt"]), map_location=learner.device, weights_only=True
        )
    )
    learner.scheduler.load_state_dict(
        torch.load(io.BytesIO(blobs["scheduler.pt"]), weights_only=True)
    )
    # RNG states contain numpy/python objects, which torch's safe loader refuses.
    _restore_rng(torch.load(io.BytesIO(blobs["rng.pt"]), weights_only=False))
    learner.step = int(state["step"])
    learner.version = int(state["version"])
    learner.data_cursor = int(state["data_cursor"])
    learner.record = [list(ids) for ids in state.get("record", [])]
    return dict(state["extra"])


def adapter_files(model) -> dict[str, bytes]:
    """The peft model's adapter in ``save_pretrained``'s layout (config + float32 safetensors),
    built in memory: no temporary files, no model card."""
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save as save_safetensors

    weights = {k: v.detach().float().cpu().contiguous() for k, v in
               get_peft_model_state_dict(model).items()}  # fmt: skip
    config = model.peft_config["default"].to_dict()
    return {
        "adapter_model.safetensors": save_safetensors(weights),
        "adapter_config.json": json.dumps(config, indent=1, default=_jsonable).encode(),
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, set | frozenset):
        return sorted(value)
    if hasattr(value, "value"):  # enums (peft's task type)
        return value.value
    raise TypeError(f"cannot write {type(value).__name__} into an adapter config")


def write_blobs(blobs: dict[str, bytes], path: Path) -> Path:
    """Write named blobs as files under ``path``, atomically (see the module docstring)."""
    path = Path(path)
    staging = path.with_name(path.name + ".tmp")
    previous = path.with_name(path.name + ".old")
    if staging.exists():
        shutil.rmtree(staging)  # left by a save that was killed; never a valid checkpoint
    for name, data in blobs.items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_bytes(data)
    if path.exists():
        if previous.exists():
            shutil.rmtree(previous)
        path.rename(previous)
    staging.rename(path)
    if previous.exists():
        shutil.rmtree(previous)
    return path


def read_blobs(path: Path, marker: str = STATE_FILE) -> dict[str, bytes]:
    """The blobs of a checkpoint directory (falls back to ``<path>.old``, see above); ``marker``
    is the file every complete checkpoint has."""
    path = Path(path)
    if not (path / marker).exists():
        previous = path.with_name(path.name + ".old")
        if (previous / marker).exists():
            path = previous  # killed between the two renames of a save: the old one is complete
        else:
            raise FileNotFoundError(
                f"no checkpoint at {path} (no {marker}): pass the directory given to "
                "save_checkpoint"
            )
    return {str(f.relative_to(path)): f.read_bytes() for f in path.rglob("*") if f.is_file()}


def save_checkpoint(learner: TrainingState, path: Path, extra: dict[str, Any]) -> Path:
    """Write ``learner``'s full training state to ``path`` atomically; returns ``path``."""
    return write_blobs(export_state(learner, extra), path)


def load_checkpoint(learner: TrainingState, path: Path) -> dict[str, Any]:
    """Restore a checkpoint written by ``save_checkpoint`` into ``learner`` (its counters are
    set from the checkpoint); returns ``extra``."""
    return import_state(learner, read_blobs(path), str(path))


def _torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _check_compatible(learner: TrainingState, saved: dict[str, Any], where: str) -> None:
    current = learner.config.model_dump(mode="json")
    diffs = [f"{k}: checkpoint {saved.get(k)!r} vs now {current[k]!r}" for k in MUST_MATCH
             if saved.get(k) != current[k]]  # fmt: skip
    if diffs:
        raise ValueError(
            f"checkpoint {where} was written with a different adapter setup ({'; '.join(diffs)}): "
            "resume with the same model_path and LoRA settings, or start a new run"
        )
