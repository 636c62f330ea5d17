"""The sandbox process: hosts many episodes, answers requests one at a time.

A sandbox process is started by ``env.sandbox_pool.SandboxPool`` as
``python -m env.sandbox_process --fd N``, with one end of a socket pair as its request pipe.
It starts a ``MotoHost`` (which scrubs its environment and installs the host guard), then
serves requests in order:

    (request_id, op, episode_key, payload) -> (request_id, ok, result_or_error)

``op`` is ``reset`` (payload: ``ResetPayload``), ``step`` (payload: the command
string), ``state``, ``close``, ``stats``, ``census`` (live moto backends: what a closed
episode must not leave behind) or ``shutdown``. A failing request is
answered with ``(code, message)`` and the sandbox process goes on: nothing an agent sends can
end the sandbox process or another episode. Serving one request at a time is what makes the
sandbox's world switching correct (see ``env.sandbox``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

ProcessError = tuple[str, str]  # (code, message)


class _UnknownEpisode(Exception):
    pass


@dataclass(frozen=True)
class ResetPayload:
    """Everything a sandbox process needs to start an episode (the task travels with it)."""

    task: Any  # env.task_spec.Task, or any object with the same fields
    seed: int
    episode_id: str
    config: Any  # env.task_episode.EpisodeConfig


def process_main(conn: Connection, prewarm: bool) -> None:
    """Entry point of a sandbox process."""
    from env.sandbox import DEFAULT_PREWARM, MotoHost, live_backends
    from env.task_episode import Episode

    host = MotoHost.get(prewarm=DEFAULT_PREWARM if prewarm else ())
    episodes: dict[str, Episode] = {}
    conn.send(("ready", os.getpid(), str(host.private_dir)))

    def handle(op: str, key: str, payload: Any) -> Any:
        if op == "reset":
            old = episodes.pop(key, None)
            if old is not None:
                old.close()
            episode = Episode(host, payload.task, payload.seed, payload.episode_id, payload.config)
            observation = episode.start()
            episodes[key] = episode
            return observation
        if op == "stats":
            return {
                "pid": os.getpid(),
                "episodes": len(episodes),
                "commands": host.command_count,
                "guard_blocked": list(host.guard.blocked),
            }
        if op == "census":
            return {"episodes": len(episodes), "live_backends": live_backends()}
        if op == "close":
            episode = episodes.pop(key, None)
            if episode is not None:
                episode.close()
            return None
        episode = episodes.get(key)
        if episode is None:
            raise _UnknownEpisode(key)
        if op == "step":
            return episode.step(payload)
        if op == "state":
            return episode.state()
        raise ValueError(f"unknown sandbox process op {op!r}")

    try:
        _serve(conn, handle)
    finally:
        host.cleanup()


def _serve(conn: Connection, handle: Any) -> None:
    from env.sandbox import SetupError

    while True:
        try:
            request_id, op, key, payload = conn.recv()
        except (EOFError, OSError):
            return
        if op == "shutdown":
            with contextlib.suppress(OSError):
                conn.send((request_id, True, None))
            return
        try:
            reply: tuple[Any, ...] = (request_id, True, handle(op, key, payload))
        except _UnknownEpisode:
            reply = (request_id, False, ("unknown_episode", f"no episode {key!r}; reset first"))
        except SetupError as exc:
            reply = (request_id, False, ("setup_failed", str(exc)))
        except ValueError as exc:
            reply = (request_id, False, ("invalid", str(exc)))
        except Exception as exc:  # report, keep serving other episodes
            reply = (request_id, False, ("internal", f"{type(exc).__name__}: {exc}"))
        try:
            conn.send(reply)
        except (OSError, EOFError):
            return  # the pool is gone
        except Exception as exc:  # a result that cannot be pickled: report, keep serving
            conn.send((request_id, False, ("internal", f"unsendable result: {exc}")))


def main() -> None:
    # The pool owns this process's lifetime; a Ctrl+C in the caller's terminal reaches the
    # whole process group, and the caller shuts its sandbox processes down itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parser = argparse.ArgumentParser(description="rlfarm sandbox process (started by SandboxPool)")
    parser.add_argument("--fd", type=int, required=True, help="inherited socket to serve")
    parser.add_argument("--no-prewarm", action="store_true", help="skip start-up warming")
    args = parser.parse_args()
    process_main(Connection(args.fd), prewarm=not args.no_prewarm)


if __name__ == "__main__":
    main()
