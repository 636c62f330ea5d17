"""Carriers of rollout results: turns, trajectories and groups, shaped for token-exact training.

A trajectory's tokens are the concatenation, turn by turn, of the prompt-side tokens added that
turn (system/user/observation text and chat-template glue: mask 0, never trained) and the tokens
the engine sampled (mask 1, trained, each with the engine's logprob under the adapter version that
produced it). ``Trajectory.token_ids()`` is therefore exactly the sequence the engine saw, and the
learner recomputes logprobs on it without re-tokenising any text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rollout.env_contract import StepResult

EpisodeEnd = Literal["achieved", "max_steps", "context_limit", "env_done", "failed"]


@dataclass(frozen=True)
class Turn:
    """One agent turn: prompt-side tokens (mask 0), then the sampled completion (mask 1).

    ``completion_logprobs[i]`` is the engine's logprob of ``completion_token_ids[i]``. ``reply`` is
    the completion's text (without the end-of-turn token) and ``result`` the env's answer to it:
    its reward, the action the env took from the reply, and the next user turn.
    """

    prompt_token_ids: list[int]
    completion_token_ids: list[int]
    completion_logprobs: list[float]
    adapter_version: int
    reply: str
    result: StepResult
    generate_s: float = 0.0
    env_s: float = 0.0

    @property
    def reward(self) -> float:
        return self.result.reward

    @property
    def action(self) -> str | None:
        return self.result.action


@dataclass
class Trajectory:
    """One episode of one task from a group's shared initial state."""

    task_id: str
    tier: str
    group_id: str
    episode_index: int
    seed: int
    turns: list[Turn] = field(default_factory=list)
    end: EpisodeEnd = "failed"
    achieved: bool = False
    max_progress: float = 0.0
    hints_used: int = 0
    format_failures: int = 0
    error: str = ""

    @property
    def total_reward(self) -> float:
        return sum(turn.reward for turn in self.turns)

    def token_ids(self) -> list[int]:
        ids: list[int] = []
        for turn in self.turns:
            ids += turn.prompt_token_ids + turn.completion_token_ids
        return ids

    def loss_mask(self) -> list[int]:
        mask: list[int] = []
        for turn in self.turns:
            mask += [0] * len(turn.prompt_token_ids) + [1] * len(turn.completion_token_ids)
        return mask

    def behaviour_logprobs(self) -> list[float]:
        """Engine logprobs aligned with ``token_ids()``; 0.0 on prompt-side positions."""
        out: list[float] = []
        for turn in self.turns:
            out += [0.0] * len(turn.prompt_token_ids) + list(turn.completion_logprobs)
        return out

    @property
    def versions(self) -> list[int]:
        return [turn.adapter_version for turn in self.turns]

    @property
    def generated_tokens(self) -> int:
        return sum(len(turn.completion_token_ids) for turn in self.turns)

    @classmethod
    def failed(cls, task_id: str, tier: str, group_id: str, index: int, seed: int,
               error: str) -> Trajectory:  # fmt: skip
        """An episode that could not be played (env or engine failure, a dead worker)."""
        return cls(task_id, tier, group_id, index, seed, end="failed", error=error)


@dataclass
class TrajectoryGroup:
    """G trajectories of one task from one initial state: scored, trained on or dropped whole."""

    group_id: str
    task_id: str
    tier: str
    seed: int
    trajectories: list[Trajectory]
    failed: bool = False
    error: str = ""
    created_s: float = 0.0

    @property
    def min_version(self) -> int:
        """The oldest adapter version any turn of the group was sampled with."""
        versions = [v for t in self.trajectories for v in t.versions]
        return min(versions) if versions else 0

    @property
    def rewards(self) -> list[float]:
        return [t.total_reward for t in self.trajectories]

    @classmethod
    def failed_whole(
        cls, task_id: str, tier: str, seed: int, group_id: str, size: int, error: str
    ) -> TrajectoryGroup:
        """A group none of whose episodes can be trained on, with the cause."""
        trajs = [Trajectory.failed(task_id, tier, group_id, i, seed, error) for i in range(size)]
        return cls(group_id, task_id, tier, seed, trajs, failed=True, error=error)
