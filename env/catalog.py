"""The task catalog: task records (``env.task_spec``) loaded from the YAML files in ``env/tasks/``.

Every file is validated when the catalog loads, and every problem is reported as
``env/tasks/x.yaml: task 'id': field 'checks[0].expect': <what is wrong>``. A catalog looks
tasks up by id or tier; a variant id (``<task>@<family><k>``) gives a renamed copy of a catalog
task (``env.task_variants``), built on first use.
"""

from __future__ import annotations

import difflib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path

import yaml
from pydantic import ValidationError

from env.task_spec import Task
from env.task_variants import parse_variant_id, variant
from env.tiers import TIERS

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
_VARIANT_CACHE = 512  # renamed copies a catalog keeps built (RL plays a fresh one per group)


class CatalogError(ValueError):
    """One or more task files are invalid; the message lists every problem found."""


# ---------------------------------------------------------------------------------
# Loading


class Catalog:
    """All tasks, in file then file-order; look them up by id or tier."""

    def __init__(self, tasks: Sequence[Task]) -> None:
        self.tasks: tuple[Task, ...] = tuple(tasks)
        self._by_id = {t.id: t for t in self.tasks}
        self._variants: OrderedDict[str, Task] = OrderedDict()  # the newest variants looked up

    @property
    def tiers(self) -> tuple[str, ...]:
        """Tier names that have tasks, easiest first."""
        present = {t.tier for t in self.tasks}
        return tuple(t for t in TIERS if t in present)

    def by_id(self, task_id: str) -> Task:
        """The task ``task_id`` names; a variant id (``<task>@<family><k>``, see
        ``env.task_variants``) gives that renamed copy of a catalog task, built on first use."""
        task = self._by_id.get(task_id) or self._variants.get(task_id)
        if task is not None:
            return task
        parsed = parse_variant_id(task_id)
        if parsed is not None and parsed[0] in self._by_id:
            base, family, k = parsed
            try:
                copy = variant(self._by_id[base], family, k)
            except ValueError as exc:
                raise KeyError(f"task '{task_id}': {exc}") from None
            if copy is None:
                raise KeyError(
                    f"task '{task_id}': '{base}' names no resource to rename, so it has no "
                    "variants; use the task as written"
                )
            self._variants[task_id] = copy
            while len(self._variants) > _VARIANT_CACHE:
                self._variants.popitem(last=False)
            return copy
        close = difflib.get_close_matches(task_id, self._by_id, n=3)
        raise KeyError(
            f"no task '{task_id}' in the catalog; close matches: {close} "
            "(list them with `rlfarm tasks list`)"
        )

    def by_tier(self, tier: str) -> list[Task]:
        if tier not in TIERS:
            raise ValueError(f"unknown tier '{tier}'; choose one of {list(TIERS)}")
        return [t for t in self.tasks if t.tier == tier]

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-", "str", "ApiCall")):
            continue  # pydantic's internal validator names, not a place in the YAML
        else:
            out += f".{part}" if out else part
    return out or "<task>"


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(TASKS_DIR.parent.parent))
    except ValueError:
        return str(path)


def _load_file(path: Path, errors: list[str]) -> list[Task]:
    where = _display(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        errors.append(f"{where}: not valid YAML: {exc}")
        return []
    if not isinstance(doc, dict) or set(doc) != {"tier", "tasks"}:
        errors.append(f"{where}: must be a mapping with exactly the keys 'tier' and 'tasks'")
        return []
    tier, raw_tasks = doc["tier"], doc["tasks"]
    if tier not in TIERS:
        errors.append(f"{where}: tier '{tier}' is not one of {list(TIERS)}")
        return []
    if not isinstance(raw_tasks, list):
        errors.append(f"{where}: 'tasks' must be a list of task mappings")
        return []
    tasks = []
    for i, raw in enumerate(raw_tasks):
        if not isinstance(raw, dict):
            errors.append(f"{where}: tasks[{i}] is not a mapping")
            continue
        name = f"task '{raw.get('id', f'#{i}')}'"
        if "tier" in raw:
            errors.append(f"{where}: {name}: field 'tier': remove it, the file sets tier {tier}")
            continue
        try:
            tasks.append(Task.model_validate({**raw, "tier": tier}))
        except ValidationError as exc:
            for err in exc.errors():
                errors.append(f"{where}: {name}: field '{_loc(err['loc'])}': {err['msg']}")
    return tasks


def load_catalog(path: Path | None = None) -> Catalog:
    """Load and validate every ``*.yaml`` in ``path`` (default ``env/tasks``) or one file.

    Raises ``CatalogError`` listing every problem (file, task, field, what to fix).
    """
    path = TASKS_DIR if path is None else Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.yaml"), key=_file_order)
    elif path.is_file():
        files = [path]
    else:
        raise CatalogError(f"{path}: no such task file or directory")
    if not files:
        raise CatalogError(f"{path}: no *.yaml task files in this directory")
    errors: list[str] = []
    tasks: list[Task] = []
    for f in files:
        tasks.extend(_load_file(f, errors))
    seen: dict[str, str] = {}
    for t in tasks:
        if t.id in seen:
            errors.append(f"task id '{t.id}' is defined twice (tiers {seen[t.id]} and {t.tier})")
        seen[t.id] = t.tier
    if errors:
        raise CatalogError("invalid task catalog:\n  " + "\n  ".join(errors))
    return Catalog(tasks)


def _file_order(path: Path) -> tuple[int, str]:
    stem = path.stem
    return (TIERS.index(stem) if stem in TIERS else len(TIERS), stem)
