"""A small synthetic AWS-CLI SFT set, shaped like env's exporter rows, with a held-out split.

Each row asks, in one of several phrasings, for the read-only listing command of one resource
kind. The held-out rows are (phrasing, resource) pairs never seen in training, though every
phrasing and every resource is: exact match on them needs the model to pick the command from
the resource words, whatever the phrasing, rather than recall a memorised sentence.
"""

from __future__ import annotations

import json
from pathlib import Path

RESOURCES = [
    ("S3 buckets", "aws s3 ls"),
    ("SQS queues", "aws sqs list-queues"),
    ("SNS topics", "aws sns list-topics"),
    ("IAM users", "aws iam list-users"),
    ("IAM roles", "aws iam list-roles"),
    ("Lambda functions", "aws lambda list-functions"),
    ("DynamoDB tables", "aws dynamodb list-tables"),
    ("Kinesis streams", "aws kinesis list-streams"),
    ("ECR repositories", "aws ecr describe-repositories"),
    ("CloudWatch alarms", "aws cloudwatch describe-alarms"),
    ("EC2 instances", "aws ec2 describe-instances"),
    ("KMS keys", "aws kms list-keys"),
]
PHRASINGS = [
    "List the {r}.",
    "Show me all {r}.",
    "Which {r} exist?",
    "I need to see my {r}.",
    "Print every one of the {r} in this account.",
    "Give me the {r}, please.",
]
HELD_OUT_EVERY = 4  # one (phrasing, resource) pair in four is held out


def row(p: int, r: int) -> dict:
    resource, command = RESOURCES[r]
    return {
        "messages": [
            {"role": "user", "content": PHRASINGS[p].format(r=resource)},
            {"role": "assistant", "content": command},
        ],
        "task_id": f"synthetic-{p}-{r}",
        "tier": "warmup",
        "kind": "synthetic",
    }


def split() -> tuple[list[dict], list[dict]]:
    """Hold out a diagonal stripe of pairs: each phrasing and resource stays in training."""
    train, held_out = [], []
    for p in range(len(PHRASINGS)):
        for r in range(len(RESOURCES)):
            (held_out if (p + r) % HELD_OUT_EVERY == 0 else train).append(row(p, r))
    return train, held_out


def write_split(directory: Path) -> tuple[Path, Path]:
    train, held_out = split()
    paths = directory / "train.jsonl", directory / "held_out.jsonl"
    for path, rows in zip(paths, (train, held_out), strict=True):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return paths
