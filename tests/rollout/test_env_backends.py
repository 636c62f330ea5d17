"""Generic env backends without an engine: a Python env class by entry point, and its mistakes
named clearly (a factory that does not import, an env without tasks, a wrong result type)."""

from __future__ import annotations

import asyncio

import pytest

from rollout.config import EnvSettings
from rollout.env_backends import env_tasks, open_sessions
from rollout.python_backend import EnvFactoryError

FACTORY = "tests.envs.word_env:WordEnv"


def test_a_python_env_plays_through_the_contract_with_its_own_tasks_and_tiers():
    settings = EnvSettings(backend="python", factory=FACTORY)
    tasks = env_tasks(settings)
    assert {t.tier for t in tasks} == {"short", "long"} and len(tasks) == 12
    sessions = open_sessions(settings, max_steps=2)

    async def play():
        session = sessions.new()
        first = await session.reset("type-cat", 1)
        wrong = await session.step("cap")
        right = await session.step("cat")
        return session.system_prompt, first, wrong, right

    try:
        system, first, wrong, right = asyncio.run(play())
    finally:
        sessions.close()
    assert system.startswith("Type back") and first.text.endswith(": cat")
    assert 0 < wrong.reward < 1 and not wrong.success and not wrong.done
    assert right.reward == 1.0 and right.success and right.done


def test_config_tasks_override_the_class_and_untiered_tasks_get_one_tier():
    settings = EnvSettings(backend="python", factory=FACTORY, tasks=["type-cat", "type-dog"])
    assert [(t.id, t.tier) for t in env_tasks(settings)] == [
        ("type-cat", "default"), ("type-dog", "default"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("no_such_module:Env", "cannot import 'no_such_module'"),
        ("tests.envs.word_env:Missing", "has no callable 'Missing'"),
        ("tests.envs.openenv_server:build_app", "declares no tasks"),
    ],
)
def test_a_bad_factory_is_named_with_the_fix(factory, message):
    with pytest.raises(EnvFactoryError, match=message):
        env_tasks(EnvSettings(backend="python", factory=factory))


def test_backend_settings_say_what_is_missing():
    with pytest.raises(ValueError, match=r"env\.factory"):
        EnvSettings(backend="python")
    with pytest.raises(ValueError, match=r"env\.url"):
        EnvSettings(backend="openenv", tasks=["a"])
    with pytest.raises(ValueError, match=r"env\.tasks"):
        EnvSettings(backend="openenv", url="http://127.0.0.1:1")
