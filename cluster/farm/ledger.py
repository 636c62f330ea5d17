"""Every started episode ends in exactly one fate; the counts always balance, on every way out.

Fates: ``trained``; ``dropped_stale`` (sampled more than ``max_staleness`` versions ago);
``dropped_zero_variance`` (no learning signal: every episode of the group scored the same, or
within ``learner.min_reward_spread``, the reason then says how far apart);
``failed`` (an env or engine failure, or a part that died; the whole group goes);
``dropped_end_of_run`` (finished after the last update); and ``interrupted`` (in flight when the
run stopped on an error, a signal or a kill, or trained into an update a resumed run rolled back).
Groups are recorded whole.

``ledger.jsonl`` is append-only, across resumes too: a ``start`` line per group before it plays
(its task, seed, the curriculum draw it came from, and which lost group it replays, if any), then
one ``fate`` line per episode. The one later fate line an episode may get is a resume's
``interrupted`` line for an episode trained into an update the resume rolled back (it names that
update in ``rolled_back``), so the file alone tells every episode's final fate, even after
``kill -9``, and ``rlfarm audit`` can tell a legitimate second line from a contradiction.

A group lost to a fault (``failed``, or ``interrupted`` by a stop, a kill or a rollback) is
replayed from its task, seed and variant: ``on_lost`` hands it to the player while the run goes
on, and a resume finds every draw that has no settled group yet (``Ledger.replays``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rollout.types import TrajectoryGroup

FATES = (
    "trained",
    "dropped_stale",
    "dropped_zero_variance",
    "failed",
    "dropped_end_of_run",
    "interrupted",
    # Played by a rollout-only benchmark stage, never meant for training (`rlfarm bench rollout`).
    "rollout_only",
)
# Fates that settle a curriculum draw: it was trained, or dropped by a rule, not by a fault.
SETTLED = frozenset(FATES) - {"failed", "interrupted"}


@dataclass(frozen=True)
class OpenGroup:
    """A started group that has no fate yet."""

    group_id: str
    task_id: str
    tier: str
    episodes: int
    seed: int = -1
    draw: int = -1  # the curriculum draw it plays (-1: none, e.g. a test's own group)
    attempt: int = 0  # 0 = first play of its draw; k = its k-th replay
    replay_of: str = ""  # the lost group it replays


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.started = 0
        self.counts: Counter[str] = Counter()
        self.open: dict[str, OpenGroup] = {}
        # Told of every booked group with its fate (the episode log); never of interruptions,
        # whose episodes did not finish.
        self.on_fate: Callable[..., None] | None = None
        # Told of every started group booked ``failed`` (a fault lost it; the player replays it).
        self.on_lost: Callable[[OpenGroup], None] | None = None
        # A resumed ledger: draws with no settled group, to replay, and the next unused draw.
        self.replays: list[OpenGroup] = []
        self.next_draw = 0
        self._file = path.open("a")

    def start(self, group_id: str, task_id: str, tier: str, episodes: int, seed: int = -1,
              draw: int = -1, attempt: int = 0, replay_of: str = "") -> None:  # fmt: skip
        """Count a group's episodes as started before they run, so a lost group shows."""
        group = OpenGroup(group_id, task_id, tier, episodes, seed, draw, attempt, replay_of)
        self.started += episodes
        self.open[group_id] = group
        self._write([{"event": "start", **group.__dict__}])

    def record(
        self,
        group: TrajectoryGroup,
        fate: str,
        reason: str = "",
        step: int = -1,
        staleness: int | None = None,
    ) -> None:
        _check_fate(fate)
        opened = self.open.pop(group.group_id, None)
        lines = []
        for traj in group.trajectories:
            lines.append(
                {
                    "group_id": group.group_id,
                    "episode": traj.episode_index,
                    "task_id": group.task_id,
                    "tier": group.tier,
                    "fate": fate,
                    "reason": reason or traj.error,
                    "reward": round(traj.total_reward, 6),
                    "achieved": traj.achieved,
                    "turns": len(traj.turns),
                    "versions": sorted(set(traj.versions)),
                    "learner_step": step,
                    "staleness": staleness,
                }
            )
            self.counts[fate] += 1
        self._write(lines)
        if self.on_fate is not None:
            self.on_fate(group, fate, reason, step, staleness)
        if fate == "failed" and opened is not None and self.on_lost is not None:
            self.on_lost(opened)

    def interrupt_open(self, reason: str) -> int:
        """Give every started group without a fate the fate ``interrupted``; returns how many
        episodes that was. Called on every way out of a run, so the ledger balances."""
        episodes = 0
        for group in list(self.open.values()):
            self._write([_fate_line(group.group_id, i, group.task_id, group.tier, "interrupted",
                                    reason) for i in range(group.episodes)])  # fmt: skip
            self.counts["interrupted"] += group.episodes
            episodes += group.episodes
        self.open.clear()
        return episodes

    @classmethod
    def resume(cls, path: Path, last_update: int, reason: str) -> Ledger:
        """Reopen a run's ledger after its driver stopped: the counts are read back, and every
        episode that was in flight, or trained into an update after ``last_update`` (the update
        the run continues from, whose later updates are lost), gets the fate ``interrupted``
        (appended; nothing is rewritten). Draws left with no settled group are ``replays``."""
        ledger = cls(path)
        starts: list[dict] = []
        final: dict[tuple[str, int], dict] = {}
        for line in read_ledger_lines(path):
            if line.get("event") == "start":
                starts.append(line)
            else:
                final[(line["group_id"], line["episode"])] = line
        for key, line in final.items():
            if line["fate"] == "trained" and line["learner_step"] > last_update:
                step = line["learner_step"]
                line = {**_fate_line(line["group_id"], line["episode"], line["task_id"],
                                     line["tier"], "interrupted",
                                     f"trained into update {step}, which was lost: {reason}"),
                        "rolled_back": step}  # fmt: skip
                ledger._write([line])  # supersedes the trained line
                final[key] = line
            ledger.counts[line["fate"]] += 1
        for start in starts:  # per episode: a kill mid-write may have left a group half-booked
            ledger.started += start["episodes"]
            missing = [i for i in range(start["episodes"]) if (start["group_id"], i) not in final]
            lines = [
                _fate_line(
                    start["group_id"],
                    i,
                    start["task_id"],
                    start["tier"],
                    "interrupted",
                    f"in flight: {reason}",
                )
                for i in missing
            ]
            ledger._write(lines)
            final.update({(start["group_id"], line["episode"]): line for line in lines})
            ledger.counts["interrupted"] += len(missing)
        ledger.replays, ledger.next_draw = _unsettled(starts, final)
        return ledger

    @property
    def balanced(self) -> bool:
        return self.started == sum(self.counts.values())

    def summary(self) -> dict:
        return {"started": self.started, **{fate: self.counts[fate] for fate in FATES}}

    def _write(self, lines: list[dict]) -> None:
        self._file.write("".join(json.dumps(line) + "\n" for line in lines))
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _check_fate(fate: str) -> None:
    if fate not in FATES:
        raise ValueError(f"unknown fate {fate!r}; one of {FATES}")


