"""Dataset eval: one greedy reply per held-out SFT row, scored against the row's reference.

Rows are the env's SFT export (``{"messages", "task_id", "tier", "kind"}``) for the held-out
tasks only; the prompt is ``messages[:-1]`` and the reference command ``messages[-1]``.
``heldout_rows`` exports them once per task set and caches the file in the eval directory.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from cluster.evaluation.scoring import RowResult, RowScore, score_reply

DEFAULT_MAX_TOKENS = 64


def load_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def heldout_rows(task_ids: Sequence[str], cache_dir: Path, seed: int) -> list[dict]:
    """SFT rows of ``task_ids`` (played against the real sandbox), cached in ``cache_dir``.

    The cache is keyed by the task set and seed: a different split re-exports instead of
    silently scoring the wrong tasks.
    """
    from env.catalog import Catalog, load_catalog
    from env.sft_export import export_sft

    cache_dir.mkdir(parents=True, exist_ok=True)
    rows_path, key_path = cache_dir / "heldout_sft.jsonl", cache_dir / "heldout_sft.key.json"
    key = {"tasks": sorted(task_ids), "seed": seed}
    if rows_path.exists() and key_path.exists() and json.loads(key_path.read_text()) == key:
        return load_rows(rows_path)
    keep = set(task_ids)
    catalog = Catalog([t for t in load_catalog().tasks if t.id in keep])
    with tempfile.TemporaryDirectory(prefix="rlfarm-eval-") as tmp:
        # val_fraction 0: every held-out task's rows go to the one file we keep.
        export_sft(rows_path, val_out=Path(tmp) / "unused.jsonl", val_fraction=0.0,
                   seed=seed, catalog=catalog)  # fmt: skip
    key_path.write_text(json.dumps(key))
    return load_rows(rows_path)


async def evaluate_rows(
    policy, rows: Sequence[dict], max_tokens: int = DEFAULT_MAX_TOKENS, concurrency: int = 1,
    on_row: Callable[[RowResult], None] | None = None,
) -> list[RowResult]:  # fmt: skip
    """Score ``policy``'s greedy reply to every row. ``concurrency`` 1 makes ``latency_s`` the
    unloaded per-call latency; a failed request scores as a reply with no command. ``on_row``
    sees each result as it is scored (progress)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(row: dict) -> RowResult:
        *context, last = row["messages"]  # a training weight on a context turn is not sent
        reference = last["content"]
        async with gate:
            started = time.perf_counter()
            try:
                prompt = [{"role": m["role"], "content": m["content"]} for m in context]
                reply, error = await policy.reply(prompt, max_tokens), ""
            except Exception as exc:  # one bad row (too long, server hiccup) must not end the eval
                reply, error = "", f"{type(exc).__name__}: {exc}"
            latency = time.perf_counter() - started
        score = score_reply(reply, reference) if not error else RowScore(*[False] * 5, None)
        result = RowResult(
            task_id=row["task_id"], tier=row["tier"], kind=row.get("kind", ""), reply=reply,
            reference=reference, score=score, latency_s=latency, error=error,
        )  # fmt: skip
        if on_row is not None:
            on_row(result)
        return result

    return list(await asyncio.gather(*(one(r) for r in rows)))
