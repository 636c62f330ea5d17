"""How a run stops early, from wherever the reason comes: a signal handler, the watchdog's
thread, a failed background task or a limit.

The first reason wins and cancels the task that drives the run (the main loop, or start-up and
the first eval under ``stoppable``); the driver then books and checkpoints as for any early stop.
A background task that fails stops the run at once: a silent deadlock is never the outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from typing import Any

from cluster.farm.failures import RunStopped


class StopLatch:
    def __init__(self) -> None:
        self.reason: RunStopped | None = None
        self.winding_down = False  # the loop ended (or is ending): nothing new starts
        self._main: asyncio.Task | None = None

    def arm(self) -> None:
        """The current task drives the run from now on; no reason yet."""
        self.reason = None
        self.winding_down = False
        self._main = asyncio.current_task()

    def note(self, reason: RunStopped) -> None:
        """A reason the driving task met itself (the first reason still wins)."""
        self.reason = self.reason or reason

    def stop(self, reason: RunStopped) -> None:
        """Stop the run early (the first reason wins); safe from signal handlers and callbacks."""
        if self.reason is None and not self.winding_down:
            self.reason = reason
            if self._main is not None and not self._main.done():
                self._main.cancel()

    def stop_from_thread(self, reason: RunStopped) -> None:
        """``stop`` from another thread (the watchdog's)."""
        loop = self._main.get_loop() if self._main is not None else None
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.stop, reason)

    async def stoppable(self, work: Awaitable[Any]) -> Any:
        """Await ``work`` (start-up, the first eval) so that a signal or ``stop`` ends it as it
        ends the main loop: raises the ``RunStopped`` (a stop before the loop was lost, and
        SIGTERM during the first eval did nothing)."""
        self._main = asyncio.current_task()
        try:
            return await work
        except asyncio.CancelledError:
            if self.reason is None:
                raise
            raise self.reason from None
        finally:
            self._main = None

    def spawn(self, coro: Coroutine, what: str) -> asyncio.Task:
        """A background task whose failure stops the run at once."""
        task = asyncio.ensure_future(coro)

        def surface(done: asyncio.Task) -> None:
            if done.cancelled() or done.exception() is None:
                return
            exc = done.exception()
            if isinstance(exc, RunStopped):
                self.stop(exc)
            else:
                self.stop(RunStopped("error", f"{what} failed: {type(exc).__name__}: {exc}"))

        task.add_done_callback(surface)
        return task
