"""Progress for people: a bar with ETA on a terminal, plain lines when output goes to a file.

Every long phase of a run (export, warm start, held-out eval, GRPO, final eval) reports through a
``Progress``. On a TTY it is a tqdm bar (on stderr unless told otherwise); otherwise a line
every tenth of the way (and at least every ``every_s`` seconds) with the count, elapsed time and
ETA, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class Progress:
    def __init__(self, desc: str, total: int, unit: str = "it", stream: TextIO | None = None,
                 every_s: float = 60.0, initial: int = 0, lines: bool = True) -> None:  # fmt: skip
        """``initial``: already done when the phase (re)starts (a resumed run); the ETA counts
        from here. ``lines=False``: no plain lines (the caller prints a line per step itself)."""
        self.desc, self.total, self.unit = desc, max(1, total), unit
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self.n = self.initial = min(initial, self.total)
        self.lines = lines
        self.started = time.monotonic()
        self._last_line = (self.n, self.started)
        self._bar = None
        if self.stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=desc, unit=unit, file=self.stream,
                             initial=self.n, dynamic_ncols=True, leave=True)  # fmt: skip

    def eta_s(self) -> float | None:
        if self.n <= self.initial:
            return None
        elapsed = time.monotonic() - self.started
        return elapsed / (self.n - self.initial) * (self.total - self.n)

    def update_to(self, n: int, note: str = "") -> None:
        """Record that ``n`` of ``total`` are done (``note``: the latest figures, shown beside)."""
        step, self.n = n - self.n, min(n, self.total)
        if self._bar is not None:
            if note:
                self._bar.set_postfix_str(note, refresh=False)
            self._bar.update(step)
            return
        if not self.lines:
            return
        last_n, last_t = self._last_line
        now = time.monotonic()
        tenth = -(-self.total // 10)  # ceil: at most about ten lines a phase
        if self.n >= self.total or self.n - last_n >= tenth or now - last_t >= self.every_s:
            self._last_line = (self.n, now)
            eta = self.eta_s()
            print(
                f"{self.desc}: {self.n}/{self.total} {self.unit} ({self.n / self.total:.0%}), "
                f"{duration(now - self.started)} elapsed"
                + (f", ETA {duration(eta)}" if eta is not None and self.n < self.total else "")
                + (f" | {note}" if note else ""),
                file=self.stream,
                flush=True,
            )

    def advance(self, step: int = 1, note: str = "") -> None:
        self.update_to(self.n + step, note)

    def write(self, line: str) -> None:
        """A line of its own above the bar (or plain, without one)."""
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PhaseProgress:
    """A ``Progress`` whose total comes with the first report: the callback form the export
    (``on_task(done, total)``) and SFT (``on_step(step, total, logs)``) take."""

    def __init__(self, desc: str, unit: str) -> None:
        self.desc, self.unit = desc, unit
        self._progress: Progress | None = None

    def update(self, done: int, total: int, logs: dict | None = None) -> None:
        if self._progress is None:
            self._progress = Progress(self.desc, total, self.unit)
        loss = (logs or {}).get("loss")
        self._progress.update_to(done, f"loss {loss:.3f}" if loss is not None else "")

    def __enter__(self) -> PhaseProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.close()
