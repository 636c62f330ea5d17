"""Resolve the farm's model: the built-in tiny model gets the env's task texts in its tokenizer."""

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
    from serving.tiny_model import ensure_tiny_model

    return ensure_tiny_model(home=home, extra_texts=task_texts())


def resolve_model(model: str, home: Path | None = None) -> str:
    """A loadable model path or id for a config's ``model`` value."""
    if model == "builtin:tiny":
        return str(build_default_model(home))
    if model.startswith("builtin:"):
        raise ValueError(f"model={model!r}: the only built-in model is 'builtin:tiny'")
    return model
