"""Shaped reward for the AWS tasks, and the guarantee that finishing always wins.

The reward of one step is

    r_t = w * (p_t - p_{t-1})            progress gained (negative if state regressed)
        + B * [task first achieved at t]  completion bonus
        - h * [step was a hint request]   cost per hint (``aws help --task-hint``)
        - f * [command failed or refused] cost per failed/invalid command
        - e * [step was a help page]      cost per help page (``aws <service> help``)
        - c                               step cost

where ``p_t`` is the grader's partial progress in [0, 1] after step t (1 only when the
task is achieved) and ``p_0`` is the progress right after reset.

Why finishing dominates stalling. The progress terms telescope: over any episode
they sum to ``w * (p_T - p_0)``, whatever path the state took (undoing and redoing
work, or a disruption, earns nothing net). An episode ends when the task is
achieved or after ``M = max_steps`` steps, and the agent has no action that ends it
early, so a policy that never finishes pays the step cost ``M`` times. Comparing a
finisher (achieves at step ``T <= M`` with ``H`` hints and ``F`` failed commands) with
any staller (ends at ``p' < 1`` after ``M`` steps, with ``H'`` hints and ``F'`` failures):

    R_finish - R_stall = w(1 - p') + B - (T - M)c - Hh - Ff + H'h + F'f
                       > B - H_max * h - M * f

since ``p' < 1``, ``T <= M``, ``H <= H_max`` and ``F <= M`` (a help page counts like a
failure here, with ``max(f, e)``). So ``B > H_max*h + M*max(f, e)`` guarantees every finishing
trajectory out-scores every stalling one, for every step count up to ``M``;
``RewardConfig.check_finishing_dominates`` enforces it and tests/env/test_reward.py checks it
over enumerated and random trajectories.

Why a help page costs as much as a failed command. A help page changes nothing and cannot fail,
so at the step cost alone it is the safest move a policy has: in a group where nothing succeeds,
the episodes that asked for help out-score the ones that tried a command and failed, and GRPO
teaches "ask for help instead of trying" (seen in the SmolLM2 runs). At ``e = f`` trying and
asking cost the same, and only progress separates episodes.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field


class RewardConfig(BaseModel):
    """Weights of the shaped reward (see the module docstring for the formula)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    progress_weight: float = Field(
        default=1.0, gt=0, description="w: reward per unit of progress gained."
    )
    completion_bonus: float = Field(
        default=1.0, gt=0, description="B: paid once, on the step that achieves the task."
    )
    hint_cost: float = Field(default=0.1, ge=0, description="h: cost of each hint request.")
    failure_cost: float = Field(
        default=0.02, ge=0, description="f: cost of a failed, refused or invalid command."
    )
    help_cost: float = Field(
        default=0.02,
        ge=0,
        description="e: cost of a help page (`aws <service> [<operation>] help`): a no-op that "
        "cannot fail must not be cheaper than trying a command.",
    )
    step_cost: float = Field(default=0.01, ge=0, description="c: cost of every step.")

    def check_finishing_dominates(self, max_steps: int, max_hints: int) -> None:
        """Raise ``ValueError`` unless every finisher out-scores every staller.

        The condition is ``completion_bonus > max_hints*hint_cost + max_steps*max(failure_cost,
        help_cost)``.
        """
        per_step = max(self.failure_cost, self.help_cost)
        worst = max_hints * self.hint_cost + max_steps * per_step
        if not self.completion_bonus > worst:
            raise ValueError(
                f"reward config lets a policy that stalls beat one that finishes: "
                f"completion_bonus={self.completion_bonus} must exceed "
                f"max_hints*hint_cost + max_steps*max(failure_cost, help_cost) = {max_hints}*"
                f"{self.hint_cost} + {max_steps}*{per_step} = {worst:g}. Raise completion_bonus, "
                f"lower hint_cost/failure_cost/help_cost, or lower max_steps"
            )


@dataclass(frozen=True)
class StepOutcome:
    """What one step did, as far as the reward is concerned."""

    progress_before: float
    progress_after: float
    newly_achieved: bool
    hint: bool
    failed: bool
    help_page: bool = False


def step_reward(config: RewardConfig, outcome: StepOutcome) -> float:
    """The shaped reward of one step (the formula in the module docstring)."""
    reward = config.progress_weight * (outcome.progress_after - outcome.progress_before)
    if outcome.newly_achieved:
        reward += config.completion_bonus
    if outcome.hint:
        reward -= config.hint_cost
    if outcome.failed:
        reward -= config.failure_cost
    if outcome.help_page:
        reward -= config.help_cost
    return reward - config.step_cost
