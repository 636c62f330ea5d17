"""Renamed task variants (env.task_variants) and their use by the SFT exporter."""

from __future__ import annotations

import json
import random
from pathlib import Path

from env.catalog import Catalog, load_catalog
from env.sft_export import export_sft
from env.task_variants import _substitute, renamable_names, renamed_task, task_variants

FULL = load_catalog()


def test_names_come_from_quoted_description_segments() -> None:
    assert renamable_names(FULL.by_id("s3-list-objects")) == ["reports-2024"]
    # AWS vocabulary inside a quoted value stays: 'alias/...' and '.fifo' are formats.
    assert all(n not in ("alias", "fifo") for t in FULL for n in renamable_names(t))
    fifo = next(t for t in FULL if "payments.fifo" in t.description)
    assert renamable_names(fifo) == ["payments"]


def test_rename_is_consistent_everywhere_and_shaped_like_the_original() -> None:
    task = FULL.by_id("s3-list-objects")
    variant = renamed_task(task, random.Random(1), "v0")
    assert variant is not None and variant.id == "s3-list-objects-v0"
    dumped = json.dumps(variant.model_dump(mode="json"))
    assert "reports-2024" not in dumped
    (new,) = (w.strip("'.") for w in variant.description.split() if w.startswith("'"))
    word, number = new.split("-")
    assert word.isalpha() and number.isdigit() and len(number) == 4
    assert new in variant.solution[0] and new in variant.hints[2]
    assert any(new in (c.expect or "") for c in variant.checks)


def test_variants_are_seeded_and_distinct() -> None:
    task = FULL.by_id("s3-list-objects")
    first = [v.description for v in task_variants(task, 4, seed=3)]
    assert first == [v.description for v in task_variants(task, 4, seed=3)]
    assert len(set(first)) == 4 and task.description not in first
    assert first != [v.description for v in task_variants(task, 4, seed=4)]
    # A task that names nothing has no variants.
    assert list(task_variants(FULL.by_id("s3-list-buckets"), 4, seed=3)) == []


def test_substitution_touches_whole_segments_only() -> None:
    text = "logs team-logs logs-archive $logs /app/logs logs.fifo"
    assert _substitute(text, {"logs": "amber"}) == (
        "amber team-logs logs-archive $logs /app/amber amber.fifo"
    )


def test_export_plays_variants_of_train_tasks_only(tmp_path: Path) -> None:
    ids = ("s3-list-objects", "sqs-set-visibility-timeout", "iam-user-in-group")
    catalog = Catalog([FULL.by_id(i) for i in ids])
    out = tmp_path / "train.jsonl"
    counts = export_sft(out, val_fraction=0.34, seed=5, catalog=catalog, variants=2)
    train = [json.loads(line) for line in out.read_text().splitlines()]
    val = [json.loads(line) for line in out.with_name("train.val.jsonl").read_text().splitlines()]
    assert counts["variant_tasks"] == 4  # 2 train tasks x 2 variants, all of which ran
    val_sources = {r["source_task"] for r in val}
    assert len(val_sources) == 1 and all(r["task_id"] in val_sources for r in val)
    assert not val_sources & {r["source_task"] for r in train}
    firsts = {
        r["task_id"]: r["messages"][-1]["content"] for r in train if r["kind"] == "first_step"
    }
    assert len(firsts) == 6  # each train task as written plus its two variants
    for task_id, answer in firsts.items():
        source = next(i for i in ids if task_id.startswith(i))
        if task_id != source:
            # The variant's demonstration uses the variant's names, never the original's.
            assert answer != firsts[source]
            assert answer.split()[:3] == firsts[source].split()[:3]


def test_export_in_two_sandbox_processes_writes_the_same_rows(tmp_path: Path) -> None:
    # Each export thread plays its share of the tasks in its own sandbox process; the files must not
    # depend on how many there were (order included) and progress must count every task.
    ids = ("s3-list-objects", "sqs-set-visibility-timeout", "iam-user-in-group")
    catalog = Catalog([FULL.by_id(i) for i in ids])
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    ticks: list[tuple[int, int]] = []
    counts_one = export_sft(one, val_fraction=0.34, seed=5, catalog=catalog, variants=2)
    counts_two = export_sft(
        two, val_fraction=0.34, seed=5, catalog=catalog, variants=2, workers=2,
        on_task=lambda done, total: ticks.append((done, total)),
    )  # fmt: skip
    assert counts_two == counts_one
    assert two.read_text() == one.read_text()
    assert two.with_name("two.val.jsonl").read_text() == one.with_name("one.val.jsonl").read_text()
    assert ticks[-1] == (7, 7) and len(ticks) == 7  # 3 tasks + 2 variants of each of 2 train tasks


# ---- variants by id: the evaluation's new_names view and RL's fresh copies ---------------------


def test_variant_ids_resolve_in_any_catalog_to_the_same_copy() -> None:
    from env.task_variants import EVAL_POOL, base_task_id, parse_variant_id, variant_id

    vid = variant_id("s3-list-objects", "rl", 41)
    assert vid == "s3-list-objects@rl41" and parse_variant_id(vid) == ("s3-list-objects", "rl", 41)
    assert base_task_id(vid) == "s3-list-objects" and parse_variant_id("s3-list-objects") is None
    first, again = FULL.by_id(vid), load_catalog().by_id(vid)
    assert first == again and first.id == vid and first.tier == "warmup"
    assert "reports-2024" not in first.description
    assert first.operations() == FULL.by_id("s3-list-objects").operations()
    assert FULL.by_id(variant_id("s3-list-objects", "rl", 42)).description != first.description
    # The evaluation owns a fixed pool of copies; other ids are refused with the reason.
    for bad, why in (
        ("s3-list-objects@eval8", f"0..{EVAL_POOL - 1}"),
        ("s3-list-buckets@rl3", "names no resource"),
        ("no-such-task@rl3", "no task"),
    ):
        try:
            FULL.by_id(bad)
        except KeyError as exc:
            assert why in str(exc), (bad, exc)
        else:
            raise AssertionError(f"{bad} resolved")


def test_no_training_copy_and_no_sft_copy_uses_an_evaluation_name() -> None:
    from env.task_variants import EVAL_POOL, eval_names, variant_id

    for task in (t for t in FULL if renamable_names(t)):
        reserved = eval_names(task)
        assert reserved and not reserved & set(renamable_names(task))
        eval_copies = {FULL.by_id(variant_id(task.id, "eval", k)).description
                       for k in range(EVAL_POOL)}  # fmt: skip
        assert len(eval_copies) == EVAL_POOL
        for k in range(0, 2000, 181):
            names = set(renamable_names(FULL.by_id(variant_id(task.id, "rl", k))))
            assert not names & reserved, (task.id, k, names & reserved)
        for sft in task_variants(task, 8, seed=0):
            assert not set(renamable_names(sft)) & reserved, (task.id, sft.id)
