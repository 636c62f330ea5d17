"""A hand-written stand-in for a vLLM engine, for learner tests that need on-policy samples.

It samples completions from a transformers/peft model token by token with a seeded generator
and returns exactly what a rollout trajectory gives the learner: the prompt ids (mask 0), the
sampled ids (mask 1) and the sampler's own logprob of each sampled id at the sampling temperature
(the "behaviour" logprobs). Rewards are the caller's. Named as a fake: the real engine is vLLM.
"""

from __future__ import annotations

import torch

from learner.types import Sample


@torch.no_grad()
def sample_completion(
    model,
    prompt_ids: list[int],
    *,
    max_new_tokens: int,
    stop_ids: set[int],
    generator: torch.Generator,
    temperature: float = 1.0,
) -> tuple[list[int], list[float]]:
    """Sample one completion; returns (completion ids, behaviour logprobs of those ids)."""
    was_training = model.training
    model.eval()
    ids = list(prompt_ids)
    completion: list[int] = []
    logprobs: list[float] = []
    try:
        for _ in range(max_new_tokens):
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1].float() / temperature
            log_p = torch.log_softmax(logits, dim=-1)
            token = int(torch.multinomial(log_p.exp(), 1, generator=generator))
            completion.append(token)
            logprobs.append(float(log_p[token]))
            ids.append(token)
            if token in stop_ids:
                break
    finally:
        model.train(was_training)
    return completion, logprobs


def to_sample(
    prompt_ids: list[int],
    completion: list[int],
    logprobs: list[float],
    reward: float,
    adapter_version: int = 0,
) -> Sample:
    """Shape one sampled turn like a rollout trajectory converted for the learner."""
    return Sample(
        token_ids=list(prompt_ids) + list(completion),
        loss_mask=[0] * len(prompt_ids) + [1] * len(completion),
        behaviour_logprobs=[0.0] * len(prompt_ids) + list(logprobs),
        reward=reward,
        adapter_version=adapter_version,
    )
