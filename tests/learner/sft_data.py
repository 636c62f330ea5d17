"""A small synthetic AWS-CLI SFT set, shaped like env's exporter rows, with a held-out split.

Each row asks for one command built from a template and a resource name. The held-out rows are
(template, name) pairs never seen in training, though every template and every name is: exact
match on them needs the model to put the prompt's name into the right command.
"""

from __future__ import annotations

import json
from pathlib import Path

SYSTEM = "You are an AWS CLI agent. Reply with exactly one aws command."
TEMPLATES = [
    ("List the objects in the S3 bucket {n}.", "aws s3 ls s3://{n}"),
    ("Create an S3 bucket named {n}.", "aws s3 mb s3://{n}"),
    ("Delete the S3 bucket {n}.", "aws s3 rb s3://{n}"),
    ("Create an SQS queue called {n}.", "aws sqs create-queue --queue-name {n}"),
    ("Create an SNS topic called {n}.", "aws sns create-topic --name {n}"),
    ("Create a log group named {n}.", "aws logs create-log-group --log-group-name {n}"),
]
NAMES = ["logs", "data", "backup", "images", "reports", "archive", "events", "metrics"]


def row(t: int, n: int) -> dict:
    prompt, command = TEMPLATES[t]
    name = NAMES[n]
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": prompt.format(n=name)},
            {"role": "assistant", "content": command.format(n=name)},
        ],
        "task_id": f"synthetic-{t}-{n}",
        "tier": "warmup",
        "kind": "synthetic",
    }


def split() -> tuple[list[dict], list[dict]]:
    """Hold out one name per template (a diagonal), so every template and name stays in train."""
    train, held_out = [], []
    for t in range(len(TEMPLATES)):
        for n in range(len(NAMES)):
            (held_out if n == (t * 3) % len(NAMES) else train).append(row(t, n))
    return train, held_out


def write_split(directory: Path) -> tuple[Path, Path]:
    train, held_out = split()
    paths = directory / "train.jsonl", directory / "held_out.jsonl"
    for path, rows in zip(paths, (train, held_out), strict=True):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return paths
