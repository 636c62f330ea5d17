"""The multi-turn episode loop: prompt -> engine -> env.step(reply) -> next user turn -> ...

One call of ``run_episode`` plays one task from a seeded initial state until the env reports
success or done, ``max_steps`` turns pass, or the next turn would not fit the context window.
The loop's ``max_steps`` bounds any env. The AWS env in local sandboxes is given the same number
and ends the episode itself at that step (``env.task_episode``), so both stop on one turn and the
env's own rules for an unfinished task apply; an env server keeps its own limit (``--max-steps``),
and whichever is smaller ends the episode.
Every turn records the prompt-side tokens, the sampled tokens with their logprobs and the adapter
version that produced them, so the learner trains on exactly what was sampled.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, replace
from typing import Protocol

from rollout.chat import Conversation
from rollout.env_contract import EnvSession
from rollout.types import Trajectory, Turn
from serving.types import SamplingSpec


class Generator(Protocol):
    """Samples a completion. ``route_key`` names the episode's group, so every turn of every
    episode of the group can go to one engine: the group's shared first prompt is prefilled once
    there, and each episode's growing conversation stays in that engine's prefix cache."""

    async def generate(
        self,
        prompt_token_ids: list[int],
        sampling: SamplingSpec,
        adapter_version: int | None = None,
        route_key: str | None = None,
    ): ...


@dataclass(frozen=True)
class EpisodeSpec:
    task_id: str
    tier: str
    seed: int
    group_id: str
    episode_index: int


@dataclass(frozen=True)
class EpisodeLimits:
    """How an episode is played. ``seeded``: every request's sampling seed is a function of the
    task, the episode's seed and index and the turn (``sampling_seed``), so a sampled evaluation
    is reproducible and two policies scored on the same episodes draw with common random numbers
    (their difference is then measured with less noise). Engines that cannot honour a seed (vLLM
    on CPU, ``serving.engine``) sample those requests unseeded: independent draws."""

    max_steps: int = 15
    max_model_len: int = 4096
    max_new_tokens: int = 96
    temperature: float = 1.0
    top_p: float = 1.0
    seeded: bool = False

    def greedy(self) -> EpisodeLimits:
        """The same limits at temperature 0 (evaluation): the policy's single best answer."""
        return replace(self, temperature=0.0, top_p=1.0)

    def sampled(self, temperature: float) -> EpisodeLimits:
        """The limits of a sampled evaluation at ``temperature`` (0: greedy), seeded draws."""
        if temperature == 0:
            return self.greedy()
        return replace(self, temperature=temperature, top_p=1.0, seeded=True)


def sampling_seed(spec: EpisodeSpec, turn: int) -> int:
    """The sampling seed of one turn of a seeded episode: stable across processes and runs."""
    key = f"{spec.task_id}/{spec.seed}/{spec.episode_index}/{turn}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "big")


async def run_episode(
    spec: EpisodeSpec,
    env: EnvSession,
    engine: Generator,
    tokenizer,
    limits: EpisodeLimits,
) -> Trajectory:
    """Play one episode. Env and engine errors propagate: the caller decides retry or failure."""
    traj = Trajectory(
        task_id=spec.task_id,
        tier=spec.tier,
        group_id=spec.group_id,
        episode_index=spec.episode_index,
        seed=spec.seed,
    )
    first = await env.reset(spec.task_id, spec.seed)
    conv, prompt_ids = Conversation.start(tokenizer, env.system_prompt, first.text)
    sampling = SamplingSpec(
        max_tokens=limits.max_new_tokens,
        temperature=limits.temperature,
        top_p=limits.top_p,
        stop_token_ids=(tokenizer.eos_token_id,),
    )
    route_key = spec.group_id  # the G episodes share their first prompt: one engine's cache
    traj.end = "max_steps"
    for turn in range(limits.max_steps):
        if len(conv.token_ids) + limits.max_new_tokens > limits.max_model_len:
            traj.end = "context_limit"
            break
        if limits.seeded:
            sampling = replace(sampling, seed=sampling_seed(spec, turn))
        started = time.perf_counter()
        completion = await engine.generate(list(conv.token_ids), sampling, route_key=route_key)
        generated = time.perf_counter()
        reply = conv.add_completion(completion.token_ids)
        result = await env.step(reply)
        traj.turns.append(
            Turn(
                prompt_token_ids=prompt_ids,
                completion_token_ids=list(completion.token_ids),
                completion_logprobs=list(completion.logprobs),
                adapter_version=completion.adapter_version,
                reply=reply,
                result=result,
                generate_s=generated - started,
                env_s=time.perf_counter() - generated,
            )
        )
        traj.format_failures += not result.well_formed
        traj.max_progress = max(traj.max_progress, result.progress)
        traj.hints_used = max(traj.hints_used, result.hints_used)
        if result.success:
            traj.achieved, traj.end = True, "achieved"
            break
        if result.done:
            traj.end = "env_done"
            break
        prompt_ids = conv.add_user(result.text)
    return traj
