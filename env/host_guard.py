"""A runtime guard for sandbox processes: no host files, processes or sockets.

The command policy refuses commands that would touch the host, but it reasons about
command lines; this guard enforces the same promise on what the process actually
does while it runs sandbox work. It is a PEP 578 audit hook (``sys.addaudithook``),
installed once per sandbox process by ``env.sandbox.MotoHost`` and armed only inside
``guard.armed()`` (an agent command, a setup step, a grading call). While armed:

- opening a file is allowed only for reading under the Python installation (lazy
  imports, botocore/moto data files) and for reading or writing under the sandbox process's
  private temporary directory (its HOME, and moto's spill files); everything else
  raises ``PermissionError`` naming the path;
- starting a process (``subprocess``, ``os.system``, ``exec``, ``fork``, ``spawn``)
  raises;
- any socket connect, bind, send or name lookup raises, so no request can leave the
  process even if a code path bypassed moto's in-process mock.

Audit hooks cannot be removed, so the guard is only installed in sandbox processes
that exist to host sandboxes, never in a caller's process.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_PROCESS_EVENTS = frozenset(
    {
        "subprocess.Popen",
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.fork",
        "os.forkpty",
        "os.startfile",
        "pty.spawn",
    }
)
_NETWORK_EVENTS = frozenset(
    {
        "socket.connect",
        "socket.bind",
        "socket.sendto",
        "socket.sendmsg",
        "socket.getaddrinfo",
        "socket.gethostbyname",
        "socket.gethostbyaddr",
        "socket.getnameinfo",
    }
)
# Events whose first argument is a path that will be changed.
_WRITE_PATH_EVENTS = frozenset(
    {
        "os.remove",
        "os.rename",
        "os.mkdir",
        "os.rmdir",
        "os.chmod",
        "os.chown",
        "os.truncate",
        "os.link",
        "os.symlink",
        "os.utime",
        "shutil.rmtree",
        "shutil.copyfile",
        "shutil.move",
    }
)
# Events whose first argument is a path that will be read (listed).
_READ_PATH_EVENTS = frozenset({"os.listdir", "os.scandir", "glob.glob"})
_DEVICE_FILES = frozenset({"/dev/null", "/dev/urandom"})
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class HostAccessError(PermissionError):
    """Sandbox code tried to touch the host (a file, a process, the network)."""


class HostGuard:
    """The audit hook and its on/off switch (see the module docstring)."""

    def __init__(self, private_dir: Path) -> None:
        self.private_dir = os.path.realpath(private_dir)
        roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
        self._read_roots = tuple(sorted({os.path.realpath(r) for r in roots}))
        self._armed = threading.Event()
        self.blocked: list[str] = []  # what was refused, for logs and tests
        self._installed = False

    def install(self) -> None:
        """Add the audit hook to this process (irreversible; call once per process)."""
        if not self._installed:
            sys.addaudithook(self._hook)
            self._installed = True

    @contextmanager
    def armed(self) -> Iterator[None]:
        """Enforce the guard for the duration of the block (sandbox work only)."""
        if not self._installed:
            raise RuntimeError("HostGuard.install() must run before the guard is armed")
        self._armed.set()
        try:
            yield
        finally:
            self._armed.clear()

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self._armed.is_set():
            return
        if event == "open":
            self._check_open(args)
        elif event in _PROCESS_EVENTS:
            self._deny(f"starting a process ({event}) is not allowed in the sandbox")
        elif event in _NETWORK_EVENTS:
            self._deny(f"network access ({event}) is not allowed in the sandbox")
        elif event in _WRITE_PATH_EVENTS and args:
            self._check_path(args[0], write=True)
        elif event in _READ_PATH_EVENTS and args:
            self._check_path(args[0], write=False)

    def _check_open(self, args: tuple[Any, ...]) -> None:
        path, mode, flags = (*args, None, None, None)[:3]
        if isinstance(path, int) or path is None:
            return  # an already-open descriptor
        write = bool(mode and any(c in str(mode) for c in "wax+")) or bool(
            isinstance(flags, int) and flags & _WRITE_FLAGS
        )
        self._check_path(path, write=write)

    def _check_path(self, path: Any, *, write: bool) -> None:
        if isinstance(path, int):
            return
        try:
            text = os.fsdecode(path)
        except TypeError:
            return
        real = os.path.realpath(text)
        if real in _DEVICE_FILES or _under(real, self.private_dir):
            return
        if not write and any(_under(real, root) for root in self._read_roots):
            return
        verb = "write" if write else "read"
        self._deny(f"the sandbox may not {verb} the host path {text!r}")

    def _deny(self, message: str) -> None:
        self.blocked.append(message)
        raise HostAccessError(message)


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)
