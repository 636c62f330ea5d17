"""Why a run stops early, and the limits that stop it instead of letting it spin.

A farm that keeps failing, or keeps playing groups that cannot teach anything, must say so and
stop, not loop forever: ``FailureLimits`` watches every collected group and raises ``RunStopped``
with the causes and what to do. Every other way a run stops early (a background part raised, the
watchdog, a signal) is a ``RunStopped`` too, so the driver has one place that books the ledger
and writes the summary.
"""

from __future__ import annotations

from collections import deque

from rollout.types import TrajectoryGroup


class RunStopped(Exception):
    """The run stopped before its last update; ``kind`` says how (error, watchdog, signal)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class FailureLimits:
    """Counts consecutive failed groups and consecutive groups without learning signal."""

    def __init__(self, max_failed: int, max_without_signal: int) -> None:
        self.max_failed = max_failed
        self.max_without_signal = max_without_signal
        self.failed = 0
        self.without_signal = 0
        self.causes: deque[str] = deque(maxlen=3)
        self.rewards: deque[float] = deque(maxlen=8)

    def failed_group(self, group: TrajectoryGroup) -> None:
        """A group that failed; raises ``RunStopped`` past the limit."""
        self.failed += 1
        self.causes.append(group.error)
        if self.failed >= self.max_failed:
            causes = "\n  - ".join(self.causes)
            raise RunStopped(
                "error",
                f"{self.failed} groups failed in a row (train.max_consecutive_failed_groups="
                f"{self.max_failed}); the last causes:\n  - {causes}",
            )

    def played(self, group: TrajectoryGroup, trainable: bool, why: str = "") -> None:
        """A group that played through (trainable, or without signal, or stale); raises
        ``RunStopped`` when too many in a row had no learning signal (``why``: the batcher's
        reason for the last one)."""
        self.failed = 0
        if trainable:
            self.without_signal = 0
            return
        self.without_signal += 1
        self.rewards.append(group.rewards[0])
        if self.without_signal >= self.max_without_signal:
            seen = sorted({round(r, 3) for r in self.rewards})
            last = f"; the last: {why}" if why else ""
            raise RunStopped(
                "error",
                f"{self.without_signal} groups in a row carried no learning signal (recent "
                f"first rewards {seen}{last}): GRPO cannot update "
                f"(train.max_groups_without_signal={self.max_without_signal}). Start from a "
                "model that sometimes succeeds: keep run.warm_start on for the built-in model, "
                "warm-start a real one with `rlfarm sft`, start the curriculum on an easier tier "
                "(curriculum.start_tier), sample more diversely (rollout.temperature), or with "
                "train.signal: success allow more groups without one",
            )
