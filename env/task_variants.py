"""Renamed copies of a task, so demonstrations teach "read the name from the task", not "recall it".

A small model trained on one demonstration per task memorises the literal commands it saw and
transfers nothing to an unseen task. A variant keeps a task's wording and logic but gives every
resource the task names in quotes ('reports-2024', 'deploy-bot', '/app/web') a fresh name, the
same fresh name everywhere in the task: description, setup, solution, checks and hints. The
exporter then plays each variant for real in the env (``env.sft_export``), and a variant whose
renamed solution does not run or does not achieve its checks is simply not used, so a rename that
breaks a naming rule can never produce a wrong demonstration.

Only lowercase name-like segments are renamed (``[a-z][a-z0-9-]*``, split at ``/`` and ``.``);
fixed AWS vocabulary ('alias', 'fifo', regions, ...) and values with spaces or punctuation are left
alone. New names are seeded pronounceable nonsense shaped like the original (same number of parts,
a number where the original had one), so they can only be copied, never recalled.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator, Set

from env.task_spec import Task

# Quoted text in a description: the task's own names and values.
_QUOTED = re.compile(r"'([^'\s]{2,64})'")
_SEGMENT = re.compile(r"[a-z][a-z0-9-]*[a-z0-9]")
# Segments that are AWS vocabulary or formats rather than the task's choice of name.
_KEEP = frozenset(
    {
        "alias", "fifo", "aws", "arn", "app", "prod", "dev", "db", "us", "east", "west", "json",
        "txt", "csv", "com", "example", "http", "https", "tcp", "udp", "default", "true",
        "false", "none", "all", "any", "public", "private",
    }
)  # fmt: skip
_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


def _word(rng: random.Random) -> str:
    # Pronounceable nonsense (2-3 syllables): a fixed word list lets a model guess names from
    # the list it memorised; names it has never seen can only be copied from the task.
    syllables = [rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(rng.randint(2, 3))]
    return "".join(syllables) + (rng.choice(_CONSONANTS) if rng.random() < 0.5 else "")


def renamable_names(task: Task) -> list[str]:
    """The name segments of ``task`` that a variant renames, in first-seen order."""
    seen: dict[str, None] = {}
    for quoted in _QUOTED.findall(task.description):
        for part in re.split(r"[/.]", quoted):
            if _SEGMENT.fullmatch(part) and part not in _KEEP and len(part) >= 3:
                seen.setdefault(part, None)
    return list(seen)


def fresh_name(old: str, rng: random.Random, taken: set[str]) -> str:
    """A new name shaped like ``old`` (as many ``-`` parts; digits kept where it had some)."""
    parts = old.split("-")
    for _ in range(100):
        new_parts = []
        for part in parts:
            if part.isdigit():
                new_parts.append(str(rng.randint(1, 10 ** len(part) - 1)).zfill(len(part)))
            else:
                new_parts.append(_word(rng))
        name = "-".join(new_parts)
        if name not in taken and name != old:
            taken.add(name)
            return name
    raise ValueError(f"could not find a fresh name for {old!r}")


def _substitute(text: str, mapping: dict[str, str]) -> str:
    # Whole name segments only: 'logs' must not change inside 'team-logs' or 'logs-archive',
    # nor 'zip' inside a catalog marker such as '$zip'.
    pattern = re.compile(
        r"(?<![A-Za-z0-9_$-])("
        + "|".join(map(re.escape, sorted(mapping, key=len, reverse=True)))
        + r")(?![A-Za-z0-9_-])"
    )
    return pattern.sub(lambda m: mapping[m.group(1)], text)


def renamed_task(
    task: Task, rng: random.Random, suffix: str, avoid: Set[str] = frozenset(), *,
    task_id: str | None = None,
) -> Task | None:  # fmt: skip
    """``task`` with every renamable name replaced consistently; None if it names nothing.
    No new name is one of ``avoid``; the copy's id is ``task_id`` (default ``<id>-<suffix>``)."""
    names = renamable_names(task)
    if not names:
        return None
    taken: set[str] = set(names) | set(avoid)
    mapping = {old: fresh_name(old, rng, taken) for old in names}
    data = task.model_dump(mode="json", exclude_defaults=False)
    data["id"] = task_id or f"{task.id}-{suffix}"
    renamed = json.loads(_substitute(json.dumps(data), mapping))
    return Task.model_validate(renamed)


