"""The env server: FastAPI over an ``SandboxPool``, OpenEnv-compatible, many sessions at once.

Run it with ``rlfarm env serve --port 8000`` or ``python -m env.server --port 8000``.

Routes (JSON everywhere; every error is ``{"error": code, "message": ..., "detail": ...}``
with a 4xx/5xx status that says whose fault it was):

OpenEnv-compatible
  GET  /health     ``{"status": "healthy"}``
  GET  /metadata   name, description, version, system prompt, tiers, task count
  GET  /schema     JSON schemas of the action, observation and state
  POST /reset      body ``{"task_id"?, "seed"?, "episode_id"?}`` -> ``{"observation", "reward",
                   "done", "metadata"}``
  POST /step       body ``{"action": {"command": "aws ..."}}`` -> same shape
  GET  /state      the episode's ``EnvState``
  WS   /ws         messages ``{"type": "reset"|"step"|"state"|"close", "data": {...}}``,
                   answers ``{"type": "observation"|"state"|"error", "data": {...}}``;
                   one session per connection
  ``/reset``, ``/step`` and ``/state`` act on the session named by the ``X-Session-Id``
  header, or without it on one shared default session (what single-env OpenEnv HTTP
  clients expect).

Stateful HTTP sessions (many episodes over plain HTTP)
  POST   /sessions               -> 201 ``{"session_id", "idle_timeout_s"}``; 503 at capacity
  POST   /sessions/{id}/reset    as /reset
  POST   /sessions/{id}/step     as /step
  GET    /sessions/{id}/state    as /state
  DELETE /sessions/{id}          -> 204

Other: ``GET /tasks`` (ids, tiers, descriptions), ``GET /stats`` (sessions, sandbox processes).

Sessions are capped (``--max-sessions``, default 256; one more gets 503 with
``Retry-After``) and closed after ``--idle-timeout`` seconds without a request.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import FastAPI, Header, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from env.body_limit import BodyLimit
from env.disruption import DisruptionConfig
from env.sandbox_pool import PoolClosed, SandboxLost, SandboxPool, SandboxRequestError
from env.sandbox_process import ResetPayload
from env.server_auth import BearerAuth
from env.server_sessions import CapacityError, Session, SessionRegistry, UnknownSession
from env.server_settings import ServerSettings, add_serve_arguments, settings_from_args
from env.task_episode import EpisodeConfig
from env.types import AwsAction, AwsObservation, EnvState, ErrorBody

log = logging.getLogger(__name__)

SESSION_HEADER = "X-Session-Id"
SessionHeader = Annotated[str | None, Header(alias=SESSION_HEADER)]
RESET_TIMEOUT_S = 120.0
STATE_TIMEOUT_S = 30.0
VERSION = "0.1.0"


class ResetBody(BaseModel):
    """Body of a reset: which task (default: chosen by the seed) and which seed."""

    model_config = ConfigDict(extra="forbid")

    task_id: str | None = None
    seed: int | None = Field(default=None, ge=0)
    episode_id: str | None = Field(default=None, max_length=255)


class StepBody(BaseModel):
    """Body of a step (OpenEnv's shape): the action, plus optional fields we accept."""

    model_config = ConfigDict(extra="forbid")

    action: AwsAction
    timeout_s: float | None = Field(default=None, gt=0, description="Accepted, not used.")
    request_id: str | None = Field(default=None, max_length=255)


class ApiError(Exception):
    """An error answer: HTTP status, stable code, and a message saying what to do."""

    def __init__(self, status: int, code: str, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.detail = status, code, message, detail


def observation_payload(obs: AwsObservation) -> dict[str, Any]:
    """OpenEnv's wire shape: observation fields, with reward/done/metadata beside them."""
    data = obs.model_dump(mode="json")
    inner = {k: v for k, v in data.items() if k not in ("reward", "done", "metadata")}
    return {"observation": inner, "reward": obs.reward, "done": obs.done, "metadata": obs.metadata}


class EnvService:
    """The server's behaviour, independent of the transport (HTTP routes and WS share it)."""

    def __init__(self, settings: ServerSettings, catalog: Any, pool: SandboxPool) -> None:
        self.settings = settings
        self.catalog = catalog
        self.pool = pool
        self.registry = SessionRegistry(pool, settings.max_sessions, settings.idle_timeout_s)
        self.episode_config = EpisodeConfig(
            max_steps=settings.max_steps,
            disruption=DisruptionConfig(enabled=settings.disrupt),
            command_timeout_s=settings.command_timeout_s,
        )
        self.default_session_id: str | None = None

    # -- sessions ---------------------------------------------------------------------

    def open_session(self, kind: str = "http") -> Session:
        try:
            return self.registry.open(kind)  # type: ignore[arg-type]
        except CapacityError as exc:
            raise ApiError(
                503,
                "capacity",
                str(exc),
                {"active_sessions": exc.active, "max_sessions": exc.limit},
            ) from None

    def session(self, session_id: str) -> Session:
        try:
            return self.registry.get(session_id)
        except UnknownSession:
            raise ApiError(
                404,
                "unknown_session",
                f"no open session {session_id!r}: it was never created, was closed, or was "
                f"closed after {self.settings.idle_timeout_s:g} s without requests. "
                "Create one with POST /sessions",
            ) from None

    def session_for(self, header_value: str | None) -> Session:
        """The session named by the X-Session-Id header, else the shared default one."""
        if header_value:
            return self.session(header_value)
        if self.default_session_id is not None:
            with contextlib.suppress(ApiError):
                return self.session(self.default_session_id)
        session = self.open_session("default")
        self.default_session_id = session.id
        return session

    async def close_session(self, session_id: str) -> None:
        try:
            await self.registry.close(session_id)
        except UnknownSession:
            self.session(session_id)  # raises the 404 with its explanation

    # -- episodes ----------------------------------------------------------------------

    def pick_task(self, task_id: str | None, seed: int) -> Any:
        if task_id is None:
            return random.Random(seed).choice(list(self.catalog))
        try:
            return self.catalog.by_id(task_id)
        except KeyError as exc:
            message = f"{exc.args[0]}; this server's tasks are listed at GET /tasks"
            raise ApiError(404, "unknown_task", message) from None

    async def reset(self, session: Session, body: ResetBody) -> AwsObservation:
        seed = body.seed if body.seed is not None else random.SystemRandom().randrange(2**31)
        task = self.pick_task(body.task_id, seed)
        episode_id = (
            body.episode_id or f"{session.id}-{random.SystemRandom().randrange(1 << 32):08x}"
        )
        payload = ResetPayload(task, seed, episode_id, self.episode_config)
        async with session.lock:
            self._check_open(session)
            obs = await self._call(session, "reset", payload, RESET_TIMEOUT_S)
            session.episode_id = episode_id
        session.touch()
        return obs

    async def step(self, session: Session, action: AwsAction) -> AwsObservation:
        deadline = self.settings.command_timeout_s * 3 + 30.0
        async with session.lock:
            self._check_open(session)
            if session.episode_id is None:
                raise ApiError(409, "not_reset", "this session has no episode yet: reset first")
            obs = await self._call(session, "step", action.command, deadline)
        session.touch()
        return obs

    async def state(self, session: Session) -> EnvState:
        async with session.lock:
            self._check_open(session)
            if session.episode_id is None:
                return EnvState(max_steps=self.settings.max_steps)
            return await self._call(session, "state", None, STATE_TIMEOUT_S)

    def _check_open(self, session: Session) -> None:
        if session.closed:
            raise ApiError(
                404, "unknown_session", "this session was closed; create a new one (POST /sessions)"
            )

    async def _call(self, session: Session, op: str, payload: Any, timeout_s: float) -> Any:
        try:
            return await self.pool.acall(session.process, op, session.key, payload, timeout_s)
        except SandboxLost as exc:
            session.episode_id = None
            raise ApiError(409, "episode_lost", str(exc)) from None
        except PoolClosed:
            raise ApiError(503, "shutting_down", "the env server is shutting down") from None
        except SandboxRequestError as exc:
            if exc.code == "unknown_episode":
                session.episode_id = None
                raise ApiError(
                    409, "not_reset", "this session has no episode: reset first"
                ) from None
            if exc.code == "setup_failed":
                raise ApiError(500, "setup_failed", exc.message) from None
            if exc.code == "invalid":
                raise ApiError(400, "invalid_request", exc.message) from None
            raise ApiError(500, "internal", exc.message) from None

    async def reap_forever(self) -> None:
        # Check often enough that a session never outlives its timeout by much.
        interval = min(self.settings.reap_interval_s, self.settings.idle_timeout_s / 4)
        while True:
            await asyncio.sleep(interval)
            try:
                closed = await self.registry.reap_idle()
            except Exception:
                log.exception("reaping idle sessions failed")
                continue
            if closed:
                log.info("closed %d idle sessions", len(closed))


def create_app(
    settings: ServerSettings | None = None, *, pool: SandboxPool | None = None, catalog: Any = None
) -> FastAPI:
    """The FastAPI app. ``pool``/``catalog`` default to a new pool and the built-in tasks."""
    settings = settings or ServerSettings()
    if catalog is None:
        from env.catalog import load_catalog

        catalog = load_catalog(settings.catalog)
    owns_pool = pool is None
    pool = pool or SandboxPool(processes=settings.sandbox_processes, prewarm=settings.prewarm)
    service = EnvService(settings, catalog, pool)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if owns_pool:
            await asyncio.to_thread(pool.start)
        reaper = asyncio.create_task(service.reap_forever())
        try:
            yield
        finally:
            reaper.cancel()
            await service.registry.close_all()
            if owns_pool:
                await asyncio.to_thread(pool.close)

    app = FastAPI(title="rlfarm AWS env", version=VERSION, lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if settings.token:  # outermost: a request without the token reaches nothing else
        app.add_middleware(BearerAuth, token=settings.token)
    app.state.service = service
    _add_error_handlers(app)
    _add_info_routes(app, service)
    _add_episode_routes(app, service)
    _add_websocket(app, service)
    return app


def _error_response(exc: ApiError) -> JSONResponse:
    body = ErrorBody(error=exc.code, message=exc.message, detail=exc.detail)
    headers = {"Retry-After": "5"} if exc.status == 503 else None
    return JSONResponse(body.model_dump(mode="json"), status_code=exc.status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        not_json = any(
            e.get("type") == "json_invalid"
            or (tuple(e.get("loc", ())) == ("body",) and isinstance(e.get("input"), bytes))
            for e in errors
        )
        if not_json:
            return _error_response(
                ApiError(
                    400,
                    "invalid_json",
                    "the request body is not valid JSON (send a JSON object with "
                    "Content-Type: application/json)",
                    _plain(errors),
                )
            )
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in errors
        )
        return _error_response(
            ApiError(
                422,
                "invalid_request",
                f"the request does not match the schema ({problems}); see GET /schema",
                _plain(errors),
            )
        )


# Validation errors say where and what was wrong, never what was sent: echoing the input back
# would reflect any client's payload (or a huge one) into the answer and the logs.
_ERROR_KEYS = ("type", "loc", "msg")


def _plain(errors: Any) -> Any:
    """Validation errors as JSON, without the offending input."""
    return [
        {k: e[k] for k in _ERROR_KEYS if k in e}
        for e in json.loads(json.dumps(errors, default=str))
    ]


def _add_info_routes(app: FastAPI, service: EnvService) -> None:
    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "healthy"}

    @app.get("/metadata")
    async def metadata() -> dict[str, Any]:
        from env.prompts import SYSTEM_PROMPT

        return {
            "name": "rlfarm-aws",
            "description": (
                "AWS CLI agent tasks on a simulated AWS (moto). Action: {'command': 'aws ...'}; "
                "'aws help --task-hint' returns the next hint."
            ),
            "version": VERSION,
            "system_prompt": SYSTEM_PROMPT,
            "tiers": list(service.catalog.tiers),
            "task_count": len(service.catalog),
            "max_steps": service.settings.max_steps,
        }

    @app.get("/schema")
    async def schema() -> dict[str, Any]:
        return {
            "action": AwsAction.model_json_schema(),
            "observation": AwsObservation.model_json_schema(),
            "state": EnvState.model_json_schema(),
        }

    @app.get("/tasks")
    async def tasks() -> list[dict[str, str]]:
        return [{"id": t.id, "tier": t.tier, "description": t.description} for t in service.catalog]

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        return {
            "active_sessions": len(service.registry),
            "max_sessions": service.settings.max_sessions,
            "reaped_sessions": service.registry.reaped,
            "sandbox_processes": service.pool.size,
        }


def _add_episode_routes(app: FastAPI, service: EnvService) -> None:
    @app.post("/reset")
    async def reset(
        body: ResetBody | None = None, session_id: SessionHeader = None
    ) -> dict[str, Any]:
        session = service.session_for(session_id)
        obs = await service.reset(session, body or ResetBody())
        payload = observation_payload(obs)
        payload["metadata"] = {**payload["metadata"], "session_id": session.id}
        return payload

    @app.post("/step")
    async def step(body: StepBody, session_id: SessionHeader = None) -> dict[str, Any]:
        obs = await service.step(service.session_for(session_id), body.action)
        return observation_payload(obs)

    @app.get("/state")
    async def state(session_id: SessionHeader = None) -> dict[str, Any]:
        return (await service.state(service.session_for(session_id))).model_dump(mode="json")

    @app.post("/sessions", status_code=201)
    async def create_session() -> dict[str, Any]:
        session = service.open_session("http")
        return {"session_id": session.id, "idle_timeout_s": service.settings.idle_timeout_s}

    @app.delete("/sessions/{session_id}", status_code=204)
    async def delete_session(session_id: str) -> Response:
        await service.close_session(session_id)
        return Response(status_code=204)

    @app.post("/sessions/{session_id}/reset")
    async def session_reset(session_id: str, body: ResetBody | None = None) -> dict[str, Any]:
        obs = await service.reset(service.session(session_id), body or ResetBody())
        return observation_payload(obs)

    @app.post("/sessions/{session_id}/step")
    async def session_step(session_id: str, body: StepBody) -> dict[str, Any]:
        return observation_payload(await service.step(service.session(session_id), body.action))

    @app.get("/sessions/{session_id}/state")
    async def session_state(session_id: str) -> dict[str, Any]:
        return (await service.state(service.session(session_id))).model_dump(mode="json")


def _add_websocket(app: FastAPI, service: EnvService) -> None:
    @app.websocket("/ws")
    async def websocket(ws: WebSocket) -> None:
        await ws.accept()
        try:
            session = service.open_session("ws")
        except ApiError as exc:
            with contextlib.suppress(Exception):  # the client may hang up first
                await _ws_error(ws, "CAPACITY_REACHED", exc.message, exc.detail)
                await ws.close(code=1013)
            return
        try:
            while True:
                raw = await ws.receive_text()
                if not await _ws_handle(ws, service, session, raw):
                    break
        except WebSocketDisconnect:
            pass
        finally:
            with contextlib.suppress(UnknownSession):
                await service.registry.close(session.id)
        with contextlib.suppress(Exception):  # the client may already be gone
            await ws.close()


async def _ws_handle(ws: WebSocket, service: EnvService, session: Session, raw: str) -> bool:
    """Answer one WebSocket message; False when the connection should end."""
    try:
        message = json.loads(raw)
    except json.JSONDecodeError as exc:
        await _ws_error(ws, "INVALID_JSON", f"the message is not valid JSON: {exc}")
        return True
    if not isinstance(message, dict):
        await _ws_error(
            ws, "VALIDATION_ERROR", 'a message is an object: {"type": ..., "data": ...}'
        )
        return True
    kind, data = message.get("type"), message.get("data") or {}
    if session.closed:
        await _ws_error(ws, "SESSION_ERROR", "this session was closed after being idle; reconnect")
        return False
    try:
        if kind == "reset":
            obs = await service.reset(session, ResetBody.model_validate(data))
            await ws.send_json({"type": "observation", "data": observation_payload(obs)})
        elif kind == "step":
            obs = await service.step(session, AwsAction.model_validate(data))
            await ws.send_json({"type": "observation", "data": observation_payload(obs)})
        elif kind == "state":
            state = await service.state(session)
            await ws.send_json({"type": "state", "data": state.model_dump(mode="json")})
        elif kind == "close":
            return False
        else:
            await _ws_error(
                ws, "UNKNOWN_TYPE", f"unknown message type {kind!r}; use reset, step, state, close"
            )
    except ValidationError as exc:
        await _ws_error(ws, "VALIDATION_ERROR", "invalid message data", _plain(exc.errors()))
    except ApiError as exc:
        await _ws_error(ws, exc.code.upper(), exc.message, exc.detail)
    return True


async def _ws_error(ws: WebSocket, code: str, message: str, detail: Any = None) -> None:
    await ws.send_json(
        {"type": "error", "data": {"code": code, "message": message, "detail": detail}}
    )


# ---------------------------------------------------------------------------------
# Entry points


def serve(settings: ServerSettings) -> None:
    """Run the server until interrupted."""
    import uvicorn

    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        backlog=4096,
        # Longer than clients' own keep-alive expiry (httpx: 5 s), so the server never
        # closes a pooled connection just as a client reuses it.
        timeout_keep_alive=75,
        ws_max_size=settings.max_body_bytes,  # the same limit for one WebSocket message
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m env.server", description=__doc__.split("\n")[0]
    )
    add_serve_arguments(parser)
    serve(settings_from_args(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
