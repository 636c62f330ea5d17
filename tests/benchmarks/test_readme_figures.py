"""The README's Measured figures are the latest recorded runs, and nothing else.

Each figure in the section is written after a tag naming where it comes from, e.g.
``<!-- soak result.faults_injected d -->38``: the newest line of ``benchmarks/results/soak.jsonl``,
its ``result.faults_injected``, formatted with ``d``. A new run of a benchmark appends a line, so
the README must be updated with it or this test fails; and a number in the section without a tag
fails too (only names such as SmolLM2-135M may carry digits).
"""

from __future__ import annotations

import re
from pathlib import Path

from benchmarks.records import RESULTS_DIR, latest

README = Path(__file__).resolve().parents[2] / "README.md"
# A figure: a number (a date, a signed percentage, 1e-05...) or a placeholder, never a unit
# after it ("82x" shows 82).
TAG = re.compile(
    r"<!-- (?P<bench>[\w-]+) (?P<path>[\w.-]+) (?P<fmt>\S*) -->"
    r"(?P<shown>[+-]?\d(?:[\d,:e+-]|\.(?=\d))*%?|\?|None)"
)
# Digits that are names, not measurements.
NAMES = ("SmolLM2-135M-Instruct", "SmolLM2-135M", "SmolLM2", "Qwen2.5", "Qwen2", "2-core",
         "4000-generation", "kill -9", "p50", "p99", "bench-soak", "make run")  # fmt: skip


def measured_section() -> str:
    text = README.read_text()
    start = text.index("## Measured")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def lookup(entry: dict, path: str):
    value = entry
    for part in path.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def test_every_figure_is_the_newest_recorded_run():
    tags = list(TAG.finditer(measured_section()))
    assert len(tags) >= 5, "the Measured section has lost its figures"
    for tag in tags:
        entry = latest(tag["bench"], RESULTS_DIR)
        value = lookup(entry, tag["path"])
        shown = tag["shown"]
        assert format(value, tag["fmt"]) == shown, (
            f"README shows {shown} for {tag['bench']} {tag['path']}; the newest run "
            f"({entry['date']}, {entry['command']}) has {format(value, tag['fmt'])}"
        )


def test_the_measured_section_has_no_number_without_a_record():
    untagged = TAG.sub("", measured_section())
    untagged = re.sub(r"\([^()]*\.(?:jsonl|md|yaml|py)\)", "", untagged)  # file links
    untagged = re.sub(r"`[^`]*`", "", untagged)  # commands and paths
    for name in NAMES:
        untagged = untagged.replace(name, "")
    stray = re.findall(r"[^\s]*\d[^\s]*", untagged)
    assert not stray, f"numbers in README's Measured section with no recorded run: {stray}"
