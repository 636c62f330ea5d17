"""The catalog loader, the grader's check semantics, prompts, and `tasks list`.

Loader errors must name the file, the task, the field and the fix. Grader checks run
against hand-written ``ApiCaller`` fakes here (a dict of canned answers, named as a
fake); ``test_catalog_solutions.py`` runs them against the real sandbox.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from env.catalog import CatalogError, load_catalog
from env.grader import ApiCallError, ApiEvent, grade, truthy
from env.prompts import SYSTEM_PROMPT, render_observation, render_task, truncate
from env.task_spec import ApiCall, Task, build_zip, resolve_command, run_solution

GOOD_TASK = """
  - id: demo-bucket
    description: Create an S3 bucket named 'demo-bucket'.
    solution: [aws s3api create-bucket --bucket demo-bucket]
    checks:
      - name: bucket exists
        call: {service: s3, operation: HeadBucket, params: {Bucket: demo-bucket}}
    hints: [S3, CreateBucket, aws s3api create-bucket --bucket demo-bucket]
"""


def write(tmp_path: Path, body: str, tier: str = "beginner") -> Path:
    path = tmp_path / f"{tier}.yaml"
    path.write_text(f"tier: {tier}\ntasks:\n" + textwrap.dedent(body))
    return path


def load_error(tmp_path: Path, body: str, tier: str = "beginner") -> str:
    with pytest.raises(CatalogError) as info:
        load_catalog(write(tmp_path, body, tier))
    return str(info.value)


# -- loading ------------------------------------------------------------------------


def test_builtin_catalog_loads_with_every_tier() -> None:
    catalog = load_catalog()
    assert catalog.tiers == ("warmup", "beginner", "intermediate", "advanced", "expert")
    assert len({t.id for t in catalog}) == len(catalog) >= 120
    for task in catalog:
        assert len(task.hints) == 3
        assert task.setup_steps(0) == task.setup_steps(0)
    with pytest.raises(KeyError, match="close matches"):
        catalog.by_id("s3-list-bucket")
    with pytest.raises(ValueError, match="unknown tier"):
        catalog.by_tier("wizard")


def test_minimal_file_loads(tmp_path: Path) -> None:
    catalog = load_catalog(write(tmp_path, GOOD_TASK))
    assert [t.id for t in catalog] == ["demo-bucket"]
    assert catalog.by_id("demo-bucket").tier == "beginner"


def test_unknown_field_is_reported_with_file_task_and_field(tmp_path: Path) -> None:
    body = GOOD_TASK.replace("    hints:", "    hint_levels: 3\n    hints:")
    msg = load_error(tmp_path, body)
    assert "beginner.yaml: task 'demo-bucket': field 'hint_levels'" in msg
    assert "Extra inputs are not permitted" in msg


def test_bad_jmespath_names_the_check(tmp_path: Path) -> None:
    body = GOOD_TASK.replace(
        "params: {Bucket: demo-bucket}}", "params: {Bucket: demo-bucket}}\n        expect: 'a[?'"
    )
    msg = load_error(tmp_path, body)
    assert "field 'checks[0].expect'" in msg and "not valid JMESPath" in msg


def test_negation_precedence_trap_is_refused(tmp_path: Path) -> None:
    body = GOOD_TASK.replace(
        "params: {Bucket: demo-bucket}}",
        "params: {Bucket: demo-bucket}}\n        expect: \"!Grants[?Grantee.URI=='x']\"",
    )
    assert "wrap what you mean to negate in parentheses" in load_error(tmp_path, body)


def test_unknown_operation_suggests_close_names(tmp_path: Path) -> None:
    msg = load_error(tmp_path, GOOD_TASK.replace("HeadBucket", "HeadBuckets"))
    assert "field 'checks[0].call'" in msg and "'HeadBucket'" in msg


def test_file_urls_and_non_aws_commands_are_refused(tmp_path: Path) -> None:
    body = GOOD_TASK.replace(
        "solution: [aws s3api create-bucket --bucket demo-bucket]",
        "solution: ['aws s3api put-object --bucket b --key k --body fileb://x', 'ls -la']",
    )
    msg = load_error(tmp_path, body)
    assert "field 'solution[0]'" in msg and "reads a file" in msg
    assert "field 'solution[1]'" in msg and "aws <service> <operation>" in msg


def test_hints_must_be_three_and_tier_comes_from_the_file(tmp_path: Path) -> None:
    msg = load_error(tmp_path, GOOD_TASK.replace("CreateBucket, ", ""))
    assert "field 'hints'" in msg
    msg = load_error(
        tmp_path, GOOD_TASK.replace("  - id: demo-bucket", "  - id: demo-bucket\n    tier: expert")
    )
    assert "field 'tier': remove it, the file sets tier beginner" in msg


def test_placeholders_must_point_backwards(tmp_path: Path) -> None:
    body = GOOD_TASK.replace(
        "solution: [aws s3api create-bucket --bucket demo-bucket]",
        "solution: ['aws s3api create-bucket --bucket {{0:Location}}']",
    )
    assert "can only refer to an earlier step" in load_error(tmp_path, body)


def test_duplicate_ids_across_files_are_reported(tmp_path: Path) -> None:
    write(tmp_path, GOOD_TASK, "beginner")
    write(tmp_path, GOOD_TASK, "intermediate")
    with pytest.raises(CatalogError, match="'demo-bucket' is defined twice"):
        load_catalog(tmp_path)


def test_warmup_tasks_must_be_graded_on_the_audit_log(tmp_path: Path) -> None:
    assert "warmup tasks are read-only" in load_error(tmp_path, GOOD_TASK, tier="warmup")


def test_drift_choice_is_seeded_and_solution_repairs_exactly_it() -> None:
    task = load_catalog().by_id("drift-ssm-parameters")
    assert task.drift is not None
    chosen = {s: tuple(m.name for m in task.drift_mutations(s)) for s in range(30)}
    assert all(len(c) == task.drift.pick for c in chosen.values())
    assert len(set(chosen.values())) > 1  # the seed matters
    assert chosen[7] == tuple(m.name for m in task.drift_mutations(7))
    for seed, names in chosen.items():
        repairs = [c for m in task.drift.mutations if m.name in names for c in m.repair]
        assert task.solution_steps(seed) == [*task.solution, *repairs]
        assert len(task.setup_steps(seed)) == len(task.setup) + task.drift.pick


def test_zip_marker_builds_deterministic_zip_bytes() -> None:
    call = ApiCall(
        service="lambda",
        operation="CreateFunction",
        params={"Code": {"ZipFile": {"$zip": {"index.py": "def handler(e, c): pass\n"}}}},
    )
    data = call.resolved_params()["Code"]["ZipFile"]
    assert data[:2] == b"PK" and data == build_zip({"index.py": "def handler(e, c): pass\n"})


def test_resolve_command_and_run_solution() -> None:
    assert resolve_command("aws x y --id {{0:Vpc.VpcId}}", ['{"Vpc": {"VpcId": "vpc-1"}}']) == (
        "aws x y --id vpc-1"
    )
    with pytest.raises(ValueError, match="not JSON"):
        resolve_command("aws x y --id {{0:a}}", ["make_bucket: b"])
    task = load_catalog().by_id("ec2-vpc-with-subnet")
    answers = iter(['"vpc-123"', "{}"])
    ran = run_solution(task, lambda cmd: next(answers))
    assert ran[1] == "aws ec2 create-subnet --vpc-id vpc-123 --cidr-block 10.30.1.0/24"


# -- grading --------------------------------------------------------------------------


class CannedAws:
    """A fake ``ApiCaller``: answers from a dict, raises ``ApiCallError`` for error codes."""

    def __init__(self, answers: dict[str, object]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str, dict]] = []

    def __call__(self, service: str, operation: str, params: dict) -> dict:
        self.calls.append((service, operation, params))
        answer = self.answers[operation]
        if isinstance(answer, str):
            raise ApiCallError(answer, "canned error")
        return answer  # type: ignore[return-value]


def make_task(checks: list[dict], tier: str = "expert") -> Task:
    return Task.model_validate(
        {
            "id": "t",
            "tier": tier,
            "description": "a task for grader tests",
            "solution": ["aws s3api list-buckets"],
            "checks": checks,
            "hints": ["a", "b", "c"],
        }
    )


def test_progress_is_weighted_and_one_only_when_achieved() -> None:
    task = make_task(
        [
            {"name": "a", "call": {"service": "s3", "operation": "HeadBucket"}, "weight": 3},
            {
                "name": "b",
                "call": {"service": "s3", "operation": "GetBucketVersioning"},
                "expect": "Status == 'Enabled'",
            },
        ]
    )
    g = grade(task, CannedAws({"HeadBucket": {}, "GetBucketVersioning": {"Status": "Suspended"}}))
    assert (g.progress, g.achieved, g.passed, g.failed) == (0.75, False, ("a",), ("b",))
    g = grade(task, CannedAws({"HeadBucket": {}, "GetBucketVersioning": {"Status": "Enabled"}}))
    assert (g.progress, g.achieved) == (1.0, True)
    g = grade(task, CannedAws({"HeadBucket": "404", "GetBucketVersioning": "NoSuchBucket"}))
    assert (g.progress, g.achieved) == (0.0, False)


def test_expect_error_and_expect_together_mean_either() -> None:
    check = {
        "name": "no public policy",
        "call": {"service": "s3", "operation": "GetBucketPolicy"},
        "expect": "!(from_json(Policy).Statement[?Principal=='*'])",
        "expect_error": "NoSuchBucketPolicy",
    }
    task = make_task([check])
    public = json.dumps({"Statement": [{"Principal": "*"}]})
    private = json.dumps({"Statement": [{"Principal": {"Service": "x"}}]})
    assert grade(task, CannedAws({"GetBucketPolicy": "NoSuchBucketPolicy"})).achieved
    assert grade(task, CannedAws({"GetBucketPolicy": {"Policy": private}})).achieved
    assert not grade(task, CannedAws({"GetBucketPolicy": {"Policy": public}})).achieved
    assert not grade(task, CannedAws({"GetBucketPolicy": "AccessDenied"})).achieved


def test_expect_error_alone_fails_when_the_call_succeeds() -> None:
    task = make_task(
        [
            {
                "name": "user deleted",
                "call": {"service": "iam", "operation": "GetUser", "params": {"UserName": "x"}},
                "expect_error": "NoSuchEntity",
            }
        ]
    )
    assert grade(task, CannedAws({"GetUser": "NoSuchEntity"})).achieved
    result = grade(task, CannedAws({"GetUser": {"User": {}}})).results[0]
    assert not result.passed and "expected NoSuchEntity" in result.detail


def test_lookup_fills_params_and_expect() -> None:
    task = make_task(
        [
            {
                "name": "uses the group",
                "call": {
                    "service": "rds",
                    "operation": "DescribeDBInstances",
                    "params": {"DBInstanceIdentifier": "db-{{lookup}}"},
                },
                "lookup": {
                    "call": {"service": "ec2", "operation": "DescribeSecurityGroups"},
                    "expr": "SecurityGroups[0].GroupId",
                },
                "expect": "DBInstances[?VpcSecurityGroupId=='{{lookup}}']",
            }
        ]
    )
    aws = CannedAws(
        {
            "DescribeSecurityGroups": {"SecurityGroups": [{"GroupId": "sg-9"}]},
            "DescribeDBInstances": {"DBInstances": [{"VpcSecurityGroupId": "sg-9"}]},
        }
    )
    assert grade(task, aws).achieved
    assert aws.calls[1][2] == {"DBInstanceIdentifier": "db-sg-9"}
    nothing = CannedAws({"DescribeSecurityGroups": {"SecurityGroups": []}})
    assert "found None" in grade(task, nothing).results[0].detail


def test_type_errors_in_expressions_fail_the_check_not_the_grader() -> None:
    task = make_task(
        [
            {
                "name": "x",
                "call": {"service": "sqs", "operation": "GetQueueAttributes"},
                "expect": "contains(Attributes.Policy, 'sns')",
            }
        ]
    )
    result = grade(task, CannedAws({"GetQueueAttributes": {"Attributes": {}}})).results[0]
    assert not result.passed and "could not be evaluated" in result.detail


def test_audit_checks_need_events() -> None:
    task = make_task(
        [
            {
                "name": "listed",
                "call": {"service": "audit", "operation": "LookupEvents"},
                "expect": "Events[?service=='s3' && operation=='ListBuckets' && !error]",
            }
        ],
        tier="warmup",
    )
    aws = CannedAws({})
    assert not grade(task, aws, events=[]).achieved
    failed = ApiEvent("s3", "ListBuckets", {}, error="AccessDenied")
    assert not grade(task, aws, events=[failed]).achieved
    assert grade(task, aws, events=[ApiEvent("s3", "ListBuckets")]).achieved
    with pytest.raises(ValueError, match="pass events="):
        grade(task, aws)
    assert aws.calls == []


def test_jmespath_truthiness() -> None:
    assert truthy(0) and truthy("x") and truthy([0])
    assert not any(truthy(v) for v in (None, False, "", [], {}))


# -- prompts and CLI -------------------------------------------------------------------


def test_prompts_are_short_and_observations_truncated() -> None:
    catalog = load_catalog()
    # ~4 characters per token: the task turn stays well under 300 tokens.
    assert max(len(render_task(t)) for t in catalog) < 1000
    assert len(SYSTEM_PROMPT) < 600
    long = "x" * 300 + "MIDDLE" + "y" * 3000 + "END"
    cut = truncate(long)
    assert len(cut) < 450 and cut.startswith("x") and cut.endswith("END") and "MIDDLE" not in cut
    ok = render_observation(command_success=True, output='{"a": 1}')
    assert ok == 'OK\n{"a": 1}'
    err = render_observation(command_success=False, error="An error occurred (NoSuchBucket)")
    assert err.startswith("Error\n") and "NoSuchBucket" in err
    assert render_observation(command_success=True, hint_text="Service: S3").startswith("Hint:")


def run_cli(argv: list[str]) -> int:
    from cluster.commands.cli import main

    return main(argv)


def test_tasks_list_json_and_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["tasks", "list", "--tier", "expert", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(r["tier"] == "expert" for r in rows)
    assert {"id", "tier", "description"} <= set(rows[0])
    assert run_cli(["tasks", "list"]) == 0
    out = capsys.readouterr().out
    assert "s3-list-buckets" in out and out.strip().endswith(f"{len(load_catalog())} tasks")
    with pytest.raises(SystemExit):
        run_cli(["tasks", "list", "--tier", "wizard"])
