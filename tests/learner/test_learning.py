"""GRPO learns: on a one-turn task with a known best answer, mean reward rises well above chance.

The pipeline is the real one in miniature: an SFT warm start (learner/sft.py, full fine-tune of
the randomly initialised built-in model) teaches the model four valid commands with equal
probability; then GRPO, fed trajectories sampled from the learner's current adapter and shaped
exactly like engine trajectories (prompt ids with mask 0, sampled ids with mask 1, the sampler's
logprobs), must learn that one of them is the best. Chance is 1 in 4.
"""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from learner.config import LearnerConfig
from learner.sft import SftOptions, run_sft
from learner.trainer import Learner
from learner.types import SampleGroup
from tests.learner.engine_standin import sample_batch, to_sample

PROMPT = [{"role": "user", "content": "Run one read-only AWS command."}]
ANSWERS = ["aws s3 ls", "aws sqs list-queues", "aws sns list-topics", "aws iam list-users"]
BEST = "aws sqs list-queues"
UPDATES = 30
GROUPS_PER_UPDATE = 2
GROUP_SIZE = 8


@pytest.fixture(scope="module")
def warm_model(tiny_model_dir, tmp_path_factory):
    """The tiny model after a short SFT on the four answers, one conversation each."""
    work = tmp_path_factory.mktemp("warm")
    data = work / "answers.jsonl"
    rows = [{"messages": [*PROMPT, {"role": "assistant", "content": a}]} for a in ANSWERS]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    options = SftOptions(
        data=data, out=work / "model", model=str(tiny_model_dir), mode="full",
        max_steps=60, lr=3e-3, batch_size=4, seed=0,
    )  # fmt: skip
    run_sft(options)
    return work / "model"


def reward(tokenizer, completion: list[int]) -> float:
    return float(tokenizer.decode(completion, skip_special_tokens=True).strip() == BEST)


def test_grpo_raises_mean_reward_from_chance_to_well_above(warm_model):
    learner = Learner(LearnerConfig(model_path=str(warm_model), device="cpu", lr=2e-3, seed=0))
    tokenizer = learner.tokenizer
    prompt = tokenizer.apply_chat_template(
        PROMPT, add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]
    generator = torch.Generator().manual_seed(0)
    history = []
    for _ in range(UPDATES):
        groups = []
        for g in range(GROUPS_PER_UPDATE):
            completions = sample_batch(
                learner.model, prompt, GROUP_SIZE, max_new_tokens=12,
                stop_ids={tokenizer.eos_token_id}, generator=generator,
            )  # fmt: skip
            samples = [
                to_sample(prompt, ids, lps, reward(tokenizer, ids), learner.version)
                for ids, lps in completions
            ]
            groups.append(SampleGroup(f"g{g}", "one-turn", samples))
        metrics = learner.train_step(groups)
        history.append(metrics.reward_mean)
        if metrics.stepped:  # on-policy: the learner agrees with the sampler up to LoRA dropout
            assert 0.8 < metrics.importance_weight_mean < 1.2
    print("reward per update:", history)
    start, end = statistics.mean(history[:3]), statistics.mean(history[-5:])
    assert start < 0.45, f"the warm start should make every answer about equally likely: {history}"
    assert end > 0.75, f"GRPO should prefer {BEST!r} by now: {history}"
