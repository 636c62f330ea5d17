"""Bearer-token access to the env server, required whenever it listens beyond loopback.

On ``127.0.0.1``/``::1``/``localhost`` only local processes can connect and a token is optional.
Bound anywhere else, the server runs sandboxes on behalf of whoever reaches the port, so it
refuses to start without a token: one is generated (and printed once) when none is given. Every
HTTP request and WebSocket handshake must then carry ``Authorization: Bearer <token>``; the
comparison takes constant time (``hmac.compare_digest``), and a request without the right token
is answered 401 before any route runs, so it creates no session. ``/health`` stays open for
load-balancer probes (it reveals nothing and changes nothing).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets

from env.body_limit import ASGIApp, Receive, Scope, Send

TOKEN_ENV = "RLFARM_ENV_TOKEN"  # where the farm (and a shell) find the token
OPEN_PATHS = frozenset({"/health"})


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host`` (``0.0.0.0`` and names are not)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    return secrets.token_urlsafe(32)


def bearer_header(token: str | None) -> dict[str, str]:
    """The header a client sends (none without a token)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


class BearerAuth:
    """ASGI middleware: HTTP and WebSocket requests without ``Bearer <token>`` get 401."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        if not token:
            raise ValueError("BearerAuth needs a non-empty token")
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope.get("path") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"authorization", b"")
        if hmac.compare_digest(given, self.expected):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            # Closing before accepting answers the handshake with 403 (the ASGI rule).
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({
            "error": "unauthorized",
            "message": "this env server needs 'Authorization: Bearer <token>' (the token "
            f"`rlfarm env serve` printed or was given; the farm reads ${TOKEN_ENV})",
            "detail": None,
        }).encode()  # fmt: skip
        await send({
            "type": "http.response.start",
            "status": 401,
            "headers": [(b"content-type", b"application/json"),
                        (b"www-authenticate", b"Bearer"),
                        (b"content-length", str(len(body)).encode())],
        })  # fmt: skip
        await send({"type": "http.response.body", "body": body})
