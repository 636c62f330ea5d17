"""A watchdog that fails a stalled run loudly: no progress for ``timeout_s``, and every thread's
stack is dumped to the run directory and ``on_stall`` is called (the farm stops the run with it).

Progress is what the caller says it is (``beat``); the farm beats on progress only (a trainable
group, a finished update), never on failures, so a run that only fails cannot keep it quiet.
"""

from __future__ import annotations

import faulthandler
import threading
import time
from collections.abc import Callable
from pathlib import Path


class Watchdog:
    def __init__(self, timeout_s: float, run_dir: Path, on_stall: Callable[[str], None]) -> None:
        self.timeout_s = timeout_s
        self.dump_path = run_dir / "watchdog-stacks.txt"
        self.on_stall = on_stall
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="rlfarm-watchdog", daemon=True)
        self.fired = False

    def start(self) -> None:
        self._last = time.monotonic()
        self._thread.start()

    def beat(self) -> None:
        self._last = time.monotonic()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            stalled = time.monotonic() - self._last
            if stalled > self.timeout_s:
                self.fired = True
                with self.dump_path.open("w") as f:
                    f.write(f"no progress for {stalled:.0f}s; stacks of the driver:\n")
                    faulthandler.dump_traceback(file=f, all_threads=True)
                self.on_stall(
                    f"no trainable group and no update for {stalled:.0f}s (run.watchdog_s="
                    f"{self.timeout_s:.0f}); the driver's stacks are in {self.dump_path}"
                )
                return
