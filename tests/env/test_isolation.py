"""Isolation of concurrent episodes that share one sandbox process (the hard case).

All episodes here run in ONE sandbox process, so every command switches moto's whole state;
commands are sent from many threads at once, interleaving episodes step by step.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from env.catalog import load_catalog
from env.environment import AwsEnv
from env.sandbox_pool import SandboxPool
from tests.env.env_support import catalog_of, make_task

SAME_BUCKET = make_task(
    "same-bucket",
    setup=["aws s3api create-bucket --bucket setup-bucket"],
    solution=["aws s3api create-bucket --bucket finish-line"],
    checks=[
        {
            "name": "finish-line exists",
            "call": {
                "service": "s3",
                "operation": "HeadBucket",
                "params": {"Bucket": "finish-line"},
            },
        }
    ],
)
GENERATED_IDS = make_task(
    "generated-ids",
    setup=[
        "aws ec2 create-vpc --cidr-block 10.0.0.0/16",
        "aws sqs create-queue --queue-name jobs",
        {
            "service": "iam",
            "operation": "CreateRole",
            "params": {"RoleName": "app", "AssumeRolePolicyDocument": "{}"},
        },
    ],
)


@pytest.fixture(scope="module")
def pool() -> Iterator[SandboxPool]:
    with SandboxPool(processes=1, prewarm=False) as p:
        yield p


def _episode(pool: SandboxPool, index: int) -> tuple[str, str, bool]:
    """One episode: create the shared bucket name, put its own object, list the bucket."""
    with AwsEnv(catalog_of(SAME_BUCKET), pool=pool) as env:
        env.reset(SAME_BUCKET.id, seed=index)
        created = env.step("aws s3api create-bucket --bucket shared-name")
        assert created.command_success, created.error
        put = env.step(f"aws s3api put-object --bucket shared-name --key only-{index}")
        assert put.command_success, put.error
        listing = env.step("aws s3api list-objects-v2 --bucket shared-name --query Contents[].Key")
        buckets = env.step("aws s3api list-buckets --query Buckets[].Name")
        return listing.output, buckets.output, listing.command_success


def test_same_bucket_name_in_concurrent_episodes_never_collides_or_leaks(pool: SandboxPool) -> None:
    n = 12
    with ThreadPoolExecutor(max_workers=n) as executor:
        results = list(executor.map(lambda i: _episode(pool, i), range(n)))
    for index, (keys, buckets, ok) in enumerate(results):
        assert ok
        assert json.loads(keys) == [f"only-{index}"]
        assert sorted(json.loads(buckets)) == ["setup-bucket", "shared-name"]


def test_reset_clears_the_world(pool: SandboxPool) -> None:
    with AwsEnv(catalog_of(SAME_BUCKET), pool=pool) as env:
        env.reset(SAME_BUCKET.id, seed=1)
        assert env.step("aws sqs create-queue --queue-name leftover").command_success
        assert env.step("aws s3api create-bucket --bucket finish-line").task_achieved
        again = env.reset(SAME_BUCKET.id, seed=1)
        assert not again.task_achieved and again.partial_progress == 0.0
        buckets = env.step("aws s3api list-buckets --query Buckets[].Name")
        assert json.loads(buckets.output) == ["setup-bucket"]
        queues = env.step("aws sqs list-queues")
        assert "leftover" not in queues.output
        assert not env.state().task_achieved


def test_same_task_and_seed_build_identical_worlds(pool: SandboxPool) -> None:
    catalog = catalog_of(GENERATED_IDS)

    def world(seed: int) -> tuple[str, str, str]:
        with AwsEnv(catalog, pool=pool) as env:
            env.reset(GENERATED_IDS.id, seed=seed)
            vpcs = env.step("aws ec2 describe-vpcs --query Vpcs[].VpcId --output text")
            role = env.step("aws iam get-role --role-name app --query Role.RoleId --output text")
            queue = env.step("aws sqs get-queue-url --queue-name jobs --query QueueUrl")
            return vpcs.output, role.output, queue.output

    with ThreadPoolExecutor(max_workers=4) as executor:
        group = list(executor.map(world, [7, 7, 7, 7]))
    assert all(w == group[0] for w in group), group
    assert group[0][0].strip().startswith("vpc-")
    assert world(8)[0] != group[0][0]  # another seed, other generated ids


def test_audit_log_and_region_are_per_episode(pool: SandboxPool) -> None:
    catalog = load_catalog()
    with AwsEnv(catalog, pool=pool) as a, AwsEnv(catalog, pool=pool) as b:
        a.reset("s3-list-buckets", seed=0)
        b.reset("s3-list-buckets", seed=0)
        listed = b.step("aws s3api list-buckets")
        assert listed.task_achieved
        # b's listing is not in a's audit log: a has not achieved anything.
        other = a.step("aws sqs list-queues")
        assert not other.task_achieved and other.partial_progress == 0.0
        # --region in one command is not remembered for the next one, nor for b.
        made = a.step("aws sqs create-queue --queue-name far --region eu-west-1")
        assert made.command_success and "eu-west-1" in made.output
        assert "far" not in a.step("aws sqs list-queues").output
        assert "far" not in b.step("aws sqs list-queues --region eu-west-1").output
        assert "far" in a.step("aws sqs list-queues --region eu-west-1").output


def test_one_worker_serves_many_episodes_over_time(pool: SandboxPool) -> None:
    before = pool.stats()[0]
    for seed in range(20):
        with AwsEnv(catalog_of(SAME_BUCKET), pool=pool) as env:
            env.reset(SAME_BUCKET.id, seed=seed)
            assert env.step("aws s3api create-bucket --bucket finish-line").task_achieved
    after = pool.stats()[0]
    assert after["pid"] == before["pid"]
    assert after["episodes"] == before["episodes"]  # closed episodes are gone


def test_closed_episodes_leave_no_moto_state_behind() -> None:
    """A sandbox process plays episodes for days: a closed one must free its whole world.

    Each EC2 episode builds a fresh EC2 backend (~17k AMI, volume and snapshot objects) and
    launching an instance starts its subnet's IP iterator, which moto memoises per class;
    before the sandbox moved that memo onto each subnet, every such episode stayed alive.
    """
    catalog = catalog_of(GENERATED_IDS)
    with SandboxPool(processes=1, prewarm=False) as pool:

        def play(seed: int) -> None:
            with AwsEnv(catalog, pool=pool) as env:
                env.reset(GENERATED_IDS.id, seed=seed)
                image = env.step(
                    "aws ec2 describe-images --owners amazon --query Images[0].ImageId"
                )
                assert image.command_success, image.error
                launched = env.step(
                    f"aws ec2 run-instances --image-id {json.loads(image.output)} "
                    "--instance-type t3.micro"
                )
                assert launched.command_success, launched.error

        play(0)
        before = pool.call(0, "census", "", None, timeout_s=60.0)
        for seed in range(1, 9):
            play(seed)
        after = pool.call(0, "census", "", None, timeout_s=60.0)
    assert before["episodes"] == after["episodes"] == 0
    assert before["live_backends"] > 0  # the census sees backends at all
    assert after["live_backends"] == before["live_backends"]
