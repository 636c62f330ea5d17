"""SFT data export: chat rows built by really running every task's canonical solution.

For each task, ``export_sft`` plays the canonical solution in a real ``AwsEnv``
episode and turns it into rows of ``{"messages": [...], "task_id", "tier", "kind"}``,
where the last message is the assistant's one ``aws ...`` command, the one the row teaches
(earlier assistant turns carry ``"weight": 0``: context, not trained), and every earlier
turn is rendered by ``env.prompts`` (the same text the rollout loop shows):

- ``first_step``: system, task -> the first command;
- ``continuation``: the earlier commands with their real observations -> the next one;
- ``failure_recovery``: a plausible wrong command (a misspelt operation, or a dropped
  argument) with the real error it got -> the right command;
- ``hint_use``: ``aws help --task-hint`` once, twice and three times (one row each), with
  the real hint texts -> the next command.

Rows are split into train and validation BY TASK, so no task appears in both. The
export is deterministic for a seed: task order, split, seeds and the wrong commands all
come from it, and wall-clock timestamps in AWS outputs are replaced
by a fixed time (ids are already deterministic: the sandbox seeds them per task).
"""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from env.catalog import Catalog, load_catalog
from env.prompts import HINT_COMMAND, SYSTEM_PROMPT, render_observation, render_task
from env.task_spec import Task, resolve_command
from env.task_variants import task_variants

KINDS = ("first_step", "continuation", "failure_recovery", "hint_use")
# Whole outputs from the env: placeholders are resolved from the full JSON, the
# rendered observation is then cut by env.prompts like any other.
_OUTPUT_CHARS = 100_000
_MAX_STEPS = 20
# Wall-clock timestamps (ISO-8601 / `aws s3 ls` style, and epoch seconds 2020-2033).
_ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?")
_EPOCH_TIME = re.compile(r"(?<![\w.])1[5-9]\d{8}(?:\.\d+)?(?![\w.])")
_FIXED_ISO = "2025-01-01T00:00:00Z"
_FIXED_EPOCH = "1735689600.0"


@dataclass(frozen=True)
class Turn:
    """One command the assistant sent and the user turn that answered it."""

    command: str
    observation: str


class ExportError(RuntimeError):
    """A canonical solution did not run as the catalog says (a catalog bug)."""


def stable_text(text: str) -> str:
    """``text`` with wall-clock timestamps replaced by a fixed time."""
    return _EPOCH_TIME.sub(_FIXED_EPOCH, _ISO_TIME.sub(_FIXED_ISO, text))


def _render(obs: Any) -> str:
    return render_observation(
        command_success=obs.command_success,
        output=stable_text(obs.output),
        error=stable_text(obs.error),
        hint_text=obs.hint_text,
        task_achieved=obs.task_achieved,
    )


def _messages(task: Task, turns: Sequence[Turn], answer: str) -> list[dict[str, str]]:
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": render_task(task)},
    ]
    for turn in turns:
        # Weight 0: context the row shows, not what it teaches (a wrong command, a hint request,
        # or a command another row teaches); the row teaches only its last message.
        messages.append({"role": "assistant", "content": turn.command, "weight": 0})
        messages.append({"role": "user", "content": turn.observation})
    messages.append({"role": "assistant", "content": answer})
    return messages


def _row(task: Task, kind: str, turns: Sequence[Turn], answer: str) -> dict[str, Any]:
    return {
        "messages": _messages(task, turns, answer),
        "task_id": task.id,
        "tier": task.tier,
        "kind": kind,
    }


def wrong_variants(command: str) -> list[tuple[str, str]]:
    """Plausible mistakes for ``command``: (label, wrong command), most instructive first.

    Dropped options (a required one gives "arguments are required"), then a misspelt
    operation (the CLI answers with an invalid-choice error).
    """
    argv = shlex.split(command)
    out = []
    for i in range(3, len(argv)):
        if argv[i].startswith("--"):
            has_value = i + 1 < len(argv) and not argv[i + 1].startswith("--")
            rest = argv[:i] + argv[i + 1 + has_value :]
            out.append((f"missing {argv[i]}", shlex.join(rest)))
    op = argv[2]
    typo = op[:-1] if op.endswith("s") else op + "s"
    out.append(("misspelt operation", shlex.join([*argv[:2], typo, *argv[3:]])))
    return out


