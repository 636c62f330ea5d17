"""Episode behaviour through ``AwsEnv``: hints, help, rewards, ends, disruption, bad tasks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from env.disruption import DisruptionConfig
from env.environment import AwsEnv
from env.reward import RewardConfig
from env.sandbox_pool import SandboxPool, SandboxRequestError
from tests.env.env_support import catalog_of, make_task

TWO_CHECKS = make_task(
    "two-checks",
    solution=[
        "aws s3api create-bucket --bucket target-bucket",
        "aws dynamodb create-table --table-name orders --attribute-definitions "
        "AttributeName=id,AttributeType=S --key-schema AttributeName=id,KeyType=HASH "
        "--billing-mode PAY_PER_REQUEST",
    ],
    checks=[
        {
            "name": "bucket",
            "call": {
                "service": "s3",
                "operation": "HeadBucket",
                "params": {"Bucket": "target-bucket"},
            },
        },
        {
            "name": "table",
            "call": {
                "service": "dynamodb",
                "operation": "DescribeTable",
                "params": {"TableName": "orders"},
            },
        },
    ],
    tier="advanced",
)
BROKEN = make_task("broken-setup", setup=["aws s3api delete-bucket --bucket does-not-exist"])
CATALOG = catalog_of(TWO_CHECKS, BROKEN)


@pytest.fixture(scope="module")
def pool() -> Iterator[SandboxPool]:
    with SandboxPool(processes=1, prewarm=False) as p:
        yield p


def test_hints_come_in_order_cost_reward_and_run_out(pool: SandboxPool) -> None:
    config = RewardConfig()
    with AwsEnv(CATALOG, pool=pool) as env:
        env.reset(TWO_CHECKS.id, seed=0)
        for level, text in enumerate(TWO_CHECKS.hints, start=1):
            obs = env.step("aws help --task-hint")
            assert obs.command_success and obs.hint_text == text and obs.output == text
            assert obs.hints_used == level
            assert obs.reward == pytest.approx(-config.hint_cost - config.step_cost)
        extra = env.step("aws help --task-hint")
        assert not extra.command_success and "no more hints" in extra.error
        assert extra.hints_used == 3 and extra.hint_text == ""
        assert extra.reward == pytest.approx(-config.failure_cost - config.step_cost)


def test_help_pages_are_rendered_without_a_pager(pool: SandboxPool) -> None:
    with AwsEnv(CATALOG, pool=pool) as env:
        env.reset(TWO_CHECKS.id, seed=0)
        services = env.step("aws help")
        assert services.command_success and "s3api" in services.output
        assert "aws help --task-hint" in services.output
        ops = env.step("aws dynamodb help")
        assert ops.command_success and "create-table" in ops.output
        page = env.step("aws s3api create-bucket help")
        assert page.command_success
        assert "Required:" in page.output and "--bucket <string>" in page.output
        assert env.state().hints_used == 0
        # Reading help costs like a failed command: never a free way to pass a turn.
        config = RewardConfig()
        for obs in (services, ops, page):
            assert obs.reward == pytest.approx(-config.help_cost - config.step_cost)


def test_progress_rewards_and_completion(pool: SandboxPool) -> None:
    config = RewardConfig()
    with AwsEnv(CATALOG, pool=pool) as env:
        start = env.reset(TWO_CHECKS.id, seed=0)
        assert start.reward is None and start.step == 0 and start.partial_progress == 0.0
        assert start.task is not None and start.task.id == TWO_CHECKS.id
        wrong = env.step("aws s3api head-bucket --bucket nothing-here")
        assert not wrong.command_success and wrong.error
        half = env.step(TWO_CHECKS.solution[0])
        assert half.partial_progress == pytest.approx(0.5)
        assert half.reward == pytest.approx(0.5 - config.step_cost)
        assert half.metadata["checks_passed"] == ["bucket"]
        done = env.step(TWO_CHECKS.solution[1])
        assert done.task_achieved and done.done and done.partial_progress == 1.0
        assert done.reward == pytest.approx(0.5 + config.completion_bonus - config.step_cost)
        after = env.step("aws s3 ls")
        assert not after.command_success and after.done and after.reward == 0.0
        assert "episode is over" in after.error
        state = env.state()
        total = wrong.reward + half.reward + done.reward
        assert state.total_reward == pytest.approx(total)
        assert state.finish_reason == "achieved" and state.step_count == 3


def test_episode_ends_at_max_steps(pool: SandboxPool) -> None:
    with AwsEnv(CATALOG, pool=pool, max_steps=3) as env:
        env.reset(TWO_CHECKS.id, seed=0)
        observations = [env.step("aws s3 ls") for _ in range(3)]
        assert [o.done for o in observations] == [False, False, True]
        assert env.state().finish_reason == "max_steps"


def test_a_disruption_strikes_once_at_the_planned_step(pool: SandboxPool) -> None:
    disruption = DisruptionConfig(enabled=True, earliest_step=1, latest_step=1)
    with AwsEnv(CATALOG, pool=pool, disrupt=disruption) as env:
        env.reset(TWO_CHECKS.id, seed=3)
        hit = env.step(TWO_CHECKS.solution[0])
        assert hit.metadata["disruption"] == "deleted S3 bucket target-bucket"
        assert hit.partial_progress == 0.0
        assert env.step("aws s3api list-buckets").output.count("target-bucket") == 0
        assert env.step(TWO_CHECKS.solution[0]).partial_progress == pytest.approx(0.5)
        assert env.state().disruptions == ["deleted S3 bucket target-bucket"]
    with AwsEnv(CATALOG, pool=pool) as env:  # off by default
        env.reset(TWO_CHECKS.id, seed=3)
        assert "disruption" not in env.step(TWO_CHECKS.solution[0]).metadata


def test_bad_tasks_are_reported_clearly(pool: SandboxPool) -> None:
    with AwsEnv(CATALOG, pool=pool) as env:
        with pytest.raises(KeyError, match="no task 'nope'"):
            env.reset("nope", seed=0)
        with pytest.raises(SandboxRequestError, match="delete-bucket") as failure:
            env.reset(BROKEN.id, seed=0)
        assert failure.value.code == "setup_failed"
        assert env.reset(TWO_CHECKS.id, seed=0).task is not None  # the slot still works
