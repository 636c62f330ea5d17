"""The text the agent reads: the system prompt, the task turn, and each observation turn.

One rendering, shared by SFT export (``env.sft_export``) and the rollout loop, so the
model is trained and evaluated on exactly the same text (a train/eval template
mismatch is the classic way a fine-tune learns nothing). The chat template of the
model is applied later, by whoever tokenizes; these functions only produce the
message contents.

Kept short on purpose: a small model with a small context window reads them, so the
task turn stays well under 300 tokens and observations are cut to about 400
characters (head and tail kept, since errors and ids tend to sit at either end).
"""

from __future__ import annotations

from typing import Any

HINT_COMMAND = "aws help --task-hint"
OBSERVATION_CHARS = 400

SYSTEM_PROMPT = (
    "You operate an AWS account (region us-east-1, account 123456789012) through the AWS "
    "CLI to complete a task.\n"
    "Reply with exactly one command per turn: a single line starting with `aws`, and "
    "nothing else.\n"
    "No shell: no pipes, redirects, variables or $(...). No local files: pass JSON inline "
    "in single quotes.\n"
    f"If you are stuck, `{HINT_COMMAND}` shows a hint (it costs some reward)."
)


def render_task(task: Any) -> str:
    """The first user turn: the task's description (``task`` has ``.description``)."""
    description = " ".join(str(task.description).split())
    return f"Task: {description}\nReply with your first aws command."


def truncate(text: str, limit: int = OBSERVATION_CHARS) -> str:
    """``text`` cut to about ``limit`` characters, keeping its head and tail."""
    text = text.strip()
    if len(text) <= limit:
        return text
    marker = f"\n...[{len(text) - limit} chars cut]...\n"
    head = (limit * 3) // 4
    return text[:head] + marker + text[-(limit - head) :]


def render_observation(
    *,
    command_success: bool,
    output: str = "",
    error: str = "",
    hint_text: str = "",
    task_achieved: bool = False,
    limit: int = OBSERVATION_CHARS,
) -> str:
    """The user turn after a command: its result, or the hint it asked for.

    Keyword names match the observation's fields (``AwsObservation``), so a caller can
    pass ``**obs.model_dump(include=...)``. Progress and reward are deliberately left
    out: the agent should judge the state from AWS's answers, as an operator would.
    """
    if hint_text:
        body = f"Hint: {truncate(hint_text, limit)}"
    elif command_success:
        shown = truncate(output, limit)
        body = f"OK\n{shown}" if shown else "OK (no output)"
    else:
        body = f"Error\n{truncate(error or output or 'the command failed', limit)}"
    if task_achieved:
        body += "\nTask complete."
    return body


def observation_text(obs: Any) -> str:
    """``render_observation`` of an ``AwsObservation``: the next user turn after a command."""
    return render_observation(
        command_success=obs.command_success,
        output=obs.output,
        error=obs.error,
        hint_text=obs.hint_text,
        task_achieved=obs.task_achieved,
    )