class TaskPlayer:
    """Plays one task in an ``AwsEnv`` slot: canonical runs, wrong turns, hints."""

    def __init__(self, env: Any, task: Task, seed: int) -> None:
        self.env, self.task, self.seed = env, task, seed

    def canonical(self) -> list[Turn]:
        """The canonical solution's turns (commands resolved, observations rendered)."""
        self.env.reset(task_id=self.task.id, seed=self.seed)
        turns: list[Turn] = []
        outputs: list[str] = []
        for template in self.task.solution_steps(self.seed):
            command = resolve_command(template, outputs)
            obs = self.env.step(command)
            if not obs.command_success:
                raise ExportError(f"task {self.task.id}: {command!r} failed: {obs.error}")
            outputs.append(obs.output)
            turns.append(Turn(command, _render(obs)))
        if not obs.task_achieved:
            raise ExportError(f"task {self.task.id}: canonical solution did not achieve it")
        return turns

    def failed_turn(self, prefix: Sequence[Turn], command: str) -> Turn | None:
        """A wrong version of ``command`` that really fails after ``prefix``, with its error."""
        for _label, wrong in wrong_variants(command):
            self.env.reset(task_id=self.task.id, seed=self.seed)
            for turn in prefix:
                self.env.step(turn.command)
            obs = self.env.step(wrong)
            if not obs.command_success:
                return Turn(wrong, _render(obs))
        return None

    def hint_turns(self, depth: int) -> list[Turn]:
        """``depth`` hint requests at the start of an episode, with the real hint texts."""
        self.env.reset(task_id=self.task.id, seed=self.seed)
        return [Turn(HINT_COMMAND, _render(self.env.step(HINT_COMMAND))) for _ in range(depth)]


def task_rows(player: TaskPlayer, rng: random.Random) -> Iterator[dict[str, Any]]:
    """All rows for one task (see the module docstring for the kinds)."""
    task = player.task
    turns = player.canonical()
    yield _row(task, "first_step", [], turns[0].command)
    for k in range(1, len(turns)):
        yield _row(task, "continuation", turns[:k], turns[k].command)
    k = rng.randrange(len(turns))
    failed = player.failed_turn(turns[:k], turns[k].command)
    if failed is not None:
        yield _row(task, "failure_recovery", [*turns[:k], failed], turns[k].command)
    # Every hint depth: the last hint spells the command out, so the deepest row teaches
    # copying it, the shallower ones acting on a partial hint.
    for depth in range(1, len(task.hints) + 1):
        yield _row(task, "hint_use", player.hint_turns(depth), turns[0].command)


def split_tasks(tasks: Sequence[Task], val_fraction: float, seed: int) -> tuple[set[str], set[str]]:
    """(train ids, val ids): a seeded shuffle of the tasks, cut by ``val_fraction``."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    ids = sorted(t.id for t in tasks)
    random.Random(seed).shuffle(ids)
    n_val = round(len(ids) * val_fraction)
    if val_fraction > 0 and len(ids) > 1:
        n_val = min(max(n_val, 1), len(ids) - 1)
    return set(ids[n_val:]), set(ids[:n_val])


def export_rows(catalog: Catalog, env: Any, seed: int = 0) -> Iterator[dict[str, Any]]:
    """Rows for every task of ``catalog``, played in ``env`` (an ``AwsEnv``)."""
    for task in catalog:
        # One rng per task: adding a task does not change the rows of the others.
        rng = random.Random(f"{seed}:{task.id}")
        yield from task_rows(TaskPlayer(env, task, seed=rng.randrange(1 << 16)), rng)


def with_variants(
    catalog: Catalog, task_ids: set[str], count: int, seed: int
) -> tuple[Catalog, dict[str, str]]:
    """``catalog`` plus ``count`` renamed variants (``env.task_variants``) of each ``task_ids``,
    and every task's source id (its own for the tasks as written)."""
    sources = {t.id: t.id for t in catalog}
    variants = []
    for task in catalog:
        if task.id in task_ids:
            for variant in task_variants(task, count, seed):
                variants.append(variant)
                sources[variant.id] = task.id
    return Catalog([*catalog, *variants]), sources


