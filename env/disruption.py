"""Optional disruption: one destructive change to the world in the middle of an episode.

Real infrastructure changes under an operator's feet; an agent that only ever sees
a static world learns to fire off commands without checking. With disruption on
(it is off by default), an episode of a chosen tier suffers one destructive change after
the agent's command at a seeded step: a resource that exists at that moment is
deleted or loses its configuration (an S3 bucket, a DynamoDB table, an SQS queue,
an SNS topic, a Lambda function, a role's attached policy). The agent is not told;
it sees the consequences in later outputs and in its progress, and must repair them.

The choice is deterministic given the episode seed and the world at that step, so a
GRPO group that acts identically meets identical disruption. The reward stays fair: the
progress terms telescope, so a disruption lowers what is still to be earned, never the
value of finishing (see ``env.reward``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

ApiCaller = Callable[[str, str, dict], dict]


class DisruptionConfig(BaseModel):
    """When a disruption strikes. ``enabled=False`` (the default) turns it off entirely."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = False
    tiers: frozenset[str] = Field(
        default=frozenset({"intermediate", "advanced", "expert"}),
        description="Task tiers whose episodes get a disruption.",
    )
    probability: float = Field(
        default=1.0, ge=0, le=1, description="Chance that an eligible episode gets a disruption."
    )
    earliest_step: int = Field(default=1, ge=1, description="First step a disruption may follow.")
    latest_step: int = Field(default=4, ge=1, description="Last step a disruption may follow.")

    def plan(self, tier: str, seed: int, max_steps: int) -> int | None:
        """The step after which the disruption strikes in this episode, or None for none."""
        if not self.enabled or tier not in self.tiers:
            return None
        # The seed strings keep the feature's first name, so seeded episodes replay unchanged.
        rng = random.Random(f"chaos:{seed}")
        if rng.random() >= self.probability:
            return None
        last = min(self.latest_step, max_steps - 1)
        if last < self.earliest_step:
            return None
        return rng.randint(self.earliest_step, last)


@dataclass(frozen=True)
class _Target:
    kind: str
    name: str
    apply: Callable[[ApiCaller], None]


def inject(call: ApiCaller, seed: int, step: int) -> str | None:
    """Apply one destructive change to the world behind ``call``; describe it, or None."""
    targets = sorted(_targets(call), key=lambda t: (t.kind, t.name))
    if not targets:
        return None
    target = random.Random(f"chaos:{seed}:{step}").choice(targets)
    target.apply(call)
    return f"{target.kind} {target.name}"


def _safe(call: ApiCaller, service: str, operation: str, params: dict[str, Any]) -> dict:
    from env.grader import ApiCallError

    try:
        return call(service, operation, params)
    except ApiCallError:
        return {}


def _targets(call: ApiCaller) -> list[_Target]:
    found: list[_Target] = []
    for bucket in _safe(call, "s3", "ListBuckets", {}).get("Buckets", []):
        found.append(_Target("deleted S3 bucket", bucket["Name"], _delete_bucket(bucket["Name"])))
    for table in _safe(call, "dynamodb", "ListTables", {}).get("TableNames", []):
        delete = _op("dynamodb", "DeleteTable", TableName=table)
        found.append(_Target("deleted DynamoDB table", table, delete))
    for url in _safe(call, "sqs", "ListQueues", {}).get("QueueUrls", []):
        found.append(_Target("deleted SQS queue", url, _op("sqs", "DeleteQueue", QueueUrl=url)))
    for topic in _safe(call, "sns", "ListTopics", {}).get("Topics", []):
        arn = topic["TopicArn"]
        found.append(_Target("deleted SNS topic", arn, _op("sns", "DeleteTopic", TopicArn=arn)))
    for fn in _safe(call, "lambda", "ListFunctions", {}).get("Functions", []):
        name = fn["FunctionName"]
        delete = _op("lambda", "DeleteFunction", FunctionName=name)
        found.append(_Target("deleted Lambda function", name, delete))
    for role in _safe(call, "iam", "ListRoles", {}).get("Roles", []):
        role_name = role["RoleName"]
        attached = _safe(call, "iam", "ListAttachedRolePolicies", {"RoleName": role_name})
        for policy in attached.get("AttachedPolicies", []):
            found.append(
                _Target(
                    "detached IAM policy",
                    f"{policy['PolicyArn']} from role {role_name}",
                    _op(
                        "iam",
                        "DetachRolePolicy",
                        RoleName=role_name,
                        PolicyArn=policy["PolicyArn"],
                    ),
                )
            )
    return found


def _op(service: str, operation: str, **params: Any) -> Callable[[ApiCaller], None]:
    def apply(call: ApiCaller) -> None:
        _safe(call, service, operation, params)

    return apply


def _delete_bucket(name: str) -> Callable[[ApiCaller], None]:
    def apply(call: ApiCaller) -> None:
        versions = _safe(call, "s3", "ListObjectVersions", {"Bucket": name})
        for item in versions.get("Versions", []) + versions.get("DeleteMarkers", []):
            _safe(
                call,
                "s3",
                "DeleteObject",
                {"Bucket": name, "Key": item["Key"], "VersionId": item["VersionId"]},
            )
        for obj in _safe(call, "s3", "ListObjectsV2", {"Bucket": name}).get("Contents", []):
            _safe(call, "s3", "DeleteObject", {"Bucket": name, "Key": obj["Key"]})
        _safe(call, "s3", "DeleteBucket", {"Bucket": name})

    return apply