def _fate_line(group_id: str, episode: int, task_id: str, tier: str, fate: str,
               reason: str) -> dict:  # fmt: skip
    _check_fate(fate)
    return {"group_id": group_id, "episode": episode, "task_id": task_id, "tier": tier,
            "fate": fate, "reason": reason, "reward": 0.0, "achieved": False, "turns": 0,
            "versions": [], "learner_step": -1, "staleness": None}  # fmt: skip


def _unsettled(starts: list[dict], final: dict[tuple[str, int], dict]) -> tuple[list, int]:
    """The newest group of each draw none of whose groups settled (each episode's final fate
    considered), and the first draw number not yet used."""
    settled: set[int] = set()
    newest: dict[int, OpenGroup] = {}
    for start in starts:
        draw = start.get("draw", -1)
        if draw < 0:
            continue
        fates = {final[(start["group_id"], i)]["fate"] for i in range(start["episodes"])}
        if fates & SETTLED:
            settled.add(draw)
        group = OpenGroup(**{k: v for k, v in start.items() if k != "event"})
        if draw not in newest or group.attempt >= newest[draw].attempt:
            newest[draw] = group
    lost = [group for draw, group in sorted(newest.items()) if draw not in settled]
    return lost, max(newest, default=-1) + 1


def read_ledger_lines(path: Path) -> list[dict]:
    """Every line of a ledger file, starts and fates (a line cut short by a kill is skipped)."""
    lines = []
    for raw in path.read_text().splitlines():
        try:
            lines.append(json.loads(raw))
        except json.JSONDecodeError:
            continue  # the last line of a driver killed mid-write
    return lines


def read_ledger(path: Path) -> list[dict]:
    """The final fate of every episode, one dict each (later lines supersede earlier ones)."""
    final: dict[tuple[str, int], dict] = {}
    for line in read_ledger_lines(path):
        if "fate" in line:
            final[(line["group_id"], line["episode"])] = line
    return list(final.values())
