"""Any OpenEnv server, by URL, behind the rollout contract (``env.backend: openenv``).

One episode is one WebSocket session on the server's ``/ws`` endpoint, in OpenEnv's wire format:
the client sends ``{"type": "reset", "data": {seed, episode_id, <task_field>: task}}`` and
``{"type": "step", "data": {<action_field>: reply}}``, and gets back ``{"type": "observation",
"data": {"observation": {...}, "reward": r, "done": d}}`` (or ``{"type": "error", ...}``);
``{"type": "close"}`` ends it. Each server session owns its own env instance, so episodes never
share state. ``env.openenv`` (``OpenEnvMapping``) declares how a reply becomes an action and an
observation becomes the next user turn; nothing else about the env is assumed.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from rollout.config import EnvSettings, OpenEnvMapping
from rollout.env_backends import Renamer
from rollout.env_contract import EnvTask, StepResult

MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class OpenEnvError(RuntimeError):
    """The server answered a message with an error, or with something not in OpenEnv's shape."""


def ws_url(url: str) -> str:
    """The server's WebSocket endpoint for a base URL given as http(s):// or ws(s)://."""
    base = url.rstrip("/")
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if base.startswith(http):
            base = ws + base[len(http) :]
    return base if base.endswith("/ws") else base + "/ws"


def observation_text(observation: dict[str, Any], mapping: OpenEnvMapping) -> str:
    """The next user turn: the mapped field, or every field as ``key: value`` lines."""
    if mapping.observation_field is not None:
        if mapping.observation_field not in observation:
            raise OpenEnvError(
                f"the observation has no field {mapping.observation_field!r} "
                f"(env.openenv.observation_field); it has {sorted(observation)}"
            )
        value = observation[mapping.observation_field]
        return value if isinstance(value, str) else json.dumps(value)
    lines = []
    for key, value in observation.items():
        if value in (None, "", [], {}):
            continue
        lines.append(f"{key}: {value if isinstance(value, str) else json.dumps(value)}")
    return "\n".join(lines)


def to_result(payload: dict[str, Any], mapping: OpenEnvMapping, action: str | None) -> StepResult:
    """One OpenEnv observation payload as the rollout loop's result."""
    if not isinstance(payload, dict) or not isinstance(payload.get("observation"), dict):
        raise OpenEnvError(f"not an OpenEnv observation payload: {str(payload)[:200]}")
    observation = payload["observation"]
    success = bool(mapping.success_field and observation.get(mapping.success_field))
    progress = (
        float(observation.get(mapping.progress_field) or 0.0) if mapping.progress_field else 0.0
    )
    return StepResult(
        text=observation_text(observation, mapping),
        reward=float(payload.get("reward") or 0.0),
        done=bool(payload.get("done")) or success,
        success=success,
        progress=progress,
        action=action,
        info={"observation": observation, **(payload.get("metadata") or {})},
    )


class OpenEnvSession:
    """One WebSocket session: an env instance on the server for one episode."""

    def __init__(
        self, url: str, mapping: OpenEnvMapping, system_prompt: str | None,
        token: str | None = None,
    ) -> None:  # fmt: skip
        self.url, self.mapping, self.system_prompt = url, mapping, system_prompt
        self.token = token
        self._ws = None

    async def _send(self, message: dict[str, Any]) -> dict[str, Any]:
        from websockets.asyncio.client import connect

        if self._ws is None:
            from env.server_auth import bearer_header

            self._ws = await connect(
                self.url, max_size=MAX_MESSAGE_BYTES, open_timeout=30,
                additional_headers=bearer_header(self.token),
            )  # fmt: skip
        await self._ws.send(json.dumps(message))
        answer = json.loads(await self._ws.recv())
        if answer.get("type") == "error":
            data = answer.get("data") or {}
            raise OpenEnvError(f"{data.get('code', 'error')}: {data.get('message', data)}")
        if answer.get("type") != "observation":
            raise OpenEnvError(f"expected an observation, got {str(answer)[:200]}")
        return answer.get("data") or {}

    async def reset(self, task_id: str, seed: int) -> StepResult:
        data = {"seed": seed, "episode_id": uuid.uuid4().hex, self.mapping.task_field: task_id}
        payload = await self._send({"type": "reset", "data": data})
        return to_result(payload, self.mapping, None)

    async def step(self, reply: str) -> StepResult:
        payload = await self._send({"type": "step", "data": {self.mapping.action_field: reply}})
        return to_result(payload, self.mapping, reply)

    async def close(self) -> None:
        if self._ws is None:
            return
        ws, self._ws = self._ws, None
        try:
            await ws.send(json.dumps({"type": "close"}))
        finally:
            await ws.close()


class OpenEnvSessions:
    """Fresh sessions on the OpenEnv server at ``env.url`` (its tasks are ``env.tasks``, read
    by ``OpenEnvBackend.tasks``)."""

    def __init__(self, settings: EnvSettings) -> None:
        self.settings = settings
        self.url = ws_url(settings.url or "")

    def new(self) -> OpenEnvSession:
        settings = self.settings
        return OpenEnvSession(self.url, settings.openenv, settings.system_prompt, settings.token)

    def sandbox_pid(self) -> int | None:
        return None

    def close(self) -> None:
        """Sessions close themselves at the end of each episode; nothing is held here."""


class OpenEnvBackend:
    """An OpenEnv server as the farm sees it (registered as ``openenv``): the tasks the config
    lists in ``env.tasks``; no renamed copies, no operations."""

    tiers: tuple[str, ...] = ()

    def sessions(self, settings: EnvSettings, max_steps: int, threads: int) -> OpenEnvSessions:
        return OpenEnvSessions(settings)

    def tasks(self, settings: EnvSettings) -> list[EnvTask]:
        return [EnvTask(t.id, t.tier) for t in settings.tasks or []]

    def renamer(self, settings: EnvSettings) -> Renamer:
        return Renamer()

    def operations(self, settings: EnvSettings, task_ids: list[str]) -> dict[str, list[str]]:
        return {}


BACKEND = OpenEnvBackend()
