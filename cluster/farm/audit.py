"""``rlfarm audit runs/NAME``: does what a run booked agree with what its learner trained?

Three records are kept apart on purpose, and the audit compares them:

- the ledger (``ledger.jsonl``, append-only across resumes): every group started, every
  episode's fate, and the one legitimate second fate line (a resume's ``interrupted`` for an
  episode trained into an update it rolled back, naming it in ``rolled_back``);
- the learner's own record, inside its checkpointed state (``learner/state.json`` of the newest
  checkpoint): the group ids each update of the final lineage stepped on;
- the episode log (``episodes/``): what each booked group played, with the fate it was booked.

Defects (any one makes the command exit 1):

- ``lost``: groups booked ``trained`` into an update of the final lineage that the learner's record
  of that update lacks (or, in a finished run, into an update no checkpoint holds);
- ``duplicated``: a group in two updates of the learner's record (or twice in one), a draw
  trained by two of its groups, or an episode booked trained twice without a rollback between;
- ``unaccounted``: episodes of a started group with no fate, in a run whose driver finished (in
  a live or killed run they are in flight, reported apart);
- ``contradictory``: an episode with a second fate that is not a rollback, a fate for a group
  never started, a group started twice, a learner record that trained a group the ledger did not
  book trained, or an episode-log fate the ledger never wrote;
- ``draws_dropped``: curriculum draws lost to a fault and never replayed although newer draws
  started after the loss (the player replays lost draws before any new one), unless the draw had
  used up its replays (``run.max_replays`` in the run's ``config.yaml``: reported as given up).

Faults: ``injected`` counts the farm's own ``fault injected`` lines; one is ``survived`` when the
farm logged its part recovered and an update was trained after it.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from cluster.farm.checkpoints import CheckpointStore
from cluster.farm.episode_log import read_episodes
from cluster.farm.ledger import SETTLED, read_ledger_lines

EXAMPLES = 5  # ids listed per defect, so a report stays readable


@dataclass
class Finding:
    """One kind of defect: how many, and a few examples with what is wrong."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, example: str) -> None:
        self.count += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(example)


@dataclass
class AuditReport:
    run_dir: str
    finished: bool  # the driver wrote its summary after its last ledger line
    groups_started: int = 0
    episodes_started: int = 0
    fates: dict[str, int] = field(default_factory=dict)  # final fate per episode
    in_flight: int = 0  # episodes with no fate yet in a live or killed run
    updates_booked: int = 0  # updates of the final lineage the ledger booked groups into
    updates_checkpointed: int = 0  # updates the learner's record covers
    unverified_groups: int = 0  # trained after the newest checkpoint of a live run
    rolled_back_episodes: int = 0
    draws: dict[str, int] = field(default_factory=dict)
    faults: dict[str, dict] = field(default_factory=dict)
    lost: Finding = field(default_factory=Finding)
    duplicated: Finding = field(default_factory=Finding)
    unaccounted: Finding = field(default_factory=Finding)
    contradictory: Finding = field(default_factory=Finding)
    draws_dropped: Finding = field(default_factory=Finding)

    @property
    def defects(self) -> int:
        return sum(
            f.count
            for f in (
                self.lost, self.duplicated, self.unaccounted, self.contradictory,
                self.draws_dropped,
            )
        )  # fmt: skip

    @property
    def faults_injected(self) -> int:
        return len(self.faults)

    @property
    def faults_survived(self) -> int:
        return sum(f["survived"] for f in self.faults.values())

    def as_dict(self) -> dict:
        return {
            **asdict(self),
            "defects": self.defects,
            "faults_injected": self.faults_injected,
            "faults_survived": self.faults_survived,
        }


def audit_run(run_dir: Path) -> AuditReport:
    """Audit a run directory, finished or live."""
    run_dir = Path(run_dir)
    ledger_path = run_dir / "ledger.jsonl"
    if not ledger_path.exists():
        raise FileNotFoundError(f"{run_dir} has no ledger.jsonl: pass a run directory (runs/NAME)")
    report = AuditReport(str(run_dir), _finished(run_dir, ledger_path))
    lines = read_ledger_lines(ledger_path)
    starts, chains = _index(lines, report)
    final = _final_fates(starts, chains, report)
    trained = _trained_groups(final, report)
    _check_learner_record(run_dir, trained, report)
    _check_draws(lines, starts, final, report, _max_replays(run_dir))
    _check_episode_log(run_dir, chains, report)
    report.faults = _faults(run_dir, {step for steps in trained.values() for step in steps})
    return report


def _finished(run_dir: Path, ledger_path: Path) -> bool:
    summary = run_dir / "summary.json"
    return summary.exists() and summary.stat().st_mtime >= ledger_path.stat().st_mtime


