"""TRL's GRPOTrainer playing the farm's text format, so ``rlfarm bench peer`` compares equal work.

TRL runs a tool only when its response parser finds a tool call in the model's reply, and the
parsers it ships read JSON tool calls in a known template's syntax. A model warm-started on the
farm's format (one bare ``aws ...`` line per turn, the env's observation as the next user turn)
never writes one, so TRL's episodes ended after one reply with no env step. Here TRL gets the
farm's format instead, through the hooks transformers and TRL provide:

- a response template (``RESPONSE_TEMPLATE``) that reads a whole assistant reply as one call of
  the ``aws`` tool, whose argument is the reply's text;
- a chat template (``CHAT_TEMPLATE``, ChatML) that renders that call as the bare reply and a tool
  result as the next user turn, with no tool list in the system prompt: the conversation TRL
  renders is token for token the one the farm renders (``speak_farm_format`` checks it against the
  model's own template before training);
- ``FarmFormatTool``: ``AwsCliTool`` sending the env what the farm sends for a reply (the command
  ``rollout.parse`` extracts from it), and counting the calls that arrive after the episode ended;
- ``farm_format_dataset``: the first user turn is the task as the farm words it.

What still differs (``rlfarm bench peer`` reports it): TRL cannot end an episode from the env's
side, so an episode solved early keeps generating (and calling, answered "The episode is over")
until its turn budget; the farm stops at done. A reply with no text ends a TRL episode, where the
farm sends it to the env as an empty command. And a reply cut at the turn's token budget is closed
(``<|im_end|>``) by the farm before the next user turn, by TRL not.
"""

from __future__ import annotations

from typing import Any, ClassVar

from env.prompts import SYSTEM_PROMPT
from env.trl_adapter import AwsCliTool, task_dataset
from rollout.aws_backend import command_to_send

TOOL = "aws"

# ChatML with the farm's turns: an ``aws`` call is the reply's text, a tool result is a user turn.
# A call of any other tool renders as JSON (TRL's check that a template can show a tool call
# renders one with made-up names, and must find them).
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- set ns = namespace(content=message['content'] or '') -%}"
    "{%- if message['role'] == 'assistant' and message.get('tool_calls') -%}"
    "{%- for call in message['tool_calls'] -%}"
    "{%- set fn = call['function'] -%}"
    "{%- if fn['name'] == '" + TOOL + "' and fn['arguments'] is mapping "
    "and fn['arguments'] | length == 1 and 'command' in fn['arguments'] -%}"
    "{%- set ns.content = ns.content + fn['arguments']['command'] -%}"
    "{%- else -%}"
    "{%- set ns.content = ns.content + (fn | tojson) -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_start|>' + ('user' if message['role'] == 'tool' else message['role']) + '\\n' "
    "+ ns.content + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

# The whole reply, up to the end of its turn, is the ``command`` argument of one ``aws`` call.
_CALL = {"name": TOOL, "arguments": {"command": "{content}"}}
RESPONSE_TEMPLATE = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "tool_calls": {
            "close_pattern": r"<\|im_end\|>\s*",
            "content": "text",
            "repeats": True,
            "transform": {"type": "function", "function": _CALL},
        },
    },
}

# A conversation in the farm's shape, to prove the two renderings agree: its start, then turns
# of (reply, observation).
_PROBE_START = [
    {"role": "system", "content": SYSTEM_PROMPT},
    {"role": "user", "content": "Task: list the buckets.\nReply with your first aws command."},
]
_PROBE_TURNS = [
    ("aws s3api list-buckets", '{"Buckets": []}'),
    ("Sure:\n```\naws s3 ls\n```", "Command failed: ..."),
]


class FarmFormatTool(AwsCliTool):
    """``AwsCliTool`` for the farm's format: the whole reply arrives as ``command``."""

    # Calls made after the episode had ended, over every instance of this process (the bench reads
    # it after training): work TRL does that the farm, which stops at done, does not.
    calls_after_end: ClassVar[int] = 0
    calls: ClassVar[int] = 0

    def aws(self, command: str) -> str:
        """Run one AWS CLI command in this task's simulated AWS account.

        Args:
            command: The reply; its AWS CLI command is run as the farm would run it.

        Returns:
            What the command printed, or its error, plus a hint when one is due.
        """
        FarmFormatTool.calls += 1
        if self._done:
            FarmFormatTool.calls_after_end += 1
        text, _ = command_to_send(command)
        return super().aws(text)


def speak_farm_format(tokenizer: Any) -> None:
    """Give ``tokenizer`` the farm-format chat and response templates, after checking that they
    render the farm's conversations exactly as the model's own template does."""
    own = tokenizer.chat_template
    farm_messages, trl_messages = list(_PROBE_START), list(_PROBE_START)
    for reply, observation in _PROBE_TURNS:
        farm_messages += [
            {"role": "assistant", "content": reply}, {"role": "user", "content": observation},
        ]  # fmt: skip
        call = {"type": "function", "function": {"name": TOOL, "arguments": {"command": reply}}}
        trl_messages += [
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "name": TOOL, "content": observation},
        ]
    farm_text = tokenizer.apply_chat_template(
        farm_messages, tokenize=False, add_generation_prompt=True, chat_template=own
    )
    trl_text = tokenizer.apply_chat_template(
        trl_messages, tokenize=False, add_generation_prompt=True, chat_template=CHAT_TEMPLATE
    )
    if farm_text != trl_text:
        raise ValueError(
            "the model's chat template is not ChatML as the farm renders it, so TRL cannot be "
            "given the farm's format: compare TRL in its tool-call format (--trl-format tool-call)"
        )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.response_template = RESPONSE_TEMPLATE


def farm_format_dataset(task_ids: list[str], seeds: int):
    """TRL rows whose first user turn is exactly the farm's: ``AwsCliTool.reset`` appends the task
    text to an empty user message."""
    return task_dataset(task_ids=task_ids, seeds=seeds, instructions="")
