"""The learner's input and output carriers.

The cluster converts each scored rollout ``TrajectoryGroup`` into a ``SampleGroup``; the learner
turns a batch of groups into one GRPO update and reports an ``UpdateMetrics``. These carriers are
plain dataclasses (no torch) so they cross Ray process boundaries cheaply and can be built in
tests without a model.

Alignment contract (the one thing to get right):

- ``token_ids`` is the whole conversation exactly as the engine saw and produced it: the rendered
  prompt, every completion the engine sampled, and every observation/prompt segment inserted
  between turns. Nothing is re-tokenised from text.
- ``loss_mask[i] == 1`` means the engine *sampled* ``token_ids[i]``; only those tokens train.
  ``loss_mask[i] == 0`` marks prompt, chat-template and observation tokens, which never train.
  ``loss_mask[0]`` is always 0: the first token has no context to be sampled from.
- ``behaviour_logprobs[i]`` is the engine's log p(token_ids[i] | token_ids[:i]) under the adapter
  version that sampled it, for mask-1 positions, and 0.0 elsewhere. The learner recomputes the
  same quantity, at the same positions, from the same ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Sample:
    """One episode, flattened into the token stream the engine produced.

    - ``token_ids``: every token of the conversation, in order, exactly as the engine saw them.
    - ``loss_mask[i]``: 1 if the engine sampled ``token_ids[i]`` (it trains), 0 for prompt,
      template and observation tokens (never trained). ``loss_mask[0]`` must be 0.
    - ``behaviour_logprobs[i]``: the engine's log p(token_ids[i] | token_ids[:i]) at its sampling
      temperature where ``loss_mask[i] == 1``; 0.0 elsewhere (ignored).
    - ``reward``: the episode return; GRPO gives every trained token of the episode the same
      advantage.
    - ``adapter_version``: the oldest adapter version that sampled any of its tokens (0 = the
      base model), used to measure staleness.
    """

    token_ids: list[int]
    loss_mask: list[int]
    behaviour_logprobs: list[float]
    reward: float
    adapter_version: int = 0

    def __post_init__(self) -> None:
        n = len(self.token_ids)
        if n < 2:
            raise ValueError(
                f"Sample has {n} token(s): an episode needs at least a prompt token and one "
                "sampled token"
            )
        if len(self.loss_mask) != n or len(self.behaviour_logprobs) != n:
            raise ValueError(
                f"Sample lengths differ: token_ids={n}, loss_mask={len(self.loss_mask)}, "
                f"behaviour_logprobs={len(self.behaviour_logprobs)}; all three must be aligned "
                "position by position with the token stream"
            )
        if any(m not in (0, 1) for m in self.loss_mask):
            raise ValueError("Sample.loss_mask must contain only 0 (never trains) and 1 (trains)")
        if self.loss_mask[0] != 0:
            raise ValueError(
                "Sample.loss_mask[0] is 1, but the first token cannot have been sampled (it has "
                "no context); the rendered prompt must come first with mask 0"
            )

    @property
    def num_trained_tokens(self) -> int:
        return sum(self.loss_mask)


# Rewards closer than this are "equal", whatever the configured spread.
ZERO_VARIANCE_TOL = 1e-8


def reward_spread(rewards: Sequence[float]) -> float:
    """max - min of a group's rewards: how far apart its best and worst episodes scored."""
    return max(rewards) - min(rewards)


def lacks_signal(rewards: Sequence[float], min_spread: float = 0.0) -> bool:
    """True when a group carries no learning signal: its rewards are all equal (every GRPO
    advantage is 0) or span no more than ``min_spread`` (``learner.min_reward_spread``). Adam's
    step does not shrink with the gradient, so a group of failures that differ only by a few step
    costs would otherwise move the policy as far as a group with a success in it. The one rule:
    the learner skips such groups and the farm books them ``dropped_zero_variance`` by this very
    function."""
    return reward_spread(rewards) <= max(min_spread, ZERO_VARIANCE_TOL)


@dataclass(frozen=True)
class SampleGroup:
    """G episodes of one task from one initial state: GRPO's unit of comparison."""

    group_id: str
    task_id: str
    samples: Sequence[Sample]

    def __post_init__(self) -> None:
        if len(self.samples) < 2:
            raise ValueError(
                f"SampleGroup {self.group_id!r} has {len(self.samples)} sample(s); group-relative "
                "advantages need at least 2 episodes of the same task"
            )

    @property
    def rewards(self) -> list[float]:
        return [s.reward for s in self.samples]


@dataclass(frozen=True)
class LearnerState:
    """A learner's full training state (adapter, optimizer, scheduler, RNG, counters) as named
    blobs, file name -> bytes: what a checkpoint directory holds. Opaque outside the learner:
    the driver keeps the newest and hands it back to a restarted or resumed learner;
    ``learner.checkpoint`` makes and reads the blobs."""

    blobs: dict[str, bytes]


@dataclass(frozen=True)
class LearnerPosition:
    """Where a learner is: updates done, newest published version, groups consumed."""

    step: int
    version: int
    data_cursor: int


@dataclass(frozen=True)
class UpdateMetrics:
    """What one ``Learner.train_step`` did. Times are wall-clock seconds.

    ``skipped_zero_variance`` groups had identical rewards, so every advantage was zero and they
    carry no signal; they are counted, not trained. When every group is skipped no optimizer
    step happens and ``stepped`` is False. Loss pieces, importance weights and clip fractions are
    token-means over trained tokens; ``importance_weight_*`` are the untruncated pi_old / mu
    ratios (``importance_truncated_fraction`` of tokens exceeded the cap). ``tokens_per_s``
    counts trained (mask-1) tokens per second of ``update_s``; ``max_staleness`` is the learner's
    newest published version minus the oldest ``adapter_version`` in the batch.
    """

    step: int
    stepped: bool
    groups: int
    trained_groups: int
    skipped_zero_variance: int
    samples: int
    trained_tokens: int
    loss: float
    policy_loss: float
    kl: float | None
    importance_weight_mean: float
    importance_weight_max: float
    importance_truncated_fraction: float
    clip_fraction: float
    clip_fraction_low: float
    clip_fraction_high: float
    grad_norm: float
    learning_rate: float
    reward_mean: float
    max_staleness: int
    tokens_per_s: float
    update_s: float
    publish_s: float | None = None

    def as_dict(self) -> dict[str, float | int | bool | None]:
        return asdict(self)