def _index(lines: list[dict], report: AuditReport) -> tuple[dict, dict]:
    """Start lines by group, and each episode's fate lines in the order written."""
    starts: dict[str, dict] = {}
    chains: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for line in lines:
        if line.get("event") == "start":
            if line["group_id"] in starts:
                report.contradictory.add(f"group {line['group_id']} started twice")
            starts[line["group_id"]] = line
            report.groups_started += 1
            report.episodes_started += line["episodes"]
        else:
            chains[(line["group_id"], line["episode"])].append(line)
    for group_id, episode in chains:
        if group_id not in starts:
            report.contradictory.add(f"{group_id}/{episode} has a fate but was never started")
    return starts, chains


def _final_fates(starts: dict, chains: dict, report: AuditReport) -> dict:
    """Each episode's final fate line; second lines that are not a rollback are contradictions."""
    final: dict[tuple[str, int], dict] = {}
    for key, chain in chains.items():
        current = chain[0]
        for line in chain[1:]:
            if (
                line["fate"] == "interrupted"
                and current["fate"] == "trained"
                and line.get("rolled_back") == current["learner_step"]
            ):
                report.rolled_back_episodes += 1
            elif line["fate"] == current["fate"] == "trained":
                report.duplicated.add(
                    f"{key[0]}/{key[1]} booked trained into updates {current['learner_step']} "
                    f"and {line['learner_step']} with no rollback between"
                )
            else:
                report.contradictory.add(
                    f"{key[0]}/{key[1]} booked {current['fate']}, then {line['fate']}"
                )
            current = line
        final[key] = current
    for group_id, start in starts.items():
        missing = [i for i in range(start["episodes"]) if (group_id, i) not in final]
        if not missing:
            continue
        if report.finished:
            report.unaccounted.add(f"{group_id}: episodes {missing} have no fate")
        else:
            report.in_flight += len(missing)
    report.fates = dict(Counter(line["fate"] for line in final.values()))
    return final


def _trained_groups(final: dict, report: AuditReport) -> dict[str, set[int]]:
    """Group id -> the updates its episodes' final fates booked it into."""
    trained: dict[str, set[int]] = defaultdict(set)
    for (group_id, _), line in final.items():
        if line["fate"] == "trained":
            trained[group_id].add(line["learner_step"])
    for group_id, steps in trained.items():
        if len(steps) > 1:
            report.duplicated.add(f"group {group_id} booked trained into updates {sorted(steps)}")
    report.updates_booked = max((max(s) for s in trained.values()), default=0)
    return trained


def _check_learner_record(run_dir: Path, trained: dict[str, set[int]], report: AuditReport) -> None:
    """Compare what the ledger booked trained with the learner's record of its lineage."""
    record = _learner_record(run_dir)
    report.updates_checkpointed = len(record)
    seen: dict[str, int] = {}
    for update, ids in enumerate(record, start=1):
        for group_id in ids:
            if group_id in seen:
                report.duplicated.add(
                    f"group {group_id} trained into updates {seen[group_id]} and {update} "
                    "(the learner's record)"
                )
            seen[group_id] = update
            if update not in trained.get(group_id, set()):
                report.contradictory.add(
                    f"the learner trained group {group_id} into update {update}; the ledger did "
                    "not book it there"
                )
    for group_id, steps in trained.items():
        for step in steps:
            if step <= len(record):
                if seen.get(group_id) != step:
                    report.lost.add(
                        f"group {group_id} booked trained into update {step}; the learner's "
                        "record of that update lacks it"
                    )
            elif report.finished:
                report.lost.add(
                    f"group {group_id} booked trained into update {step}, which no checkpoint "
                    f"of the finished run holds (the newest covers {len(record)})"
                )
            else:
                report.unverified_groups += 1


def _learner_record(run_dir: Path) -> list[list[str]]:
    """The learner's record in the newest checkpoint (empty before the first one)."""
    checkpoint = CheckpointStore(run_dir, keep=1).latest()
    if checkpoint is None:
        return []
    state = json.loads(checkpoint.learner.blobs["state.json"])
    return [list(ids) for ids in state.get("record", [])]


def _max_replays(run_dir: Path) -> int:
    """The run's ``run.max_replays`` (its ``config.yaml``; the default when absent)."""
    from cluster.base.config import RunSettings

    default = RunSettings.model_fields["max_replays"].default
    path = run_dir / "config.yaml"
    if not path.exists():
        return default
    config = yaml.safe_load(path.read_text()) or {}
    return int((config.get("run") or {}).get("max_replays", default))


