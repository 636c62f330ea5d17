"""The learner's CLI commands, parsed and run the way ``rlfarm`` runs them."""

from __future__ import annotations

import argparse
import json

import pytest

from learner.commands import register, register_bench
from tests.learner.sft_data import write_split


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="rlfarm")
    sub = root.add_subparsers(dest="command", required=True)
    register(sub)
    bench = sub.add_parser("bench").add_subparsers(dest="bench_command", required=True)
    register_bench(bench)
    return root


def run(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


def test_bench_learner_json_prints_the_headline_numbers(tiny_model_dir, capsys):
    code = run(
        ["bench", "learner", "--json", "--model", str(tiny_model_dir), "--updates", "2",
         "--groups", "2", "--group-size", "4", "--prompt-tokens", "24",
         "--completion-tokens", "8", "--device", "cpu"]
    )  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("tokens_per_s", "update_s_p50", "publish_s_p50"):
        assert result[key] > 0, key
    assert result["updates"] == 2
    assert result["trained_tokens_per_update"] == 2 * 4 * 8


def test_sft_command_runs_and_reports_json(tiny_model_dir, tmp_path, capsys):
    train, _ = write_split(tmp_path)
    code = run(
        ["sft", "--data", str(train), "--out", str(tmp_path / "out"), "--model",
         str(tiny_model_dir), "--max-steps", "2", "--batch-size", "4", "--json"]
    )  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["mode"] == "full" and result["steps"] == 2
    assert (tmp_path / "out" / "config.json").exists()


def test_builtin_model_names_need_the_cluster_resolver(tmp_path):
    train, _ = write_split(tmp_path)
    with pytest.raises(ValueError, match="builtin:tiny"):
        run(["sft", "--data", str(train), "--out", str(tmp_path / "out")])
    resolved = []
    root = argparse.ArgumentParser()
    register(root.add_subparsers(dest="command"), resolve_model=lambda m: resolved.append(m) or m)
    args = root.parse_args(["sft", "--data", str(train), "--out", str(tmp_path / "o")])
    assert args.resolve_model("builtin:tiny") == "builtin:tiny" and resolved == ["builtin:tiny"]
