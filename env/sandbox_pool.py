"""The sandbox pool: N sandbox processes, and routing of episodes to them.

Each sandbox process (``env.sandbox_process``) hosts many episodes but runs one command at a
time, so throughput scales with the number of processes, one per core. The pool assigns a new
episode to the least-loaded process and from then on routes every request of that episode to it.
``request`` never blocks: it queues the message for the process's sender thread and returns a
``concurrent.futures.Future`` (``acall`` awaits it from asyncio, ``call`` waits for it).

Failure handling, with bounded waits: a sandbox process that dies, or stops answering for
longer than its current request's deadline, is killed and replaced by a fresh one;
every request in flight on it fails with ``SandboxLost``, and its episodes are
reported lost (their next request says to reset). Why kill instead of waiting: a
stuck sandbox process would otherwise stall every episode routed to it forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# A sandbox process imports moto and awscli and may pre-warm EC2's data: allow it a while.
READY_TIMEOUT_S = 180.0
# How often the watchdog looks for stuck sandbox processes.
WATCHDOG_PERIOD_S = 0.5


class SandboxLost(RuntimeError):
    """The sandbox process hosting an episode died or was killed; the episode is gone."""


class PoolClosed(RuntimeError):
    """The pool was closed."""


class SandboxRequestError(RuntimeError):
    """A sandbox process answered a request with an error (``code``: unknown_episode, invalid,
    ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class _Pending:
    future: Future
    submitted: float
    timeout_s: float
    key: str


class _SandboxProcess:
    """One sandbox process, its pipe, its sender and reader threads."""

    def __init__(self, pool: SandboxPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.outbox: queue.Queue[tuple[Any, ...] | None] = queue.Queue()
        self.pending: dict[int, _Pending] = {}
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.generation = 0
        self.episodes: set[str] = set()  # keys currently hosted
        self.lost: set[str] = set()  # keys whose sandbox process died
        self.last_activity = time.monotonic()
        self.process: Any = None
        self.conn: Any = None
        self.pid: int | None = None
        self.private_dir: str | None = None  # the sandbox process's temp dir, removed if we kill it
        threading.Thread(target=self._send_loop, daemon=True, name=f"env-send-{index}").start()

    # -- life cycle ------------------------------------------------------------------

    def spawn(self) -> None:
        parent, process = start_sandbox_process(self.pool.prewarm)
        if not parent.poll(READY_TIMEOUT_S):
            process.kill()
            raise RuntimeError(
                f"sandbox process {self.index} did not start in {READY_TIMEOUT_S:g} s"
            )
        try:
            tag, pid, private_dir = parent.recv()
        except (EOFError, OSError):
            process.kill()
            raise RuntimeError(
                f"sandbox process {self.index} exited during start-up (exit code {process.wait(5)})"
            ) from None
        if tag != "ready":
            process.kill()
            raise RuntimeError(f"sandbox process {self.index} sent {tag!r} instead of 'ready'")
        with self.lock:
            self.process, self.conn, self.pid = process, parent, pid
            self.private_dir = private_dir
            self.last_activity = time.monotonic()
            generation = self.generation
        threading.Thread(
            target=self._read_loop, args=(parent, generation), daemon=True, name=f"env-read-{pid}"
        ).start()
        self.ready.set()

    def replace(self, reason: str) -> None:
        """Kill this sandbox process (if alive), fail its requests, start a fresh one."""
        with self.lock:
            self.ready.clear()
            self.generation += 1  # the old reader sees the change and stays quiet
            process, conn = self.process, self.conn
            failed = list(self.pending.values())
            self.pending.clear()
            self.lost |= self.episodes
            self.episodes = set()
        log.warning("sandbox process %s (pid %s) replaced: %s", self.index, self.pid, reason)
        if process is not None:
            process.kill()
            process.wait(5)
            if self.private_dir:
                shutil.rmtree(self.private_dir, ignore_errors=True)
        if conn is not None:
            conn.close()
        for item in failed:
            _fail(
                item.future,
                SandboxLost(f"the sandbox process hosting this episode {reason}; reset"),
            )
        if not self.pool.closed:
            self.spawn()

    def stop(self) -> None:
        self.outbox.put(None)
        with self.lock:
            process, conn = self.process, self.conn
            failed = list(self.pending.values())
            self.pending.clear()
        for item in failed:
            _fail(item.future, PoolClosed("the env pool was closed"))
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.send((0, "shutdown", "", None))
        if process is not None:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    # -- traffic ---------------------------------------------------------------------

    def submit(self, request_id: int, op: str, key: str, payload: Any, timeout_s: float) -> Future:
        future: Future = Future()
        with self.lock:
            if key in self.lost and op not in ("reset", "close"):
                _fail(future, SandboxLost("the sandbox process hosting this episode died; reset"))
                return future
            if op == "reset":
                self.lost.discard(key)
                self.episodes.add(key)
            elif op == "close":
                self.lost.discard(key)
                self.episodes.discard(key)
            self.pending[request_id] = _Pending(future, time.monotonic(), timeout_s, key)
        self.outbox.put((request_id, op, key, payload))
        return future

    def _send_loop(self) -> None:
        while True:
            message = self.outbox.get()
            if message is None:
                return
            while not self.ready.wait(1.0):
                if self.pool.closed:
                    return
            try:
                self.conn.send(message)
            except (OSError, ValueError):
                # The reader notices the dead pipe and replaces the sandbox process; the request
                # is failed there with the others.
                continue

    def _read_loop(self, conn: Any, generation: int) -> None:
        while True:
            try:
                request_id, ok, result = conn.recv()
            except (EOFError, OSError):
                if not self.pool.closed and self.generation == generation:
                    threading.Thread(
                        target=self.replace, args=("exited unexpectedly",), daemon=True
                    ).start()
                return
            with self.lock:
                self.last_activity = time.monotonic()
                item = self.pending.pop(request_id, None)
            if item is None:
                continue
            if ok:
                item.future.set_result(result)
            else:
                code, message = result
                item.future.set_exception(SandboxRequestError(code, message))

    def stuck_for(self, now: float) -> float:
        """Seconds past its deadline of the request the process is busy with (<= 0: fine)."""
        with self.lock:
            if not self.pending or not self.ready.is_set():
                return 0.0
            head = min(self.pending.values(), key=lambda p: p.submitted)
            busy_since = max(head.submitted, self.last_activity)
            return now - busy_since - head.timeout_s


class SandboxPool:
    """N sandbox processes (see the module docstring).

    ``prewarm``: pay first-use costs (service models, moto's EC2 data) at start-up.
    """

    def __init__(self, processes: int = 1, *, prewarm: bool = True) -> None:
        if processes < 1:
            raise ValueError(f"a sandbox pool needs at least one process, got {processes}")
        self.size = processes
        self.prewarm = prewarm
        self.closed = False
        self._ids = itertools.count(1)
        self._processes: list[_SandboxProcess] = []
        self._assigned: list[int] = [0] * processes
        self._assign_lock = threading.Lock()
        self._started = False

    def start(self) -> SandboxPool:
        """Start the sandbox processes (in parallel) and the watchdog; returns self."""
        if self._started:
            return self
        self._processes = [_SandboxProcess(self, i) for i in range(self.size)]
        failures: list[str] = []

        def spawn(process: _SandboxProcess) -> None:
            try:
                process.spawn()
            except Exception as exc:  # collected and raised below
                failures.append(f"process {process.index}: {exc}")

        threads = [threading.Thread(target=spawn, args=(w,)) for w in self._processes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if failures:
            self.close()
            raise RuntimeError("the env pool failed to start: " + "; ".join(failures))
        self._started = True
        threading.Thread(target=self._watchdog, daemon=True, name="env-watchdog").start()
        return self

    def __enter__(self) -> SandboxPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for process in self._processes:
            process.stop()

    # -- routing -----------------------------------------------------------------------

    def assign(self) -> int:
        """Pick the least-loaded process for a new episode (call ``release`` when done)."""
        with self._assign_lock:
            index = min(range(self.size), key=lambda i: self._assigned[i])
            self._assigned[index] += 1
            return index

    def release(self, index: int) -> None:
        with self._assign_lock:
            self._assigned[index] = max(0, self._assigned[index] - 1)

    def request(self, index: int, op: str, key: str, payload: Any, timeout_s: float) -> Future:
        """Send one request to process ``index``; the future holds its result or error."""
        if self.closed:
            raise PoolClosed("the env pool is closed")
        if not self._started:
            raise RuntimeError("start the env pool first (SandboxPool.start())")
        return self._processes[index].submit(next(self._ids), op, key, payload, timeout_s)

    def call(self, index: int, op: str, key: str, payload: Any, timeout_s: float) -> Any:
        """``request`` and wait for the answer (the watchdog bounds the wait)."""
        return self.request(index, op, key, payload, timeout_s).result()

    async def acall(self, index: int, op: str, key: str, payload: Any, timeout_s: float) -> Any:
        return await asyncio.wrap_future(self.request(index, op, key, payload, timeout_s))

    def stats(self) -> list[dict[str, Any]]:
        """Per-process pid, hosted episodes and commands run (asks each process)."""
        futures = [self.request(i, "stats", "", None, 30.0) for i in range(self.size)]
        return [f.result() for f in futures]

    def process_pid(self, index: int) -> int | None:
        return self._processes[index].pid

    def _watchdog(self) -> None:
        while not self.closed:
            time.sleep(WATCHDOG_PERIOD_S)
            now = time.monotonic()
            for process in self._processes:
                if process.stuck_for(now) > 0 and not self.closed:
                    process.replace("did not answer within its deadline and was killed")


def start_sandbox_process(prewarm: bool) -> tuple[Connection, subprocess.Popen]:
    """Start ``python -m env.sandbox_process`` connected to us by a socket pair.

    A plain subprocess rather than multiprocessing's spawn: spawn re-imports the
    caller's ``__main__``, which breaks scripts without a main guard and is slow in
    processes (Ray actors, servers) that imported a lot.
    """
    ours, theirs = socket.socketpair()
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    command = [sys.executable, "-m", "env.sandbox_process", "--fd", str(theirs.fileno())]
    if not prewarm:
        command.append("--no-prewarm")
    try:
        process = subprocess.Popen(command, pass_fds=[theirs.fileno()], env=env, cwd=root)
    finally:
        theirs.close()
    return Connection(ours.detach()), process


def _fail(future: Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