def task_variants(task: Task, count: int, seed: int) -> Iterator[Task]:
    """Up to ``count`` renamed copies of ``task`` (none if it names no resource), for SFT
    demonstrations: none of them uses a name of the evaluation's variants."""
    rng = random.Random(f"variants:{seed}:{task.id}")
    avoid = eval_names(task)
    for k in range(count):
        variant = renamed_task(task, rng, f"v{k}", avoid)
        if variant is None:
            return
        yield variant


# ---- variants by id: every process that can look a task up can rebuild its variants -----------
#
# ``<task id>@<family><k>`` names the k-th renamed copy of a task in a family. The family decides
# who may see it: ``eval`` copies make the held-out ``new_names`` view (the same skills on names
# never seen in training); ``rl`` copies are what GRPO plays, a fresh one per group. The first
# ``EVAL_POOL`` eval copies own their names: no other family (and no SFT demonstration) ever uses
# one of them, so a policy cannot have met an evaluation name anywhere in training.

VARIANT_SEP = "@"
EVAL_FAMILY = "eval"
RL_FAMILY = "rl"
FAMILIES = (EVAL_FAMILY, RL_FAMILY)
EVAL_POOL = 8
_VARIANT_ID = re.compile(r"^(?P<base>[^@]+)@(?P<family>[a-z]+)(?P<k>\d+)$")


def variant_id(task_id: str, family: str, k: int) -> str:
    """The id of the ``k``-th copy of ``task_id`` in ``family``."""
    if family not in FAMILIES:
        raise ValueError(f"variant family {family!r}: use one of {FAMILIES}")
    if family == EVAL_FAMILY and not 0 <= k < EVAL_POOL:
        raise ValueError(f"eval variant {k}: the evaluation owns variants 0..{EVAL_POOL - 1}")
    return f"{task_id}{VARIANT_SEP}{family}{k}"


def parse_variant_id(task_id: str) -> tuple[str, str, int] | None:
    """(base task id, family, k) of a variant id; None for an id that names no variant."""
    match = _VARIANT_ID.match(task_id)
    if match is None:
        return None
    return match["base"], match["family"], int(match["k"])


def base_task_id(task_id: str) -> str:
    """The task a variant id copies (an ordinary id is its own base)."""
    parsed = parse_variant_id(task_id)
    return parsed[0] if parsed else task_id


_EVAL_NAMES: dict[tuple[str, str], frozenset[str]] = {}


def eval_names(task: Task) -> frozenset[str]:
    """Every name the evaluation's copies of ``task`` use (reserved: training never sees them)."""
    key = (task.id, task.description)
    if key not in _EVAL_NAMES:
        names: set[str] = set()
        for k in range(EVAL_POOL):
            copy = variant(task, EVAL_FAMILY, k)
            if copy is None:
                break
            names.update(renamable_names(copy))
        _EVAL_NAMES[key] = frozenset(names)
    return _EVAL_NAMES[key]


def variant(task: Task, family: str, k: int) -> Task | None:
    """The ``k``-th copy of ``task`` in ``family`` (None if the task names nothing to rename).
    Seeded by the id alone, so any process rebuilds the same copy."""
    vid = variant_id(task.id, family, k)
    rng = random.Random(f"variant:{vid}")
    avoid = frozenset() if family == EVAL_FAMILY else eval_names(task)
    return renamed_task(task, rng, "", avoid, task_id=vid)
