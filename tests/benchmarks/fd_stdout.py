"""Run a bench command with file descriptor 1 (where ``--json`` writes) sent to a file."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path


def run_capturing_fd1(run: Callable[[], int], into: Path) -> tuple[int, str]:
    """``run()``'s exit code and everything written to fd 1 while it ran."""
    sys.stdout.flush()
    saved = os.dup(1)
    with into.open("w") as sink:
        os.dup2(sink.fileno(), 1)
        try:
            code = run()
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
    return code, into.read_text()
