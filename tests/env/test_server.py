"""The env server, for real: ``python -m env.server`` (uvicorn) on 127.0.0.1, driven over HTTP.

- 256 sessions at once (the cap), each resetting and stepping concurrently, isolated
  from each other; session 257 gets a clear 503, over HTTP and over WebSocket;
- malformed JSON, schema errors, unknown sessions/tasks, steps before reset: clear 4xx;
- OpenEnv routes (default session and X-Session-Id), schema, metadata, WebSocket;
- the sync and async clients;
- idle sessions are reaped and their slots freed;
- request bodies over the limit get 413 before they are buffered; errors never echo input.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from env.client import AsyncEnvClient, EnvClient, EnvServerError
from tests.env.env_support import run_server

MAX_SESSIONS = 256
TASKS = {
    "tier": "beginner",
    "tasks": [
        {
            "id": "make-bucket",
            "description": "Create the S3 bucket 'finish-line'.",
            "setup": ["aws s3api create-bucket --bucket shared"],
            "solution": ["aws s3api create-bucket --bucket finish-line"],
            "checks": [
                {
                    "name": "finish-line exists",
                    "call": {
                        "service": "s3",
                        "operation": "HeadBucket",
                        "params": {"Bucket": "finish-line"},
                    },
                }
            ],
            "hints": ["S3", "CreateBucket", "aws s3api create-bucket --bucket finish-line"],
        }
    ],
}


@pytest.fixture(scope="module")
def catalog_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("catalog") / "beginner.yaml"
    path.write_text(yaml.safe_dump(TASKS))
    return path


@pytest.fixture(scope="module")
def url(catalog_file: Path) -> Iterator[str]:
    args = ["--sandbox-processes", "2", "--no-prewarm", "--max-sessions", str(MAX_SESSIONS)]
    with run_server(*args, "--catalog", str(catalog_file)) as base:
        yield base


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    assert set(body) == {"error", "message", "detail"}, body
    assert len(body["message"]) > 20, body
    return response.status_code, body["error"], body["message"]


async def _one_session(http: httpx.AsyncClient, index: int) -> tuple[str, list[str]]:
    created = await http.post("/sessions")
    assert created.status_code == 201, created.text
    sid = created.json()["session_id"]
    reset = await http.post(
        f"/sessions/{sid}/reset", json={"task_id": "make-bucket", "seed": index}
    )
    assert reset.status_code == 200, reset.text
    if index % 2:  # half the sessions send something unsafe first; nobody else notices
        bad = await http.post(
            f"/sessions/{sid}/step", json={"action": {"command": "aws s3 cp /etc/passwd s3://x/y"}}
        )
        assert bad.status_code == 200 and not bad.json()["observation"]["command_success"]
    for command in (
        f"aws s3api put-object --bucket shared --key only-{index}",
        "aws s3api list-objects-v2 --bucket shared --query Contents[].Key",
    ):
        step = await http.post(f"/sessions/{sid}/step", json={"action": {"command": command}})
        assert step.status_code == 200, step.text
        observation = step.json()["observation"]
        assert observation["command_success"], observation["error"]
    return sid, json.loads(observation["output"])


def test_256_concurrent_sessions_and_the_cap(url: str) -> None:
    assert httpx.get(f"{url}/stats").json()["active_sessions"] == 0

    async def drive() -> None:
        limits = httpx.Limits(max_connections=MAX_SESSIONS + 16)
        async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
            results = await asyncio.gather(*(_one_session(http, i) for i in range(MAX_SESSIONS)))
            assert [keys for _, keys in results] == [[f"only-{i}"] for i in range(MAX_SESSIONS)]
            stats = (await http.get("/stats")).json()
            assert stats["active_sessions"] == MAX_SESSIONS
            over = await http.post("/sessions")
            assert error_of(over)[:2] == (503, "capacity")
            assert over.headers["retry-after"]
            with connect(url.replace("http", "ws") + "/ws") as ws:
                message = json.loads(ws.recv(timeout=30))
            assert message["type"] == "error" and message["data"]["code"] == "CAPACITY_REACHED"
            default_route = await http.post("/reset", json={})
            assert error_of(default_route)[:2] == (503, "capacity")
            deleted = await asyncio.gather(*(http.delete(f"/sessions/{sid}") for sid, _ in results))
            assert {r.status_code for r in deleted} == {204}
            again = await http.post("/sessions")  # slots are free again
            assert again.status_code == 201
            assert (await http.delete(f"/sessions/{again.json()['session_id']}")).status_code == 204

    asyncio.run(drive())


def test_malformed_requests_get_clear_4xx(url: str, request: pytest.FixtureRequest) -> None:
    with httpx.Client(base_url=url, timeout=60) as http:
        assert error_of(
            http.post("/sessions/nope/step", json={"action": {"command": "aws s3 ls"}})
        )[:2] == (404, "unknown_session")
        assert error_of(http.delete("/sessions/nope"))[:2] == (404, "unknown_session")
        assert error_of(http.get("/sessions/nope/state"))[:2] == (404, "unknown_session")
        bad_json = http.post(
            "/sessions/nope/step",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
        assert error_of(bad_json)[:2] == (400, "invalid_json")
        no_type = http.post("/sessions/nope/step", content=b"{not json")
        assert error_of(no_type)[:2] == (400, "invalid_json")
        missing = http.post("/sessions/nope/step", json={"action": {}})
        status, code, message = error_of(missing)
        assert (status, code) == (422, "invalid_request") and "command" in message
        extra = http.post("/sessions/nope/step", json={"action": {"command": "aws s3 ls", "x": 1}})
        assert error_of(extra)[:2] == (422, "invalid_request")
        too_long = http.post("/sessions/nope/step", json={"action": {"command": "a" * 9000}})
        assert error_of(too_long)[:2] == (422, "invalid_request")
        negative_seed = http.post("/reset", json={"seed": -1})
        assert error_of(negative_seed)[:2] == (422, "invalid_request")


def _raw_request(url: str, head: bytes, chunks: list[bytes]) -> bytes:
    """Send a request over a plain socket (sending stops if the server hangs up); the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head)
        with contextlib.suppress(OSError):  # the server may close before all of it is sent
            for chunk in chunks:
                sock.sendall(chunk)
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
        return answer


