"""The env server off loopback: a bearer token or nothing.

A real server (``python -m env.server``) bound to 0.0.0.0 with a token: requests without it, or
with a wrong one, get 401 and create no session; the right one is served, by the env's own
clients and by the farm's http and openenv backends; the session cap and the body limit still
hold behind the token. Settings refuse a non-loopback host without a token, and the command
generates and prints one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from env.client import EnvClient, EnvServerError
from env.server_settings import ServerSettings, add_serve_arguments, settings_from_args
from rollout.config import EnvSettings
from tests.env.env_support import run_server
from tests.env.test_server import TASKS

TOKEN = "s3cret-token-for-this-test"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    catalog = tmp_path_factory.mktemp("catalog") / "beginner.yaml"
    catalog.write_text(yaml.safe_dump(TASKS))
    args = ["--host", "0.0.0.0", "--token", TOKEN, "--sandbox-processes", "1", "--no-prewarm",
            "--max-sessions", "2", "--catalog", str(catalog)]  # fmt: skip
    with run_server(*args) as base:  # reached through 127.0.0.1, one of the bound addresses
        yield base


def _active(http: httpx.Client) -> int:
    return http.get("/stats", headers=AUTH).json()["active_sessions"]


def test_no_token_or_a_wrong_one_gets_401_and_creates_nothing(url: str) -> None:
    with httpx.Client(base_url=url, timeout=60) as http:
        assert http.get("/health").status_code == 200  # probes need no token
        before = _active(http)
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            for method, path in (("POST", "/sessions"), ("POST", "/reset"), ("GET", "/tasks")):
                answer = http.request(method, path, headers=headers)
                assert answer.status_code == 401, (method, path, headers)
                assert answer.headers["www-authenticate"] == "Bearer"
                assert answer.json()["error"] == "unauthorized"
                assert "Authorization: Bearer" in answer.json()["message"]
        assert _active(http) == before  # no session was created
    with pytest.raises(InvalidStatus) as refused, connect(url.replace("http", "ws") + "/ws"):
        pass
    assert refused.value.response.status_code == 403


def test_the_right_token_is_served_with_cap_and_body_limit_unchanged(url: str) -> None:
    client = EnvClient(url, token=TOKEN)
    try:
        first = client.reset(task_id="make-bucket", seed=1)
        assert first.task is not None and "finish-line" in first.task.description
        assert client.step("aws s3api create-bucket --bucket finish-line").task_achieved
    finally:
        client.close()
    with httpx.Client(base_url=url, timeout=60, headers=AUTH) as http:
        held = [http.post("/sessions").json()["session_id"] for _ in range(2)]
        over = http.post("/sessions")
        assert over.status_code == 503 and over.json()["error"] == "capacity"
        for session_id in held:
            assert http.delete(f"/sessions/{session_id}").status_code == 204
        big = http.post("/reset", content=b"{" + b" " * (2 << 20) + b"}",
                        headers={"content-type": "application/json"})  # fmt: skip
        assert big.status_code == 413
    with connect(url.replace("http", "ws") + "/ws", additional_headers=AUTH) as ws:
        ws.send(json.dumps({"type": "reset", "data": {"task_id": "make-bucket", "seed": 2}}))
        assert json.loads(ws.recv(timeout=60))["type"] == "observation"
    with pytest.raises(EnvServerError) as denied:
        EnvClient(url).reset(task_id="make-bucket")
    assert (denied.value.status, denied.value.code) == (401, "unauthorized")


def test_the_farms_http_and_openenv_backends_send_the_token(url: str, monkeypatch) -> None:
    from rollout.env_backends import open_sessions

    monkeypatch.setenv("RLFARM_ENV_TOKEN", TOKEN)  # where the farm finds it by default
    http_settings = EnvSettings(backend="http", url=url)
    openenv_settings = EnvSettings(
        backend="openenv", url=url, tasks=[{"id": "make-bucket", "tier": "beginner"}],
        openenv={"action_field": "command", "success_field": "task_achieved"},
    )  # fmt: skip
    assert http_settings.token == TOKEN
    assert "token" not in http_settings.model_dump()  # never written into a run's config.yaml

    async def play(settings: EnvSettings) -> bool:
        session = open_sessions(settings, max_steps=5).new()
        try:
            await session.reset("make-bucket", 3)
            return (await session.step("aws s3api create-bucket --bucket finish-line")).success
        finally:
            await session.close()

    assert asyncio.run(play(http_settings))
    assert asyncio.run(play(openenv_settings))


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return parser.parse_args(list(argv))


def test_settings_refuse_an_open_host_without_a_token_and_the_command_makes_one(
    capsys, monkeypatch
) -> None:
    monkeypatch.delenv("RLFARM_ENV_TOKEN", raising=False)
    with pytest.raises(ValueError, match="--token"):
        ServerSettings(host="0.0.0.0")
    assert ServerSettings(host="127.0.0.1").token is None  # loopback: optional
    made = settings_from_args(_args("--host", "0.0.0.0"))
    assert made.token and len(made.token) >= 32
    assert made.token in capsys.readouterr().err  # printed once, for the operator
    assert "token" not in repr(made)
    assert settings_from_args(_args("--host", "::1")).token is None
    monkeypatch.setenv("RLFARM_ENV_TOKEN", "from-env")
    assert settings_from_args(_args("--host", "10.0.0.5")).token == "from-env"


def test_no_token_is_in_a_saved_run_config(tmp_path: Path, monkeypatch) -> None:
    from cluster.base.config import load_config

    monkeypatch.setenv("RLFARM_ENV_TOKEN", TOKEN)
    config = load_config(Path(__file__).parents[2] / "configs" / "local.yaml", [])
    assert config.env.token == TOKEN
    assert TOKEN not in yaml.safe_dump(config.model_dump(mode="json"))
