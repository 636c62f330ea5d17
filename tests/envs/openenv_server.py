"""An OpenEnv-wire server for any env class with ``reset(task_id, seed)``/``step(text)``, for the
URL backend's tests: ``/ws`` sessions (one env instance each) and ``/health``, in OpenEnv's
message shapes. It runs in a thread of the test process (uvicorn on a free port)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect


def payload(result) -> dict:
    if isinstance(result, str):
        result = {"text": result}
    observation = {k: v for k, v in result.items() if k not in ("reward", "done")}
    return {"observation": observation, "reward": result.get("reward"),
            "done": bool(result.get("done"))}  # fmt: skip


def build_app(factory: Callable[[], object]) -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    def health() -> dict:
        return {"status": "healthy"}

    @app.websocket("/ws")
    async def ws(socket: WebSocket) -> None:
        await socket.accept()
        env = factory()
        try:
            while True:
                message = await socket.receive_json()
                kind, data = message.get("type"), message.get("data") or {}
                try:
                    if kind == "reset":
                        result = env.reset(data["task_id"], int(data.get("seed") or 0))
                    elif kind == "step":
                        result = env.step(data["message"])
                    elif kind == "close":
                        break
                    else:
                        raise ValueError(f"unknown message type {kind!r}")
                except (KeyError, ValueError) as exc:
                    error = {"message": str(exc), "code": "EXECUTION_ERROR"}
                    await socket.send_json({"type": "error", "data": error})
                    continue
                await socket.send_json({"type": "observation", "data": payload(result)})
        except WebSocketDisconnect:
            pass
        await socket.close()

    return app


@contextmanager
def serve(factory: Callable[[], object], port: int) -> Iterator[str]:
    config = uvicorn.Config(build_app(factory), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