def test_bodies_over_the_limit_get_413_and_errors_never_echo_input(url: str) -> None:
    # A declared length over the limit is refused before any of the body is sent.
    head = (
        b"POST /sessions/nope/step HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000000000\r\n\r\n"
    )
    assert _raw_request(url, head, []).startswith(b"HTTP/1.1 413")
    # A chunked body (no length) is counted as it arrives and cut off past the limit.
    head = (
        b"POST /sessions/nope/step HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    piece = b"a" * (256 * 1024)
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    assert _raw_request(url, head, [chunk] * 8 + [b"0\r\n\r\n"]).startswith(b"HTTP/1.1 413")
    with httpx.Client(base_url=url, timeout=60) as http:
        big = http.post("/reset", content=b"x" * (2 << 20))
        assert error_of(big)[:2] == (413, "body_too_large")
        # Validation errors say where and what, never what was sent.
        secret = "s3cr3t-" * 1200
        too_long = http.post("/sessions/nope/step", json={"action": {"command": secret}})
        assert error_of(too_long)[:2] == (422, "invalid_request")
        assert "s3cr3t" not in too_long.text
        assert all(set(e) <= {"type", "loc", "msg"} for e in too_long.json()["detail"])
        bad_json = http.post(
            "/reset", content=b'{"seed": "s3cr3t', headers={"content-type": "application/json"}
        )
        assert error_of(bad_json)[:2] == (400, "invalid_json") and "s3cr3t" not in bad_json.text
        fine = http.post("/sessions")  # the server is unharmed
        assert fine.status_code == 201
        assert http.delete(f"/sessions/{fine.json()['session_id']}").status_code == 204
    with connect(url.replace("http", "ws") + "/ws") as ws:
        ws.send(json.dumps({"type": "step", "data": {"command": "x" * (2 << 20)}}))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009  # message too big


def test_idle_sessions_are_reaped_and_errors_explain(catalog_file: Path) -> None:
    args = [
        "--sandbox-processes",
        "1",
        "--no-prewarm",
        "--max-sessions",
        "2",
        "--idle-timeout",
        "1",
    ]
    with (
        run_server(*args, "--catalog", str(catalog_file)) as base,
        httpx.Client(base_url=base, timeout=60) as http,
    ):
        first = http.post("/sessions").json()["session_id"]
        second = http.post("/sessions").json()["session_id"]
        assert error_of(http.post("/sessions"))[:2] == (503, "capacity")
        # Freed before anything slow runs: on a loaded box a reset can outlast the idle timeout,
        # and a session idle that long is (rightly) reaped before the client deletes it.
        assert http.delete(f"/sessions/{second}").status_code == 204
        third = http.post("/sessions").json()["session_id"]  # the freed slot is reusable
        assert error_of(
            http.post(f"/sessions/{first}/step", json={"action": {"command": "aws s3 ls"}})
        )[:2] == (409, "not_reset")
        unknown = http.post(f"/sessions/{first}/reset", json={"task_id": "no-such-task"})
        status, code, message = error_of(unknown)
        assert (status, code) == (404, "unknown_task") and "GET /tasks" in message
        assert (
            http.post(f"/sessions/{first}/reset", json={"task_id": "make-bucket"}).status_code
            == 200
        )
        deadline = time.monotonic() + 60.0  # the reaper runs every idle_timeout / 4
        while http.get("/stats").json()["active_sessions"] and time.monotonic() < deadline:
            time.sleep(0.5)
        gone = http.post(f"/sessions/{first}/step", json={"action": {"command": "aws s3 ls"}})
        status, code, message = error_of(gone)
        assert (status, code) == (404, "unknown_session") and "without requests" in message
        assert error_of(http.get(f"/sessions/{third}/state"))[:2] == (404, "unknown_session")
        stats = http.get("/stats").json()
        assert stats["active_sessions"] == 0 and stats["reaped_sessions"] >= 2
        assert http.post("/sessions").status_code == 201


def test_openenv_routes_schema_and_metadata(url: str) -> None:
    with httpx.Client(base_url=url, timeout=60) as http:
        assert http.get("/health").json() == {"status": "healthy"}
        schema = http.get("/schema").json()
        assert schema["action"]["required"] == ["command"]
        assert "partial_progress" in schema["observation"]["properties"]
        assert "step_count" in schema["state"]["properties"]
        meta = http.get("/metadata").json()
        assert "aws help --task-hint" in meta["system_prompt"] and meta["task_count"] == 1
        assert [t["id"] for t in http.get("/tasks").json()] == ["make-bucket"]
        # Without a session header: one shared default session, as single-env clients expect.
        reset = http.post("/reset", json={"task_id": "make-bucket", "seed": 1}).json()
        assert reset["reward"] is None and reset["done"] is False
        assert reset["observation"]["task"]["id"] == "make-bucket"
        step = http.post("/step", json={"action": {"command": "aws s3api list-buckets"}}).json()
        assert step["observation"]["command_success"] and step["observation"]["step"] == 1
        assert http.get("/state").json()["step_count"] == 1
        # With X-Session-Id: that session, independent of the default one.
        sid = http.post("/sessions").json()["session_id"]
        headers = {"X-Session-Id": sid}
        http.post("/reset", json={"task_id": "make-bucket"}, headers=headers)
        done = http.post(
            "/step",
            json={"action": {"command": "aws s3api create-bucket --bucket finish-line"}},
            headers=headers,
        ).json()
        assert done["done"] and done["observation"]["task_achieved"] and done["reward"] > 1
        assert http.get("/state", headers=headers).json()["task_achieved"]
        assert http.get("/state").json()["task_achieved"] is False
        assert http.delete(f"/sessions/{sid}").status_code == 204


def test_websocket_protocol(url: str) -> None:
    with connect(url.replace("http", "ws") + "/ws") as ws:

        def ask(message: object) -> dict:
            ws.send(message if isinstance(message, str) else json.dumps(message))
            return json.loads(ws.recv(timeout=60))

        reset = ask({"type": "reset", "data": {"task_id": "make-bucket", "seed": 2}})
        assert reset["type"] == "observation" and reset["data"]["done"] is False
        step = ask({"type": "step", "data": {"command": "aws s3api list-buckets"}})
        assert step["type"] == "observation" and step["data"]["observation"]["command_success"]
        refused = ask({"type": "step", "data": {"command": "aws s3 ls | head"}})
        assert not refused["data"]["observation"]["command_success"]
        state = ask({"type": "state"})
        assert state["type"] == "state" and state["data"]["step_count"] == 2
        assert ask("{oops")["data"]["code"] == "INVALID_JSON"
        assert ask({"type": "dance"})["data"]["code"] == "UNKNOWN_TYPE"
        invalid = ask({"type": "step", "data": {"cmd": "aws s3 ls"}})
        assert invalid["data"]["code"] == "VALIDATION_ERROR"
        unknown_task = ask({"type": "reset", "data": {"task_id": "nope"}})
        assert unknown_task["data"]["code"] == "UNKNOWN_TASK"
        ws.send(json.dumps({"type": "close"}))
    # The server ends the WebSocket's session as the connection closes (only the shared
    # default session of the previous test stays).
    deadline = time.monotonic() + 10
    while httpx.get(f"{url}/stats").json()["active_sessions"] > 1:
        assert time.monotonic() < deadline, "the WebSocket session was not closed"
        time.sleep(0.05)


def test_sync_and_async_clients(url: str) -> None:
    with EnvClient(url) as env:
        obs = env.reset(task_id="make-bucket", seed=4)
        assert obs.task is not None and obs.reward is None
        hint = env.step("aws help --task-hint")
        assert hint.hint_text == "S3" and hint.hints_used == 1
        assert env.step("aws s3api create-bucket --bucket finish-line").task_achieved
        assert env.state().finish_reason == "achieved"
        with pytest.raises(EnvServerError) as failure:
            env.reset(task_id="missing")
        assert failure.value.status == 404 and failure.value.code == "unknown_task"

    async def many() -> list[bool]:
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:

            async def one(seed: int) -> bool:
                async with AsyncEnvClient(url, client=http) as env:
                    await env.reset(task_id="make-bucket", seed=seed)
                    obs = await env.step("aws s3api create-bucket --bucket finish-line")
                    return obs.task_achieved and (await env.state()).step_count == 1

            return await asyncio.gather(*(one(seed) for seed in range(16)))

    assert all(asyncio.run(many()))


def test_the_farms_openenv_backend_plays_this_server_by_url(url):
    """``env.backend: openenv`` speaks the OpenEnv wire format: it plays an AWS episode here with
    a declared mapping (the reply goes into ``command``, the ``task_achieved`` field is success)."""
    from rollout.config import EnvSettings
    from rollout.env_backends import open_sessions

    settings = EnvSettings(
        backend="openenv", url=url, tasks=[{"id": "make-bucket", "tier": "beginner"}],
        openenv={"action_field": "command", "success_field": "task_achieved"},
    )  # fmt: skip

    async def play() -> tuple:
        session = open_sessions(settings, max_steps=5).new()
        try:
            first = await session.reset("make-bucket", 3)
            miss = await session.step("aws s3api list-buckets")
            hit = await session.step("aws s3api create-bucket --bucket finish-line")
        finally:
            await session.close()
        return first, miss, hit

    first, miss, hit = asyncio.run(play())
    assert "finish-line" in first.text  # the task, as the server's observation fields
    assert not miss.success and "shared" in miss.text
    assert hit.success and hit.done and hit.reward > miss.reward
