"""The env server's settings and its command-line flags (no FastAPI import: ``rlfarm --help``
and ``rlfarm env serve --help`` stay instant)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from env.server_auth import TOKEN_ENV, is_loopback, new_token


class ServerSettings(BaseModel):
    """How the env server runs (the ``rlfarm env serve`` flags)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    sandbox_processes: int = Field(
        default=2, ge=1, le=64, description="Sandbox processes (each runs one command at a time)."
    )
    max_sessions: int = Field(default=256, ge=1)
    idle_timeout_s: float = Field(default=600.0, gt=0)
    reap_interval_s: float = Field(default=10.0, gt=0)
    catalog: Path | None = Field(default=None, description="Task file or directory.")
    max_steps: int = Field(default=15, ge=1)
    disrupt: bool = False
    command_timeout_s: float = Field(default=10.0, gt=0)
    prewarm: bool = True
    max_body_bytes: int = Field(
        default=1 << 20, ge=1024, description="Largest request body (or WebSocket message)."
    )
    token: str | None = Field(
        default=None,
        repr=False,
        exclude=True,
        description="Bearer token every request must carry; required off loopback.",
    )

    @model_validator(mode="after")
    def _token_off_loopback(self) -> ServerSettings:
        if not is_loopback(self.host) and not self.token:
            raise ValueError(
                f"host {self.host!r} is reachable from other machines: give a bearer token "
                f"(--token or ${TOKEN_ENV}; `rlfarm env serve` generates one when neither is set)"
            )
        return self


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The server's flags (defaults match ``ServerSettings``); ``rlfarm env serve`` uses them."""
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--sandbox-processes", type=int, default=2, help="sandbox processes (one per core)"
    )
    parser.add_argument("--max-sessions", type=int, default=256, help="session cap")
    parser.add_argument(
        "--idle-timeout", type=float, default=600.0, help="close sessions idle this long (s)"
    )
    parser.add_argument("--catalog", type=Path, default=None, help="task file or directory")
    parser.add_argument("--max-steps", type=int, default=15, help="steps per episode")
    parser.add_argument(
        "--disrupt", action="store_true", help="one destructive change to the world mid-episode"
    )
    parser.add_argument("--no-prewarm", action="store_true", help="skip sandbox warm-up")
    parser.add_argument(
        "--max-body-bytes", type=int, default=1 << 20,
        help="largest request body or WebSocket message, bytes (bigger gets 413)",
    )  # fmt: skip
    parser.add_argument(
        "--token", default=None,
        help=f"bearer token clients must send (default ${TOKEN_ENV}); off loopback one is "
        "required, and generated and printed when not given",
    )  # fmt: skip


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    token = args.token or os.environ.get(TOKEN_ENV) or None
    if token is None and not is_loopback(args.host):
        token = new_token()
        print(f"env server token (generated; clients send 'Authorization: Bearer <token>', the "
              f"farm reads ${TOKEN_ENV}): {token}", file=sys.stderr, flush=True)  # fmt: skip
    return ServerSettings(
        token=token,
        host=args.host,
        port=args.port,
        sandbox_processes=args.sandbox_processes,
        max_sessions=args.max_sessions,
        idle_timeout_s=args.idle_timeout,
        catalog=args.catalog,
        max_steps=args.max_steps,
        disrupt=args.disrupt,
        prewarm=not args.no_prewarm,
        max_body_bytes=args.max_body_bytes,
    )
