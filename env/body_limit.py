"""A request-body limit for the env server, enforced before the body is buffered.

An action is one AWS CLI command line (at most ``env.types.MAX_COMMAND_CHARS``); nothing a client
sends needs more than a few KiB. A body whose ``Content-Length`` is over the limit is answered
413 at once, without reading it; a body sent without a length (chunked) is counted as it arrives
and cut off with 413 as soon as it passes the limit. Either way the server never holds more than
the limit of one request in memory.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_MAX_BODY_BYTES = 1 << 20


class BodyLimit:
    """ASGI middleware: HTTP request bodies over ``max_bytes`` get a 413 JSON error."""

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._reject(send, declared)
            return
        received = 0
        rejected = False

        async def counted_receive() -> Message:
            # Past the limit: answer 413 now and tell the app the client is gone, so it stops
            # reading (frameworks turn an exception here into their own 400).
            nonlocal received, rejected
            message = await receive()
            if message["type"] == "http.request" and not rejected:
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    rejected = True
                    await self._reject(send, received)
            return {"type": "http.disconnect"} if rejected else message

        async def guarded_send(message: Message) -> None:
            if not rejected:  # after a 413 nothing else goes out
                await send(message)

        await self.app(scope, counted_receive, guarded_send)

    async def _reject(self, send: Send, size: int) -> None:
        body = json.dumps(
            {
                "error": "body_too_large",
                "message": f"request body is over the server's limit of {self.max_bytes} bytes "
                f"(got at least {size}); send one AWS CLI command per step",
                "detail": None,
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
