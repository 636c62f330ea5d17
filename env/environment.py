"""``AwsEnv``: the in-process Env API used by rollout workers.

    env = AwsEnv()                                # the default catalog, default reward
    obs = env.reset(task_id="s3-list-buckets", seed=7)
    obs = env.step("aws s3api list-buckets")
    env.state(); env.close()

An ``AwsEnv`` is one episode slot. Its sandbox lives in a sandbox process of an
``SandboxPool`` (by default one shared pool per process, started on first use, one
sandbox process): the caller's process never imports moto, never has its environment,
HOME or working directory touched, and is not blocked by a command that hangs
(the pool's watchdog kills and replaces a stuck sandbox process). Many ``AwsEnv``s share a
pool's sandbox processes; pass ``pool=SandboxPool(processes=N).start()`` to use N cores.

Determinism: ``reset(task_id, seed)`` with the same arguments builds identical
worlds in every ``AwsEnv`` (same resources, same generated ids), which is what a
GRPO group of G episodes needs. ``reset(seed=s)`` without a task picks the task
from the catalog with ``s`` too.
"""

from __future__ import annotations

import atexit
import random
import threading
import uuid
from typing import Any

from env.disruption import DisruptionConfig
from env.reward import RewardConfig
from env.sandbox_pool import PoolClosed, SandboxLost, SandboxPool
from env.sandbox_process import ResetPayload
from env.task_episode import EpisodeConfig
from env.types import AwsAction, AwsObservation, EnvState

# Bounds on how long a caller waits for the sandbox process (the watchdog enforces them).
RESET_TIMEOUT_S = 120.0
STATE_TIMEOUT_S = 30.0

_shared_pool: SandboxPool | None = None
_shared_lock = threading.Lock()


def shared_pool() -> SandboxPool:
    """The process-wide default pool (one sandbox process), started on first use."""
    global _shared_pool
    with _shared_lock:
        if _shared_pool is None or _shared_pool.closed:
            _shared_pool = SandboxPool(processes=1).start()
            atexit.register(_shared_pool.close)
        return _shared_pool


class AwsEnv:
    """One AWS-task episode slot (see the module docstring).

    ``catalog``: an ``env.catalog.Catalog`` (default: the built-in task files).
    ``disrupt``: True for the default ``DisruptionConfig`` enabled, or a config.
    """

    def __init__(
        self,
        catalog: Any = None,
        *,
        reward: RewardConfig | None = None,
        disrupt: bool | DisruptionConfig = False,
        max_steps: int = 15,
        command_timeout_s: float = 10.0,
        max_output_chars: int = 16384,
        pool: SandboxPool | None = None,
    ) -> None:
        if catalog is None:
            from env.catalog import load_catalog

            catalog = load_catalog()
        if isinstance(disrupt, bool):
            disrupt = DisruptionConfig(enabled=disrupt)
        self.catalog = catalog
        self.config = EpisodeConfig(
            max_steps=max_steps,
            reward=reward or RewardConfig(),
            disruption=disrupt,
            command_timeout_s=command_timeout_s,
            max_output_chars=max_output_chars,
        )
        self._pool = pool if pool is not None else shared_pool()
        self._process = self._pool.assign()
        self._key = uuid.uuid4().hex
        self._episode_id: str | None = None
        self._closed = False

    @property
    def episode_id(self) -> str | None:
        return self._episode_id

    @property
    def process_index(self) -> int:
        """Which sandbox process of the pool hosts this slot's episodes."""
        return self._process

    def reset(self, task_id: str | None = None, seed: int | None = None) -> AwsObservation:
        """Start a new episode; a previous one in this slot is discarded.

        Raises ``KeyError`` for an unknown task id (the message lists close matches),
        ``env.sandbox_pool.SandboxRequestError`` (code ``setup_failed``) for a broken task.
        """
        self._check_open()
        if seed is None:
            seed = random.SystemRandom().randrange(2**31)
        if task_id is None:
            tasks = list(self.catalog)
            if not tasks:
                raise ValueError("the catalog has no tasks to choose from")
            task = random.Random(seed).choice(tasks)
        else:
            task = self.catalog.by_id(task_id)
        self._episode_id = episode_id = uuid.uuid4().hex
        payload = ResetPayload(task=task, seed=seed, episode_id=episode_id, config=self.config)
        return self._pool.call(self._process, "reset", self._key, payload, RESET_TIMEOUT_S)

    def step(self, command: str | AwsAction) -> AwsObservation:
        """Run one agent command; never raises for anything the agent may send."""
        self._check_open()
        text = command.command if isinstance(command, AwsAction) else command
        if self._episode_id is None:
            raise RuntimeError("call reset() before step()")
        # The sandbox process's own per-command limit is command_timeout_s; grading and a disruption
        # get the rest of this deadline.
        deadline = self.config.command_timeout_s * 3 + 30.0
        return self._pool.call(self._process, "step", self._key, text, deadline)

    def state(self) -> EnvState:
        self._check_open()
        if self._episode_id is None:
            return EnvState(max_steps=self.config.max_steps)
        return self._pool.call(self._process, "state", self._key, None, STATE_TIMEOUT_S)

    def close(self) -> None:
        """Discard the episode and free the slot (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if not self._pool.closed:
            try:
                self._pool.call(self._process, "close", self._key, None, STATE_TIMEOUT_S)
            except (SandboxLost, PoolClosed):
                pass  # the episode died with its sandbox process: nothing left to free there
            finally:
                self._pool.release(self._process)

    def __enter__(self) -> AwsEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this AwsEnv is closed; create a new one")
