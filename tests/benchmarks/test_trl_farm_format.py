"""TRL in the farm's text format (``benchmarks.trl_farm_format``): what ``rlfarm bench peer``
needs to compare equal work.

The conversation TRL builds (its prompt, the sampled reply, then the tool-result suffix its own
``_get_tool_suffix_ids`` renders) must be the farm's conversation token for token
(``rollout.chat.Conversation`` with the model's own template); a reply must parse as one ``aws``
call whatever it holds; the tool must send the env what the farm sends; and a model whose template
is not the farm's ChatML is refused rather than silently mis-rendered."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from benchmarks.trl_farm_format import FarmFormatTool, farm_format_dataset, speak_farm_format
from env.prompts import SYSTEM_PROMPT
from rollout.chat import Conversation

TASK = "Task: list the objects of bucket reports-2024.\nReply with your first aws command."
REPLIES = ["aws s3api list-buckets", "Sure:\n```\naws s3api list-objects-v2 --bucket x\n```"]
OBSERVATION = '{"Buckets": [{"Name": "reports-2024"}]}'


@pytest.fixture(scope="module")
def tokenizers(tiny_model_path):
    from transformers import AutoTokenizer

    own = AutoTokenizer.from_pretrained(tiny_model_path)
    trl = AutoTokenizer.from_pretrained(tiny_model_path)
    speak_farm_format(trl)
    return own, trl


def test_trl_builds_the_farms_conversation_token_for_token(tokenizers):
    from trl import GRPOTrainer
    from trl.chat_template_utils import is_chat_template_prefix_preserving, supports_tool_calling

    own, trl = tokenizers
    # TRL accepts the template as it is (no swap for a "training" template).
    assert supports_tool_calling(trl) and is_chat_template_prefix_preserving(trl)
    farm, farm_ids = Conversation.start(own, SYSTEM_PROMPT, TASK)
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": TASK}]
    trl_ids = trl.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    assert trl_ids == farm_ids
    # The parts of TRL's trainer its suffix rendering reads.
    trainer = SimpleNamespace(
        processing_class=trl, _tokenizer=trl, chat_template=None, _is_vlm=False,
        chat_template_kwargs={},
    )  # fmt: skip
    for reply in REPLIES:
        sampled = own(reply, add_special_tokens=False)["input_ids"] + [own.eos_token_id]
        farm.add_completion(sampled)
        farm.add_user(OBSERVATION)
        call = trl.parse_response(sampled, prefix=trl.decode(trl_ids))
        assert call["tool_calls"] == [
            {"type": "function", "function": {"name": "aws", "arguments": {"command": reply}}}
        ]
        tool = [{"role": "tool", "name": "aws", "content": OBSERVATION}]
        trl_ids = trl_ids + sampled + GRPOTrainer._get_tool_suffix_ids(trainer, tool)
        assert trl_ids == farm.token_ids


_TIME = re.compile(r"\d{4}-\d\d-\d\dT[\d:.]+(?:Z|[+-]\d\d:\d\d)")


def test_the_tool_runs_what_the_farm_runs_and_counts_calls_after_the_end():
    fenced, bare = FarmFormatTool(), FarmFormatTool()
    for tool in (fenced, bare):
        assert tool.reset(task_id="s3-list-objects", seed=0).startswith("Task:")
    calls, after = FarmFormatTool.calls, FarmFormatTool.calls_after_end
    # The farm extracts the command from a fenced reply (rollout.parse): the same observation.
    listed = fenced.aws("Here:\n```\naws s3api list-buckets\n```")
    # Each env stamps its buckets with its own reset's clock: the times may differ by a second.
    untimed = [_TIME.sub("<time>", out) for out in (listed, bare.aws("aws s3api list-buckets"))]
    assert untimed[0] == untimed[1] and "reports-2024" in listed
    fenced.aws("aws s3api list-objects-v2 --bucket reports-2024")
    assert fenced.get_reward() > 0.5
    assert "over" in fenced.aws("aws s3api list-buckets")
    assert (FarmFormatTool.calls - calls, FarmFormatTool.calls_after_end - after) == (4, 1)


def test_the_first_user_turn_is_the_task_alone():
    rows = farm_format_dataset(task_ids=["s3-list-objects"], seeds=2)
    assert len(rows) == 2
    # TRL appends reset()'s task text to the last message: nothing else is in it.
    assert [m["role"] for m in rows[0]["prompt"]] == ["system", "user"]
    system, user = rows[0]["prompt"]
    assert system["content"] == SYSTEM_PROMPT and user["content"] == ""


def test_a_template_other_than_the_farms_chatml_is_refused(tiny_model_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    original = tokenizer.chat_template
    tokenizer.chat_template = original.replace("<|im_start|>", "<|im_start|> ")
    with pytest.raises(ValueError, match="--trl-format tool-call"):
        speak_farm_format(tokenizer)
    assert getattr(tokenizer, "response_template", None) is None