def _check_draws(
    lines: list[dict], starts: dict, final: dict, report: AuditReport, max_replays: int
) -> None:
    """Every curriculum draw settles (trained, or dropped by a rule), or is replayed; a draw lost
    to a fault while newer draws kept starting was dropped."""
    groups_of: dict[int, list[str]] = defaultdict(list)
    for group_id, start in starts.items():
        if start.get("draw", -1) >= 0:
            groups_of[start["draw"]].append(group_id)
    position = {}  # where each group's last fate line is, and where each new draw started
    new_draw_at = []
    for index, line in enumerate(lines):
        if line.get("event") == "start":
            if line.get("draw", -1) >= 0 and line.get("attempt", 0) == 0:
                new_draw_at.append(index)
        else:
            position[line["group_id"]] = index
    settled = replayed = pending = trained_twice = given_up = 0
    for draw, group_ids in groups_of.items():
        fates = [_group_fate(starts[g], final) for g in group_ids]
        replayed += len(group_ids) - 1
        if sum(f == "trained" for f in fates) > 1:
            trained_twice += 1
            report.duplicated.add(f"draw {draw} trained by groups {group_ids}")
        if any(f in SETTLED for f in fates):
            settled += 1
            continue
        last = max(group_ids, key=lambda g: starts[g].get("attempt", 0))
        lost_at = position.get(last, -1)
        if starts[last].get("attempt", 0) >= max_replays:
            given_up += 1  # by rule: lost max_replays + 1 times
        elif lost_at >= 0 and any(i > lost_at for i in new_draw_at):
            report.draws_dropped.add(
                f"draw {draw} ({starts[last]['task_id']}, seed {starts[last].get('seed')}) lost "
                f"with group {last} and not replayed"
            )
        else:
            pending += 1
    report.draws = {"drawn": len(groups_of), "settled": settled, "replays": replayed,
                    "unsettled_pending": pending, "given_up": given_up,
                    "trained_twice": trained_twice}  # fmt: skip


def _group_fate(start: dict, final: dict) -> str:
    """A group's fate: settled if any of its episodes settled, else its episodes' fate."""
    fates = {final[(start["group_id"], i)]["fate"] for i in range(start["episodes"])
             if (start["group_id"], i) in final}  # fmt: skip
    if "trained" in fates:
        return "trained"
    settled = fates & SETTLED
    if settled:
        return sorted(settled)[0]
    return sorted(fates)[0] if fates else "in_flight"


def _check_episode_log(run_dir: Path, chains: dict, report: AuditReport) -> None:
    """Every training episode the log holds was booked with that fate by the ledger."""
    directory = run_dir / "episodes"
    if not directory.is_dir():
        return
    for record in read_episodes(directory):
        if record.get("fate") in (None, "eval"):
            continue
        chain = chains.get((record["group_id"], record["episode"]), [])
        if not any(line["fate"] == record["fate"] for line in chain):
            report.contradictory.add(
                f"the episode log has {record['group_id']}/{record['episode']} as "
                f"{record['fate']}; the ledger never booked that"
            )


def _faults(run_dir: Path, trained_updates: set[int]) -> dict[str, dict]:
    """Each injected fault, whether the farm logged its part recovered, and whether the run
    trained an update after it."""
    path = run_dir / "events.log"
    events = path.read_text().splitlines() if path.exists() else []
    faults: dict[str, dict] = {}
    for event in events:
        if "fault injected after update " not in event:
            continue
        head = event.split("fault injected after update ", 1)[1]
        update, kind = head.split(": ", 1)
        kind = kind.split(" ", 1)[0]
        name = f"{kind}@{update}"
        faults[name] = {"kind": kind, "after_update": int(update), "recovered": False}
    for event in events:
        for fault in faults.values():
            if f"fault recovered after update {fault['after_update']}: {fault['kind']}" in event:
                fault["recovered"] = True
    for fault in faults.values():
        fault["run_went_on"] = any(u > fault["after_update"] for u in trained_updates)
        fault["survived"] = fault["recovered"] and fault["run_went_on"]
    return faults


def render(report: AuditReport) -> str:
    """The report as an operator reads it."""
    state = "finished" if report.finished else "live (or its driver was killed)"
    rows = [
        f"audit of {report.run_dir} ({state})",
        f"  groups started {report.groups_started}, episodes {report.episodes_started}; "
        f"final fates {report.fates}; in flight {report.in_flight}",
        f"  updates booked {report.updates_booked}, in the learner's checkpointed record "
        f"{report.updates_checkpointed}; trained after the newest checkpoint (not yet "
        f"verifiable) {report.unverified_groups} groups; episodes rolled back by a resume "
        f"{report.rolled_back_episodes}",
        f"  draws {report.draws}",
        f"  faults injected {report.faults_injected}, survived {report.faults_survived}",
    ]
    for name, fault in report.faults.items():
        rows.append(
            f"    {name}: recovered {fault['recovered']}, run went on {fault['run_went_on']}"
        )
    for name in ("lost", "duplicated", "unaccounted", "contradictory", "draws_dropped"):
        finding: Finding = getattr(report, name)
        rows.append(f"  {name}: {finding.count}")
        rows += [f"    - {example}" for example in finding.examples]
    rows.append(f"  defects: {report.defects}")
    return "\n".join(rows)
