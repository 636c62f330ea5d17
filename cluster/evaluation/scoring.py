"""Metric definitions shared by every policy kind: one dataset row's score, one episode's record,
and their per-tier aggregates. Pure functions of text and numbers (no engine, no env).

Dataset metrics of a reply against the reference command of a held-out SFT row:
- ``fmt``: the raw reply is already one bare ``aws ...`` line (what the env accepts as is);
- ``xtr``: a command can be extracted at all (fences, prose and shell prompts stripped);
- ``exact``: the extracted command equals the reference token for token (shell-style split, so
  quoting differences that the CLI would not see do not count);
- ``svc`` / ``op``: same ``aws <service>`` / ``aws <service> <operation>``.
"""

from __future__ import annotations

import math
import shlex
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rollout.parse import parse_reply
from rollout.types import Trajectory

OVERALL = "all"
DATASET_METRICS = ("fmt", "xtr", "exact", "svc", "op")


def command_tokens(command: str) -> list[str]:
    """``command`` split as a shell would; unbalanced quotes fall back to whitespace split."""
    try:
        return shlex.split(command)
    except ValueError:
        return command.split()


@dataclass(frozen=True)
class RowScore:
    """One reply scored against one reference command (booleans: see the module docstring)."""

    fmt: bool
    xtr: bool
    exact: bool
    svc: bool
    op: bool
    command: str | None


def score_reply(reply: str, reference: str) -> RowScore:
    parsed = parse_reply(reply)
    if parsed.command is None:
        return RowScore(parsed.bare, False, False, False, False, None)
    got, want = command_tokens(parsed.command), command_tokens(reference.strip())
    return RowScore(
        fmt=parsed.bare,
        xtr=True,
        exact=got == want,
        svc=len(got) >= 2 and got[:2] == want[:2],
        op=len(got) >= 3 and got[:3] == want[:3],
        command=parsed.command,
    )


@dataclass(frozen=True)
class RowResult:
    """A scored dataset row: its tier, the reply, its score and how long the reply took."""

    task_id: str
    tier: str
    kind: str
    reply: str
    reference: str
    score: RowScore
    latency_s: float
    error: str = ""


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _by_tier(items: Iterable, tier_of) -> dict[str, list]:
    groups: dict[str, list] = {}
    for item in items:
        groups.setdefault(tier_of(item), []).append(item)
        groups.setdefault(OVERALL, []).append(item)
    return groups


def dataset_summary(rows: Sequence[RowResult], tiers: Sequence[str] = ()) -> dict[str, dict]:
    """Per tier and ``all``: n, errors, fmt/xtr/exact/svc/op rates, mean latency and length.

    Rows whose request failed count as replies with no command (a policy that cannot answer
    scores nothing), and are counted in ``errors`` so the reader can tell the two apart.
    Tiers come in the order ``tiers`` gives (the env's, easiest first), then as first met.
    """
    out = {}
    for tier, group in _by_tier(rows, lambda r: r.tier).items():
        answered = [r for r in group if not r.error]
        out[tier] = {
            "n": len(group),
            "errors": len(group) - len(answered),
            **{m: _mean([float(getattr(r.score, m)) for r in group]) for m in DATASET_METRICS},
            "latency_s": _mean([r.latency_s for r in answered]),
            "reply_chars": _mean([float(len(r.reply)) for r in answered]),
        }
    return _ordered(out, tiers)


@dataclass(frozen=True)
class EpisodeRecord:
    """What the live metrics need from one greedy episode, whichever loop played it.

    ``steps`` counts agent turns; ``format_failures`` the turns whose raw reply was not a bare
    ``aws ...`` line; ``error`` is set when the env failed (the episode is then left out).
    """

    task_id: str
    tier: str
    seed: int
    reward: float
    achieved: bool
    steps: int
    max_progress: float
    hints_used: int
    format_failures: int
    commands: tuple[str | None, ...] = ()
    error: str = ""


def record_from_trajectory(traj: Trajectory) -> EpisodeRecord:
    """The live metrics' view of one episode played by the rollout loop."""
    return EpisodeRecord(
        task_id=traj.task_id,
        tier=traj.tier,
        seed=traj.seed,
        reward=traj.total_reward,
        achieved=traj.achieved,
        steps=len(traj.turns),
        max_progress=traj.max_progress,
        hints_used=traj.hints_used,
        format_failures=traj.format_failures,
        commands=tuple(t.action for t in traj.turns),
        error=traj.error if traj.end == "failed" else "",
    )


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """The Wilson score interval of a success rate (95% at z=1.96); None without trials. Unlike
    p +- z*se it stays inside [0, 1] and is not zero-width at 0 or n successes, which is where
    held-out success rates of small models sit."""
    if n == 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def standard_error(values: Sequence[float]) -> float | None:
    """The standard error of the mean of ``values`` (sample standard deviation / sqrt(n))."""
    if len(values) < 2:
        return None
    return statistics.stdev(values) / math.sqrt(len(values))


