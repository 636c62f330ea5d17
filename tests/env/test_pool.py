"""The env pool's failure handling: dead and stuck sandbox processes are replaced, others go on."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from env.environment import AwsEnv
from env.sandbox_pool import SandboxLost, SandboxPool
from tests.env.env_support import catalog_of, make_task

TASK = make_task("pool-task")


@pytest.fixture
def pool() -> Iterator[SandboxPool]:
    with SandboxPool(processes=2, prewarm=False) as p:
        yield p


def test_a_dead_worker_is_replaced_and_other_episodes_go_on(pool: SandboxPool) -> None:
    catalog = catalog_of(TASK)
    with AwsEnv(catalog, pool=pool) as doomed, AwsEnv(catalog, pool=pool) as survivor:
        doomed.reset(TASK.id, seed=0)
        survivor.reset(TASK.id, seed=0)
        victim = pool.process_pid(doomed.process_index)
        assert victim != pool.process_pid(survivor.process_index)
        os.kill(victim, signal.SIGKILL)  # a sandbox process this test's pool started
        with pytest.raises(SandboxLost, match="reset"):
            doomed.step("aws s3 ls")
        assert survivor.step("aws s3api create-bucket --bucket target-bucket").task_achieved
        doomed.reset(TASK.id, seed=0)  # the slot works again, on the fresh sandbox process
        assert doomed.step("aws s3 ls").command_success
        assert pool.process_pid(doomed.process_index) != victim


def test_a_stuck_worker_is_killed_after_its_deadline(pool: SandboxPool) -> None:
    stuck = pool.process_pid(0)
    os.kill(stuck, signal.SIGSTOP)  # frozen: it will never answer (pool.close kills it anyway)
    with pytest.raises(SandboxLost, match="deadline"):
        pool.call(0, "stats", "", None, timeout_s=1.0)
    fresh = pool.call(0, "stats", "", None, timeout_s=60.0)  # waits for the replacement
    assert fresh["pid"] != stuck and fresh["episodes"] == 0