def variant_rows(
    catalog: Catalog,
    sources: dict[str, str],
    env: Any,
    seed: int,
    on_task: Callable[[int, int], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """``export_rows`` over a catalog with variants, each row tagged with its ``source_task``.

    A variant whose renamed solution fails or does not achieve its checks is skipped (a rename
    broke an AWS naming rule); an original task that fails is a catalog bug and raises.
    ``on_task(done, total)`` is told after each task (progress for people).
    """
    total = len(list(catalog))
    for done, task in enumerate(catalog, 1):
        if on_task is not None and done > 1:
            on_task(done - 1, total)
        source = sources[task.id]
        try:
            rows = list(export_rows(Catalog([task]), env, seed))
        except Exception:
            # Setup or solution of a renamed copy can fail in any way the env reports a bad
            # call; the original's failure is a catalog bug and propagates.
            if source == task.id:
                raise
            continue
        for row in rows:
            row["source_task"] = source
            yield row
    if on_task is not None:
        on_task(total, total)


def _write(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def export_sft(
    out: Path,
    *,
    val_out: Path | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    catalog: Catalog | None = None,
    env: Any = None,
    variants: int = 0,
    on_task: Callable[[int, int], None] | None = None,
    workers: int = 1,
) -> dict[str, int]:
    """Write train rows to ``out`` and validation rows to ``val_out``.

    ``val_out`` defaults to ``<out stem>.val.jsonl`` beside ``out``. ``env`` defaults
    to a fresh ``AwsEnv`` on its own one-process pool (it must know the variants' ids when
    ``variants`` > 0). ``variants``: renamed copies of each TRAIN task to play too; validation
    tasks are only ever played as written. ``workers`` > 1 (without ``env``) plays the tasks in
    that many sandbox processes at once; the rows are the same, in the same order. Returns row and
    task counts.
    """
    out = Path(out)
    val_out = Path(val_out) if val_out else out.with_name(f"{out.stem}.val.jsonl")
    if val_out.resolve() == out.resolve():
        raise ValueError(f"--val-out must differ from --out (both are {out})")
    catalog = catalog if catalog is not None else load_catalog()
    train_ids, val_ids = split_tasks(list(catalog), val_fraction, seed)
    expanded, sources = with_variants(catalog, train_ids, variants, seed)
    if env is not None:
        rows = list(variant_rows(expanded, sources, env, seed, on_task))
    else:
        rows = _play_sharded(expanded, sources, seed, max(1, workers), on_task)
    played = {r["task_id"] for r in rows}
    return {
        "train_rows": _write(out, (r for r in rows if r["source_task"] in train_ids)),
        "val_rows": _write(val_out, (r for r in rows if r["source_task"] in val_ids)),
        "train_tasks": len(train_ids),
        "val_tasks": len(val_ids),
        "variant_tasks": len(played) - len(catalog),
    }


def export_workers() -> int:
    """Default sandbox processes for an export: one per core, at most 4 (each holds a moto)."""
    return max(1, min(4, os.cpu_count() or 1))


def _play_sharded(
    catalog: Catalog,
    sources: dict[str, str],
    seed: int,
    workers: int,
    on_task: Callable[[int, int], None] | None,
) -> list[dict[str, Any]]:
    """``variant_rows`` of every task, played by ``workers`` threads that each drive their own
    env and sandbox process (moto state never crosses them); rows come back in catalog order."""
    from concurrent.futures import ThreadPoolExecutor

    tasks = list(catalog)
    shards = [tasks[k::workers] for k in range(workers) if tasks[k::workers]]
    lock = threading.Lock()
    done = [0]

    def tick() -> None:
        with lock:
            done[0] += 1
            if on_task is not None:
                on_task(done[0], len(tasks))

    def play(shard: list[Task]) -> dict[str, list[dict[str, Any]]]:
        by_task: dict[str, list[dict[str, Any]]] = {t.id: [] for t in shard}
        with _own_env(catalog) as own:
            for task in shard:
                for row in variant_rows(Catalog([task]), sources, own, seed):
                    by_task[task.id].append(row)
                tick()
        return by_task

    with ThreadPoolExecutor(max_workers=len(shards), thread_name_prefix="sft-export") as pool:
        played: dict[str, list[dict[str, Any]]] = {}
        for part in pool.map(play, shards):
            played.update(part)
    return [row for task in tasks for row in played[task.id]]


@contextmanager
def _own_env(catalog: Catalog) -> Iterator[Any]:
    """An ``AwsEnv`` over ``catalog`` on its own one-process sandbox pool."""
    from env.environment import AwsEnv
    from env.sandbox_pool import SandboxPool

    pool = SandboxPool(processes=1).start()
    try:
        with AwsEnv(
            catalog, pool=pool, max_steps=_MAX_STEPS, max_output_chars=_OUTPUT_CHARS
        ) as env:
            yield env
    finally:
        pool.close()


# ---------------------------------------------------------------------------------
# CLI: `rlfarm env export-sft --out FILE [--val-out FILE] [--val-fraction F] [--seed S]
#      [--variants N]`
