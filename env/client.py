"""httpx clients for the env server: ``EnvClient`` (sync) and ``AsyncEnvClient``.

Each client object is one episode slot on the server (a stateful HTTP session,
created on first ``reset`` and deleted by ``close``), with the same API as the
in-process ``AwsEnv``:

    with EnvClient("http://127.0.0.1:8000") as env:
        obs = env.reset(task_id="s3-list-buckets", seed=3)
        obs = env.step("aws s3api list-buckets")

    async with AsyncEnvClient(url) as env:
        obs = await env.reset(seed=3)

An error answer of the server raises ``EnvServerError`` with its status, code and
message (e.g. 503 ``capacity``, 404 ``unknown_task``). Observations come back as the
same ``AwsObservation`` the in-process env returns.
"""

from __future__ import annotations

from typing import Any

import httpx

from env.server_auth import bearer_header
from env.types import AwsObservation, EnvState

DEFAULT_TIMEOUT_S = 180.0  # a reset with a large setup can take a while on a busy server


class EnvServerError(RuntimeError):
    """The server answered with an error."""

    def __init__(self, status: int, code: str, message: str, detail: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.detail = status, code, message, detail


def parse_observation(payload: dict[str, Any]) -> AwsObservation:
    """Rebuild an ``AwsObservation`` from the server's OpenEnv-shaped payload."""
    return AwsObservation.model_validate(
        {
            **payload["observation"],
            "reward": payload.get("reward"),
            "done": payload.get("done", False),
            "metadata": payload.get("metadata") or {},
        }
    )


def _raise_for_error(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
        code, message, detail = body["error"], body["message"], body.get("detail")
    except (ValueError, KeyError, TypeError):
        code, message, detail = "http_error", response.text[:500], None
    raise EnvServerError(response.status_code, code, message, detail)


def _reset_body(task_id: str | None, seed: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if task_id is not None:
        body["task_id"] = task_id
    if seed is not None:
        body["seed"] = seed
    return body


class EnvClient:
    """Synchronous client: one server session, ``reset``/``step``/``state``/``close``."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        client: httpx.Client | None = None,
        token: str | None = None,
    ) -> None:
        self._http = client or httpx.Client(
            base_url=base_url, timeout=timeout_s, headers=bearer_header(token)
        )
        self._owns_http = client is None
        self.session_id: str | None = None

    def reset(self, task_id: str | None = None, seed: int | None = None) -> AwsObservation:
        if self.session_id is None:
            response = self._http.post("/sessions")
            _raise_for_error(response)
            self.session_id = response.json()["session_id"]
        response = self._http.post(
            f"/sessions/{self.session_id}/reset", json=_reset_body(task_id, seed)
        )
        _raise_for_error(response)
        return parse_observation(response.json())

    def step(self, command: str) -> AwsObservation:
        response = self._http.post(
            f"/sessions/{self._sid()}/step", json={"action": {"command": command}}
        )
        _raise_for_error(response)
        return parse_observation(response.json())

    def state(self) -> EnvState:
        response = self._http.get(f"/sessions/{self._sid()}/state")
        _raise_for_error(response)
        return EnvState.model_validate(response.json())

    def close(self) -> None:
        """Delete the server session (idempotent) and the HTTP connection pool we own."""
        try:
            if self.session_id is not None:
                response = self._http.delete(f"/sessions/{self.session_id}")
                self.session_id = None
                if response.status_code != 404:  # already reaped: nothing to free
                    _raise_for_error(response)
        finally:
            if self._owns_http:
                self._http.close()

    def _sid(self) -> str:
        if self.session_id is None:
            raise RuntimeError("call reset() before step() or state()")
        return self.session_id

    def __enter__(self) -> EnvClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncEnvClient:
    """Asynchronous client (httpx.AsyncClient); share one ``client`` among many for speed."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        client: httpx.AsyncClient | None = None,
        token: str | None = None,
    ) -> None:
        self._http = client or httpx.AsyncClient(
            base_url=base_url, timeout=timeout_s, headers=bearer_header(token)
        )
        self._owns_http = client is None
        self.session_id: str | None = None

    async def open(self) -> str:
        """Create the server session now (``reset`` does it when needed)."""
        if self.session_id is None:
            response = await self._http.post("/sessions")
            _raise_for_error(response)
            self.session_id = response.json()["session_id"]
        return self.session_id

    async def reset(self, task_id: str | None = None, seed: int | None = None) -> AwsObservation:
        sid = await self.open()
        response = await self._http.post(f"/sessions/{sid}/reset", json=_reset_body(task_id, seed))
        _raise_for_error(response)
        return parse_observation(response.json())

    async def step(self, command: str) -> AwsObservation:
        response = await self._http.post(
            f"/sessions/{self._sid()}/step", json={"action": {"command": command}}
        )
        _raise_for_error(response)
        return parse_observation(response.json())

    async def state(self) -> EnvState:
        response = await self._http.get(f"/sessions/{self._sid()}/state")
        _raise_for_error(response)
        return EnvState.model_validate(response.json())

    async def close(self) -> None:
        try:
            if self.session_id is not None:
                response = await self._http.delete(f"/sessions/{self.session_id}")
                self.session_id = None
                if response.status_code != 404:
                    _raise_for_error(response)
        finally:
            if self._owns_http:
                await self._http.aclose()

    def _sid(self) -> str:
        if self.session_id is None:
            raise RuntimeError("call reset() before step() or state()")
        return self.session_id

    async def __aenter__(self) -> AsyncEnvClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
