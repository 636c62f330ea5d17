"""The policies an eval can score: an engine pinned to one adapter version, or an endpoint.

Both answer ``reply(messages)`` (one greedy chat reply, for the dataset eval) and ``play(...)``
(one episode under the live eval's limits: greedy, or sampled with per-turn seeds).
``EnginePolicy`` renders prompts with the tokenizer's
own chat template and plays episodes through the real rollout loop (``rollout.group.run_group``),
exactly as training does. ``EndpointPolicy`` talks to any OpenAI-compatible chat endpoint, which
sees messages, not token ids, so its episodes go through a small message-level loop instead.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from cluster.evaluation.scoring import EpisodeRecord, record_from_trajectory
from rollout.env_contract import EnvSession
from rollout.episode_loop import EpisodeLimits, Generator
from rollout.group import EnvCallError, GroupSpec, TimedEnv, run_group
from rollout.worker import PinnedEngine
from serving.types import SamplingSpec

# An endpoint that does not answer one request in this long is treated as down for that request:
# a hung server must cost one row, not the whole eval.
ENDPOINT_TIMEOUT_S = 120.0


class PromptTooLongError(ValueError):
    """The rendered prompt plus the reply budget does not fit the engine's context window."""


@dataclass
class EnginePolicy:
    """A token-level generator (an ``EnginePool`` or a fake) pinned to ``version`` (0 = base)."""

    name: str
    generator: Generator
    tokenizer: object
    version: int = 0
    max_model_len: int = 4096

    async def reply(self, messages: list[dict], max_tokens: int) -> str:
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if len(ids) + max_tokens > self.max_model_len:
            raise PromptTooLongError(
                f"prompt of {len(ids)} tokens + {max_tokens} reply tokens exceeds the context "
                f"window of {self.max_model_len}"
            )
        eos = self.tokenizer.eos_token_id
        sampling = SamplingSpec(max_tokens=max_tokens, temperature=0.0, stop_token_ids=(eos,))
        completion = await self.generator.generate(ids, sampling, self.version)
        out = list(completion.token_ids)
        if out and out[-1] == eos:
            out = out[:-1]
        return self.tokenizer.decode(out, skip_special_tokens=False)

    async def play(
        self,
        task_id: str,
        tier: str,
        seed: int,
        episodes: int,
        new_env: Callable[[], EnvSession],
        limits: EpisodeLimits,
        env_timeout_s: float,
    ) -> list[EpisodeRecord]:
        """``episodes`` episodes of one task from ``seed``, as one group of the rollout loop."""
        spec = GroupSpec(task_id, tier, seed, f"eval-{uuid.uuid4().hex[:8]}", size=episodes)
        group = await run_group(
            spec, new_env, PinnedEngine(self.generator, self.version), self.tokenizer, limits,
            env_timeout_s=env_timeout_s,
        )  # fmt: skip
        return [record_from_trajectory(t) for t in group.trajectories]


def chat_url(endpoint: str) -> str:
    """The chat-completions URL of an endpoint given as its root or its ``/v1`` base."""
    base = endpoint.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    if not base.endswith("/v1"):
        base += "/v1"
    return base + "/chat/completions"


@dataclass
class EndpointPolicy:
    """Any OpenAI-compatible chat endpoint serving ``model``: greedy for the dataset eval, at the
    live eval's temperature for episodes."""

    name: str
    url: str
    model: str
    _client: object = field(default=None, repr=False)

    def _http(self):
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(timeout=ENDPOINT_TIMEOUT_S)
        return self._client

    async def check(self) -> None:
        """Fail early, with the fix, when the endpoint is unreachable or lacks the model."""
        import httpx

        models_url = chat_url(self.url).removesuffix("/chat/completions") + "/models"
        try:
            response = await self._http().get(models_url)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise ConnectionError(
                f"endpoint {self.url} did not answer GET {models_url} ({exc}); start the server "
                "(e.g. `rlfarm serve --adapter DIR`) or fix --endpoint"
            ) from exc
        served = {m.get("id") for m in response.json().get("data", [])}
        if served and self.model not in served:
            raise ValueError(
                f"endpoint {self.url} serves {sorted(served)}, not {self.model!r}: "
                "fix --endpoint-model"
            )

    async def reply(self, messages: list[dict], max_tokens: int, temperature: float = 0.0) -> str:
        # No per-request seed: vLLM's CPU server (`rlfarm serve` here) dies on a seeded request
        # whose prompt it prefills in chunks (serving/engine.py), so endpoint draws are unseeded.
        payload = {
            "model": self.model,
            "messages": messages,
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
        response = await self._http().post(chat_url(self.url), json=payload)
        response.raise_for_status()
        return response.json()["choices"][0]["message"]["content"] or ""

    async def play(
        self,
        task_id: str,
        tier: str,
        seed: int,
        episodes: int,
        new_env: Callable[[], EnvSession],
        limits: EpisodeLimits,
        env_timeout_s: float,
    ) -> list[EpisodeRecord]:
        """``episodes`` episodes of one task from ``seed``, concurrently, each its own draw."""

        async def one() -> EpisodeRecord:
            env = TimedEnv(new_env(), env_timeout_s)
            try:
                return await chat_episode(task_id, tier, seed, env, self, limits)
            except EnvCallError as exc:
                return EpisodeRecord(task_id, tier, seed, 0.0, False, 0, 0.0, 0, 0, error=str(exc))
            finally:
                await env.close()

        return list(await asyncio.gather(*(one() for _ in range(episodes))))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


async def chat_episode(
    task_id: str,
    tier: str,
    seed: int,
    env: EnvSession,
    policy: EndpointPolicy,
    limits: EpisodeLimits,
) -> EpisodeRecord:
    """One episode at the message level: the same env contract and stopping rules as
    ``rollout.episode_loop.run_episode``, for policies that take messages rather than token ids."""
    first = await env.reset(task_id, seed)
    messages = [{"role": "user", "content": first.text}]
    if env.system_prompt is not None:
        messages.insert(0, {"role": "system", "content": env.system_prompt})
    reward, progress, hints, failures, achieved = 0.0, 0.0, 0, 0, False
    actions: list[str | None] = []
    for _ in range(limits.max_steps):
        reply = await policy.reply(messages, limits.max_new_tokens, limits.temperature)
        result = await env.step(reply)
        failures += not result.well_formed
        actions.append(result.action)
        reward += result.reward
        progress = max(progress, result.progress)
        hints = max(hints, result.hints_used)
        if result.success:
            achieved = True
            break
        if result.done:
            break
        messages += [
            {"role": "assistant", "content": reply},
            {"role": "user", "content": result.text},
        ]
    return EpisodeRecord(
        task_id, tier, seed, reward, achieved, len(actions), progress, hints, failures,
        tuple(actions),
    )  # fmt: skip
