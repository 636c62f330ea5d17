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
from collections.abc import Iterator

from env.catalog import Task

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


def renamed_task(task: Task, rng: random.Random, suffix: str) -> Task | None:
    """``task`` with every renamable name replaced consistently; None if it names nothing."""
    names = renamable_names(task)
    if not names:
        return None
    taken: set[str] = set(names)
    mapping = {old: fresh_name(old, rng, taken) for old in names}
    data = task.model_dump(mode="json", exclude_defaults=False)
    data["id"] = f"{task.id}-{suffix}"
    renamed = json.loads(_substitute(json.dumps(data), mapping))
    return Task.model_validate(renamed)


def task_variants(task: Task, count: int, seed: int) -> Iterator[Task]:
    """Up to ``count`` renamed copies of ``task`` (none if it names no resource)."""
    rng = random.Random(f"variants:{seed}:{task.id}")
    for k in range(count):
        variant = renamed_task(task, rng, f"v{k}")
        if variant is None:
            return
        yield variant