def live_summary(episodes: Sequence[EpisodeRecord], tiers: Sequence[str] = ()) -> dict[str, dict]:
    """Per tier and ``all``: reward, completion, steps to complete, progress, hints, format.

    Episodes the env failed are reported in ``failed`` and excluded from the rates: an env
    outage says nothing about the policy. ``tasks`` counts the distinct tasks the rates rest on
    (episodes of one task are not independent evidence about others). ``steps_to_complete``
    averages completed episodes only (None when none completed); ``format_failure_rate`` is
    over turns, the others over episodes.
    The noise of a comparison: ``completion_ci95`` (Wilson) and ``reward_se`` over episodes.
    Tiers come in the order ``tiers`` gives, then as first met; ``all`` last.
    """
    out = {}
    for tier, group in _by_tier(episodes, lambda e: e.tier).items():
        played = [e for e in group if not e.error]
        solved = sum(e.achieved for e in played)
        turns = sum(e.steps for e in played)
        out[tier] = {
            "tasks": len({e.task_id for e in played}),
            "episodes": len(played),
            "failed": len(group) - len(played),
            "reward": _mean([e.reward for e in played]),
            "reward_se": standard_error([e.reward for e in played]),
            "completion_rate": _mean([float(e.achieved) for e in played]),
            "completion_ci95": _listed(wilson_interval(solved, len(played))),
            "steps_to_complete": _mean([float(e.steps) for e in played if e.achieved]),
            "max_progress": _mean([e.max_progress for e in played]),
            "hint_rate": _mean([float(e.hints_used > 0) for e in played]),
            "format_failure_rate": (
                sum(e.format_failures for e in played) / turns if turns else None
            ),
        }
    return _ordered(out, tiers)


def per_task(episodes: Sequence[EpisodeRecord]) -> dict[str, dict]:
    """Per task: its tier, episodes played (env failures left out), successes, success rate and
    95% Wilson interval; the input of paired comparisons (``cluster.evaluation.stats``)."""
    out: dict[str, dict] = {}
    for e in sorted(episodes, key=lambda e: e.task_id):
        row = out.setdefault(
            e.task_id, {"tier": e.tier, "episodes": 0, "successes": 0, "reward_sum": 0.0}
        )
        if not e.error:
            row["episodes"] += 1
            row["successes"] += int(e.achieved)
            row["reward_sum"] += e.reward
    for row in out.values():
        n = row["episodes"]
        row["rate"] = row["successes"] / n if n else None
        row["ci95"] = _listed(wilson_interval(row["successes"], n))
    return out


def live_result(episodes: Sequence[EpisodeRecord], tiers: Sequence[str] = ()) -> dict[str, dict]:
    """One view's live eval: ``by_tier`` (``live_summary``) and ``by_task`` (``per_task``)."""
    return {"by_tier": live_summary(episodes, tiers), "by_task": per_task(episodes)}


def task_counts(
    by_task: dict[str, dict], prefix: str = "", metric: str = "successes"
) -> dict[str, tuple[float, int]]:
    """``per_task``'s rows as (total, episodes) per stratum, of successes or of ``reward_sum``
    (a paired comparison then compares mean rewards); ``prefix`` names the run when several
    are pooled (one stratum per task and run)."""
    return {prefix + t: (row[metric], row["episodes"]) for t, row in by_task.items()}


def _listed(interval: tuple[float, float] | None) -> list[float] | None:
    """An interval as JSON writes and reads it back (results.json round-trips equal)."""
    return None if interval is None else list(interval)


def _ordered(summary: dict[str, dict], tiers: Sequence[str]) -> dict[str, dict]:
    """Tiers in ``tiers``' order (the tasks' own, easiest first), others as first met; ``all``
    last."""
    rank = {t: i for i, t in enumerate(dict.fromkeys(tiers))}
    keys = sorted((k for k in summary if k != OVERALL), key=lambda k: rank.get(k, len(rank)))
    return {k: summary[k] for k in [*keys, OVERALL] if k in summary}
