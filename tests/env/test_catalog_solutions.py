"""Every task in the catalog, run for real through ``AwsEnv`` (moto + awscli in a sandbox process).

- the canonical solution achieves the task from its initial state (drift tasks: for
  seeds that together apply every mutation);
- doing nothing achieves none: the initial state is never achieved;
- progress is monotone along the canonical solution and is 1 only once achieved;
- every drift mutation alone breaks the task, and its repair alone fixes it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from env.catalog import Catalog, load_catalog
from env.environment import AwsEnv
from env.prompts import render_observation
from env.sandbox_pool import SandboxPool
from env.task_spec import PLACEHOLDER, Task, resolve_command
from env.task_variants import renamable_names

CATALOG = load_catalog()
# Episodes must outlive the longest canonical solution plus a hint or two.
MAX_STEPS = 12
# Whole outputs, so a cut observation is caught by the visibility check, not by JSON errors.
OUTPUT_CHARS = 100_000


def covering_seeds(task: Task, limit: int = 200) -> list[int]:
    """The first seeds that, together, apply each of a drift task's mutations."""
    assert task.drift is not None
    missing = {m.name for m in task.drift.mutations}
    seeds = []
    for seed in range(limit):
        names = {m.name for m in task.drift_mutations(seed)}
        if names & missing:
            seeds.append(seed)
            missing -= names
        if not missing:
            return seeds
    raise AssertionError(f"{task.id}: no seed below {limit} applies {sorted(missing)}")


def single_mutation_tasks() -> list[Task]:
    """Each drift mutation as its own plain task: setup + that mutation, solution + repair."""
    out = []
    for task in CATALOG:
        if task.drift is None:
            continue
        for m in task.drift.mutations:
            data = task.model_dump(exclude={"drift", "tier"})
            data.update(
                id=f"{task.id}--{m.name}",
                tier=task.tier,
                setup=[
                    *data["setup"],
                    *(s if isinstance(s, str) else s.model_dump() for s in m.setup),
                ],
                solution=[*task.solution, *m.repair],
            )
            out.append(Task.model_validate(data))
    return out


MUTATION_TASKS = single_mutation_tasks()


@pytest.fixture(scope="module")
def pool() -> Iterator[SandboxPool]:
    pool = SandboxPool(processes=1).start()
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(scope="module")
def env(pool: SandboxPool) -> Iterator[AwsEnv]:
    with AwsEnv(CATALOG, pool=pool, max_steps=MAX_STEPS, max_output_chars=OUTPUT_CHARS) as e:
        yield e


def run_canonical(env: AwsEnv, task: Task, seed: int) -> list[float]:
    """Reset, assert the start is not achieved, run the solution; returns the progress trace."""
    obs = env.reset(task_id=task.id, seed=seed)
    assert not obs.task_achieved, f"{task.id} seed {seed}: doing nothing achieves it"
    trace = [obs.partial_progress]
    outputs: list[str] = []
    steps = task.solution_steps(seed)
    for i, template in enumerate(steps):
        command = resolve_command(template, outputs)
        for m in PLACEHOLDER.finditer(template):
            # The value must be visible in what the agent is shown (SFT rows teach copying it).
            value = resolve_command(m.group(0), outputs)
            shown = render_observation(command_success=True, output=outputs[int(m.group(1))])
            assert value in shown, f"{task.id} step {i}: {value!r} is cut from the observation"
        obs = env.step(command)
        assert obs.command_success, f"{task.id} step {i} {command!r} failed: {obs.error}"
        outputs.append(obs.output)
        trace.append(obs.partial_progress)
        if i < len(steps) - 1:
            assert not obs.done, f"{task.id}: episode ended early at step {i}"
    assert obs.task_achieved, f"{task.id} seed {seed}: canonical solution not achieved"
    return trace


def assert_monotone_to_one(task_id: str, trace: list[float]) -> None:
    assert all(a <= b for a, b in itertools.pairwise(trace)), (task_id, trace)
    assert trace[-1] == 1.0, (task_id, trace)
    assert all(p < 1.0 for p in trace[:-1]), (task_id, trace)


@pytest.mark.parametrize("task", CATALOG.tasks, ids=lambda t: t.id)
def test_canonical_solution_achieves(env: AwsEnv, task: Task) -> None:
    seeds = covering_seeds(task) if task.drift else [0]
    for seed in seeds:
        assert_monotone_to_one(task.id, run_canonical(env, task, seed))


@pytest.mark.parametrize(
    "task_id", [f"{t.id}@eval0" for t in CATALOG if renamable_names(t)], ids=str
)
def test_the_evaluations_renamed_copy_achieves_by_its_own_solution(env: AwsEnv, task_id: str):
    # The new_names view plays these copies: each must be as solvable as its original (the
    # originals' drift mutations are covered above; a rename changes names, not mutations).
    assert_monotone_to_one(task_id, run_canonical(env, CATALOG.by_id(task_id), seed=0))


@pytest.mark.parametrize("task", MUTATION_TASKS, ids=lambda t: t.id)
def test_each_drift_mutation_breaks_and_its_repair_fixes(pool: SandboxPool, task: Task) -> None:
    with AwsEnv(
        Catalog([task]), pool=pool, max_steps=MAX_STEPS, max_output_chars=OUTPUT_CHARS
    ) as env:
        assert_monotone_to_one(task.id, run_canonical(env, task, seed=0))


def test_catalog_meets_the_brief() -> None:
    sizes = {tier: len(CATALOG.by_tier(tier)) for tier in CATALOG.tiers}
    assert len(CATALOG) >= 120, sizes
    assert sizes["warmup"] >= 20 and sizes["beginner"] >= 30 and sizes["intermediate"] >= 30
    assert sizes["advanced"] >= 20 and sizes["expert"] >= 20
    assert sum(1 for t in CATALOG.by_tier("expert") if t.drift) >= 5
    services = {s for t in CATALOG for s in t.services}
    for needed in (
        "s3api",
        "iam",
        "sts",
        "dynamodb",
        "sqs",
        "sns",
        "lambda",
        "ec2",
        "kms",
        "secretsmanager",
        "ssm",
        "logs",
        "cloudwatch",
        "events",
        "kinesis",
        "rds",
        "cognito-idp",
        "ecr",
        "route53",
        "stepfunctions",
    ):
        assert needed in services, needed
    for task in CATALOG:
        longest = max(len(task.solution_steps(s)) for s in range(20))
        assert longest <= 8, task.id
