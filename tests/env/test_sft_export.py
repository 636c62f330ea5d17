"""SFT export, run for real: canonical solutions played in ``AwsEnv`` (moto + awscli)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from env.catalog import Catalog, load_catalog
from env.environment import AwsEnv
from env.prompts import HINT_COMMAND, SYSTEM_PROMPT, render_task
from env.sandbox_pool import SandboxPool
from env.sft_export import (
    KINDS,
    export_sft,
    split_tasks,
    stable_text,
    wrong_variants,
)

FULL = load_catalog()
SUBSET = Catalog(
    [
        FULL.by_id(i)
        for i in (
            "s3-list-buckets",
            "sqs-set-visibility-timeout",
            "iam-user-in-group",
            "ec2-vpc-with-subnet",
            "sg-close-world-ssh",
            "drift-ssm-parameters",
        )
    ]
)


@pytest.fixture(scope="module")
def env() -> Iterator[AwsEnv]:
    pool = SandboxPool(processes=1).start()
    try:
        with AwsEnv(SUBSET, pool=pool, max_steps=20, max_output_chars=100_000) as e:
            yield e
    finally:
        pool.close()


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def exported(env: AwsEnv, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    out = tmp_path_factory.mktemp("sft") / "train.jsonl"
    counts = export_sft(out, val_fraction=0.34, seed=5, catalog=SUBSET, env=env)
    return out, out.with_name("train.val.jsonl"), counts


def test_rows_are_chats_ending_in_one_command(exported: tuple[Path, Path, dict]) -> None:
    out, val, counts = exported
    rows = read(out) + read(val)
    assert counts["train_rows"] + counts["val_rows"] == len(rows)
    assert {r["kind"] for r in rows} == set(KINDS)
    for row in rows:
        msgs = row["messages"]
        assert msgs[0] == {"role": "system", "content": SYSTEM_PROMPT}
        assert msgs[1] == {"role": "user", "content": render_task(SUBSET.by_id(row["task_id"]))}
        roles = [m["role"] for m in msgs[2:]]
        assert roles == ["assistant", "user"] * (len(roles) // 2) + ["assistant"]
        # Each row teaches its last command; earlier assistant turns are context (weight 0).
        assert "weight" not in msgs[-1]
        assert all(m.get("weight") == 0 for m in msgs[2:-1] if m["role"] == "assistant")
        answer = msgs[-1]["content"]
        assert answer.startswith("aws ") and "\n" not in answer and answer != HINT_COMMAND
        assert row["tier"] == SUBSET.by_id(row["task_id"]).tier
        for m in msgs[2:]:
            if m["role"] == "user":
                assert len(m["content"]) < 520  # ~400 characters of output plus framing


def test_split_is_by_task(exported: tuple[Path, Path, dict]) -> None:
    out, val, counts = exported
    train_tasks = {r["task_id"] for r in read(out)}
    val_tasks = {r["task_id"] for r in read(val)}
    assert train_tasks and val_tasks and not train_tasks & val_tasks
    assert train_tasks | val_tasks == {t.id for t in SUBSET}
    assert (counts["train_tasks"], counts["val_tasks"]) == (len(train_tasks), len(val_tasks))


def test_each_kind_carries_real_observations(exported: tuple[Path, Path, dict]) -> None:
    out, val, _ = exported
    rows = read(out) + read(val)
    by_kind = {k: [r for r in rows if r["kind"] == k] for k in KINDS}
    for row in by_kind["first_step"]:
        assert len(row["messages"]) == 3
    for row in by_kind["continuation"]:
        assert len(row["messages"]) >= 5
        assert row["messages"][-2]["content"].startswith("OK")
    for row in by_kind["failure_recovery"]:
        wrong, error, right = (m["content"] for m in row["messages"][-3:])
        assert error.startswith("Error\n") and wrong != right
    depths: dict[str, set[int]] = {}
    for row in by_kind["hint_use"]:
        asked = [m for m in row["messages"] if m["content"] == HINT_COMMAND]
        depths.setdefault(row["task_id"], set()).add(len(asked))
        hints = [m for m in row["messages"] if m["content"].startswith("Hint: ")]
        assert asked and len(asked) == len(hints)
        task = SUBSET.by_id(row["task_id"])
        assert hints[0]["content"] == f"Hint: {task.hints[0]}"
    # Every depth, so the deepest hint (the command itself) is always demonstrated too.
    assert depths == {t.id: {1, 2, 3} for t in SUBSET}
    # A multi-step id task: the row copies the VPC id it was shown in the previous turn.
    vpc = next(r for r in by_kind["continuation"] if r["task_id"] == "ec2-vpc-with-subnet")[
        "messages"
    ]
    vpc_id = json.loads(vpc[-2]["content"].removeprefix("OK\n"))
    assert f"--vpc-id {vpc_id} " in vpc[-1]["content"]


def test_export_is_deterministic_for_a_seed(
    env: AwsEnv, exported: tuple[Path, Path, dict], tmp_path: Path
) -> None:
    out, val, _ = exported
    again = tmp_path / "again.jsonl"
    export_sft(again, val_fraction=0.34, seed=5, catalog=SUBSET, env=env)
    assert again.read_text() == out.read_text()
    assert again.with_name("again.val.jsonl").read_text() == val.read_text()


def test_split_and_variants_units() -> None:
    tasks = list(FULL)
    train, val = split_tasks(tasks, 0.1, seed=3)
    assert not train & val and len(train) + len(val) == len(tasks)
    assert len(val) == round(len(tasks) * 0.1)
    assert split_tasks(tasks, 0.1, seed=3) == (train, val)
    assert split_tasks(tasks, 0.1, seed=4) != (train, val)
    with pytest.raises(ValueError, match="val_fraction"):
        split_tasks(tasks, 1.0, seed=0)
    variants = dict(wrong_variants("aws s3api put-object --bucket b --key k"))
    assert variants["missing --bucket"] == "aws s3api put-object --key k"
    assert variants["misspelt operation"] == "aws s3api put-objects --bucket b --key k"
    assert stable_text('"CreateDate": "2026-11-22T03:16:03.621681Z", "T": 1795317354.06') == (
        '"CreateDate": "2025-01-01T00:00:00Z", "T": 1735689600.0'
    )


def test_cli_rejects_bad_fraction(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cluster.commands.cli import main

    argv = ["env", "export-sft", "--out", str(tmp_path / "x.jsonl"), "--val-fraction", "1.5"]
    assert main(argv) == 2
    assert "--val-fraction must be in [0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()
