"""Groups of episodes against the real env (moto sandboxes, in-process and over HTTP).

The policy here is ``ScriptedEngine``, a hand-written fake of the engine pool that answers each
turn with a fixed command, as token ids with logprobs, exactly as the engine would: it lets these
tests check the episode loop, token exactness, rewards and failure handling without sampling.
The engine itself is tested against real vLLM in tests/serving and tests/cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest
from transformers import AutoTokenizer

from env.prompts import SYSTEM_PROMPT, render_observation, render_task
from rollout.aws_backend import AwsSession, HttpTransport, LocalTransport
from rollout.episode_loop import EpisodeLimits
from rollout.group import GroupSpec, run_group
from serving.types import Completion
from tests.env.env_support import run_server

WRONG, RIGHT = "aws s3api list-bucket", "aws s3api list-buckets"


class ScriptedEngine:
    """Fake engine: replies ``script[turn]`` (turn = how many replies this prompt already has)."""

    def __init__(self, tokenizer, script: list[str], on_call=None) -> None:
        self.tokenizer, self.script, self.on_call = tokenizer, script, on_call
        self.calls = 0
        self.route_keys: list[str | None] = []

    async def generate(
        self, prompt_token_ids, sampling, adapter_version=None, route_key=None
    ) -> Completion:
        self.calls += 1
        self.route_keys.append(route_key)
        if self.on_call is not None:
            self.on_call(self.calls)
        turn = sum(1 for t in prompt_token_ids if t == self.tokenizer.eos_token_id) - 2
        text = self.script[min(turn, len(self.script) - 1)]
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        ids.append(self.tokenizer.eos_token_id)
        return Completion(
            token_ids=ids, logprobs=[-0.5] * len(ids), finish_reason="stop",
            adapter_version=3, prompt_tokens=len(prompt_token_ids),
        )  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer(tiny_model_path):
    return AutoTokenizer.from_pretrained(tiny_model_path)


@pytest.fixture(scope="module")
def env_pool():
    from env.sandbox_pool import SandboxPool

    pool = SandboxPool(processes=1, prewarm=False).start()
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def catalog():
    from env.catalog import load_catalog

    return load_catalog()


LIMITS = EpisodeLimits(max_steps=4, max_model_len=2048, max_new_tokens=32)
SPEC = GroupSpec(task_id="s3-list-buckets", tier="warmup", seed=5, group_id="g1", size=3)


def _local(catalog, env_pool):
    executor = ThreadPoolExecutor(max_workers=8)
    return lambda: AwsSession(
        LocalTransport(catalog, env_pool, executor, LIMITS.max_steps, disrupt=False)
    )


def _check_group(group, tokenizer):
    assert not group.failed
    assert len(group.trajectories) == SPEC.size
    for traj in group.trajectories:
        assert traj.achieved and traj.end == "achieved"
        assert [t.action for t in traj.turns] == [WRONG, RIGHT]
        first, second = traj.turns
        assert not first.result.info["command_success"] and first.reward < 0
        assert second.result.success and second.reward > 0
        # Token exactness: the stream is what the chat template renders for the conversation, in
        # the env's own words (env.prompts), as SFT export renders it too.
        messages = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": render_task(_task())},
            {"role": "assistant", "content": WRONG},
            {"role": "user", "content": render_observation(
                command_success=False, error=first.result.info["error"]
            )},
            {"role": "assistant", "content": RIGHT},
        ]  # fmt: skip
        rendered = tokenizer.apply_chat_template(messages)["input_ids"]
        ids = traj.token_ids()
        assert ids == rendered[: len(ids)] and rendered[len(ids) :] == tokenizer("\n")["input_ids"]
        mask, logprobs = traj.loss_mask(), traj.behaviour_logprobs()
        assert sum(mask) == sum(len(t.completion_token_ids) for t in traj.turns)
        assert all(lp == -0.5 for lp, m in zip(logprobs, mask, strict=True) if m)
        assert all(lp == 0.0 for lp, m in zip(logprobs, mask, strict=True) if not m)
        assert traj.versions == [3, 3]
    assert len(set(group.rewards)) == 1  # same script, same initial state: same return


def _task():
    from env.catalog import load_catalog

    return load_catalog().by_id(SPEC.task_id)


def test_group_against_local_sandboxes(tokenizer, catalog, env_pool):
    engine = ScriptedEngine(tokenizer, [WRONG, RIGHT])
    group = asyncio.run(run_group(SPEC, _local(catalog, env_pool), engine, tokenizer, LIMITS))
    _check_group(group, tokenizer)
    # Every turn of every episode names the group as its route: one engine holds its prompt.
    assert engine.route_keys == [SPEC.group_id] * (SPEC.size * 2)


def test_group_against_the_env_server_over_http(tokenizer):
    engine = ScriptedEngine(tokenizer, [WRONG, RIGHT])
    with run_server("--sandbox-processes", "1", "--no-prewarm") as url:
        new_env = lambda: AwsSession(HttpTransport(url, 30.0))  # noqa: E731
        group = asyncio.run(run_group(SPEC, new_env, engine, tokenizer, LIMITS))
    _check_group(group, tokenizer)


def test_killed_sandbox_is_replaced_and_the_episode_replayed(tokenizer, catalog, env_pool):
    def kill_sandbox_once(call: int) -> None:
        if call == 1:
            os.kill(env_pool.process_pid(0), signal.SIGKILL)

    engine = ScriptedEngine(tokenizer, [WRONG, RIGHT], on_call=kill_sandbox_once)
    spec = GroupSpec("s3-list-buckets", "warmup", 5, "g2", size=1)
    group = asyncio.run(run_group(spec, _local(catalog, env_pool), engine, tokenizer, LIMITS))
    assert not group.failed, group.error
    assert group.trajectories[0].achieved
    assert engine.calls >= 3  # the killed attempt's reply, then a full replay on a fresh sandbox


def test_group_fails_whole_when_retries_run_out(tokenizer, catalog, env_pool):
    def kill_every_time(call: int) -> None:
        # The pool may not have replaced the last one yet: a sandbox already dead is the point.
        with contextlib.suppress(ProcessLookupError):
            os.kill(env_pool.process_pid(0), signal.SIGKILL)

    engine = ScriptedEngine(tokenizer, [WRONG, RIGHT], on_call=kill_every_time)
    spec = GroupSpec("s3-list-buckets", "warmup", 5, "g3", size=2)
    group = asyncio.run(
        run_group(spec, _local(catalog, env_pool), engine, tokenizer, LIMITS, attempts=2)
    )
    assert group.failed
    assert all(t.end == "failed" for t in group.trajectories)
    assert "attempt 2" in group.error
