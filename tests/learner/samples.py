"""Synthetic, engine-shaped learner inputs for tests that need data but not a task."""

from __future__ import annotations

import random
from collections.abc import Sequence

from learner.config import LearnerConfig
from learner.types import Sample, SampleGroup


def make_config(model_dir, **overrides) -> LearnerConfig:
    settings = {"model_path": str(model_dir), "device": "cpu", "lr": 1e-3, "seed": 0}
    settings.update(overrides)
    return LearnerConfig(**settings)


def _sample(
    rng: random.Random, segments: list[tuple[int, int]], reward: float, prefix: Sequence[int] = ()
) -> Sample:
    """``prefix`` (mask 0), then random ids per ``(mask bit, length)`` segment; random behaviour
    logprobs on mask-1 tokens."""
    ids, mask = list(prefix), [0] * len(prefix)
    for bit, n in segments:
        ids += [rng.randrange(4000) for _ in range(n)]
        mask += [bit] * n
    logprobs = [rng.uniform(-10.0, -7.5) if m else 0.0 for m in mask]
    return Sample(ids, mask, logprobs, reward=reward)


def random_group(rng: random.Random, group_id: str, rewards: list[float]) -> SampleGroup:
    """Engine-shaped samples with random ids: prompt (mask 0), completion (mask 1), then an
    observation (mask 0) and a second completion (mask 1), like a two-turn episode."""
    samples = [
        _sample(rng, [(0, 6), (1, rng.randint(2, 6)), (0, 4), (1, rng.randint(2, 6))], reward)
        for reward in rewards
    ]
    return SampleGroup(group_id, "task", samples)


def prompt_group(
    rng: random.Random, group_id: str, rewards: list[float], prompt_len: int = 24
) -> SampleGroup:
    """Like ``random_group``, but the episodes share one prompt of ``prompt_len`` tokens (mask 0)
    as the G episodes of one task do; then completion, observation, completion of their own."""
    prompt = [rng.randrange(4000) for _ in range(prompt_len)]
    samples = [
        _sample(
            rng, [(1, rng.randint(2, 6)), (0, rng.randint(3, 9)), (1, rng.randint(2, 6))], reward,
            prompt,
        )
        for reward in rewards
    ]  # fmt: skip
    return SampleGroup(group_id, "task", samples)
