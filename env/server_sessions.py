"""Server-side sessions: one episode slot each, capped in number, reaped when idle.

A session is what an HTTP client creates with ``POST /sessions`` (or what a WebSocket
connection opens implicitly): an episode key on one sandbox process of the pool. The registry
enforces the cap (``max_sessions``; creating one more raises ``CapacityError``, which
the server answers with 503), serializes requests within a session (one asyncio lock
each, so a client that pipelines requests still sees them in order), and closes
sessions idle for longer than ``idle_timeout_s`` so abandoned clients cannot hold
slots forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from typing import Literal

from env.sandbox_pool import SandboxPool

SessionKind = Literal["http", "ws", "default"]
CLOSE_TIMEOUT_S = 30.0


class CapacityError(RuntimeError):
    """The server already holds ``max_sessions`` sessions."""

    def __init__(self, active: int, limit: int) -> None:
        super().__init__(
            f"the server is at capacity ({active} of {limit} sessions in use); close a "
            "session you no longer need (DELETE /sessions/{id}) or retry later"
        )
        self.active = active
        self.limit = limit


class UnknownSession(KeyError):
    """No open session has this id (never created, closed, or reaped when idle)."""


@dataclass
class Session:
    id: str
    kind: SessionKind
    process: int
    key: str
    created: float
    last_used: float
    episode_id: str | None = None
    closed: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def touch(self) -> None:
        self.last_used = time.monotonic()


class SessionRegistry:
    """All open sessions of one server (see the module docstring)."""

    def __init__(self, pool: SandboxPool, max_sessions: int, idle_timeout_s: float) -> None:
        if max_sessions < 1 or idle_timeout_s <= 0:
            raise ValueError("max_sessions must be >= 1 and idle_timeout_s > 0")
        self.pool = pool
        self.max_sessions = max_sessions
        self.idle_timeout_s = idle_timeout_s
        self._sessions: dict[str, Session] = {}
        self.reaped = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, kind: SessionKind, session_id: str | None = None) -> Session:
        if len(self._sessions) >= self.max_sessions:
            raise CapacityError(len(self._sessions), self.max_sessions)
        now = time.monotonic()
        process = self.pool.assign()
        sid = session_id or uuid.uuid4().hex
        session = Session(sid, kind, process, f"s-{sid}", created=now, last_used=now)
        self._sessions[sid] = session
        return session

    def get(self, session_id: str) -> Session:
        session = self._sessions.get(session_id)
        if session is None:
            raise UnknownSession(session_id)
        session.touch()
        return session

    async def close(self, session_id: str) -> None:
        session = self._sessions.pop(session_id, None)
        if session is None:
            raise UnknownSession(session_id)
        await self._discard(session)

    async def reap_idle(self) -> list[str]:
        """Close every session idle for longer than ``idle_timeout_s``; their ids."""
        now = time.monotonic()
        idle = [
            s
            for s in self._sessions.values()
            if now - s.last_used > self.idle_timeout_s and not s.lock.locked()
        ]
        for session in idle:
            self._sessions.pop(session.id, None)
            await self._discard(session)
        self.reaped += len(idle)
        return [s.id for s in idle]

    async def close_all(self) -> None:
        sessions = list(self._sessions.values())
        self._sessions.clear()
        for session in sessions:
            await self._discard(session)

    async def _discard(self, session: Session) -> None:
        session.closed = True
        try:
            if session.episode_id is not None and not self.pool.closed:
                with contextlib.suppress(
                    Exception
                ):  # the sandbox process may be gone; slot is freed
                    await asyncio.wait_for(
                        self.pool.acall(
                            session.process, "close", session.key, None, CLOSE_TIMEOUT_S
                        ),
                        CLOSE_TIMEOUT_S,
                    )
        finally:
            self.pool.release(session.process)
