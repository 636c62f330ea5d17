"""Fault injection (``run.faults``): each kind breaks a real part, says so, and confirms the part
came back (or says it did not).

Real Ray actors: rollout workers with their real sandbox process, and the real learner actor on
the tiny model. The engine is a small stand-in actor with the same ``health`` call and Ray's
restart policy, so that this test never kills the session's shared vLLM engine (the real engine
kill is in ``test_farm.py`` and ``rlfarm bench chaos``).
"""

from __future__ import annotations

import asyncio
import os

import pytest

from cluster.base.config import Fault
from cluster.farm import faults as faults_module
from cluster.farm.faults import FaultInjector
from cluster.farm.rollout_workers import RolloutWorkerSet
from learner.config import LearnerConfig
from rollout.config import EnvSettings
from serving.engine_processes import alive, family
from serving.types import EngineHealth


@pytest.fixture(scope="module")
def parts(ray_runtime, tiny_model_path):
    import ray

    from learner.actor import create_learner_actor
    from rollout.worker import rollout_worker_class

    @ray.remote(max_restarts=1, num_cpus=0)
    class EngineStandIn:
        def health(self) -> EngineHealth:
            return EngineHealth("engine-0", pid=os.getpid())

        def processes(self) -> list:
            return family()

        def survivors(self, members: list) -> list[int]:
            return alive(members)

    worker_cls = rollout_worker_class()

    def start_worker(name: str, step_latency_s: float):
        return worker_cls.options(num_cpus=0).remote(
            name, None, str(tiny_model_path), EnvSettings(step_latency_s=step_latency_s), 3
        )

    workers = RolloutWorkerSet(factory=start_worker)
    workers.resize(1)
    learner = create_learner_actor(
        LearnerConfig(model_path=str(tiny_model_path), device="cpu"), torch_threads=1,
        max_restarts=1, num_cpus=0,
    )  # fmt: skip
    engine = EngineStandIn.remote()
    ray.get([learner.state.remote(), engine.health.remote(), workers.slots[0].handle.ping.remote()])
    yield engine, learner, workers
    for handle in (engine, learner, *(s.handle for s in workers.slots)):
        ray.kill(handle, no_restart=True)


def _inject(parts, kind: str, after=None) -> list[str]:
    """Inject one fault after update 1; run ``after`` (what the farm would do) while the watch
    runs; return the events said."""
    engine, learner, workers = parts
    events: list[str] = []
    injector = FaultInjector([Fault(at_update=1, kind=kind)], [engine], learner, workers,
                             events.append)  # fmt: skip

    async def scenario() -> None:
        workers.slots[0].busy += 1  # a worker with a group in flight is the one broken
        try:
            await injector.inject_due(0)  # not due: nothing happens
            assert not events and not injector.watches
            await injector.inject_due(1)
        finally:
            workers.slots[0].busy -= 1
        if after is not None:
            await after()
        await asyncio.gather(*injector.watches)

    asyncio.run(scenario())
    return events


def test_a_killed_sandbox_process_is_replaced_and_said(parts):
    _, _, workers = parts
    handle = workers.slots[0].handle
    before = asyncio.run(_pid(handle))
    events = _inject(parts, "kill_sandbox")
    assert events[0].startswith("fault injected after update 1: kill_sandbox")
    assert f"sandbox process {before}" in events[0]
    after = asyncio.run(_pid(handle))
    assert after not in (None, before)
    assert events[1] == (f"fault recovered after update 1: kill_sandbox (sandbox process {after} "
                         f"replaced {before})")  # fmt: skip


def test_a_killed_learner_actor_is_restarted_by_ray_and_said(parts):
    _, learner, _ = parts
    before = asyncio.run(_learner_pid(learner))
    events = _inject(parts, "kill_learner")
    assert events[0] == "fault injected after update 1: kill_learner (the learner actor)"
    after = asyncio.run(_learner_pid(learner))
    assert after != before
    assert events[1] == (f"fault recovered after update 1: kill_learner (the learner actor "
                         f"answers from process {after}, was {before})")  # fmt: skip


def test_a_killed_engine_actor_is_restarted_by_ray_and_said(parts):
    events = _inject(parts, "kill_engine")
    assert events[0] == "fault injected after update 1: kill_engine (engine-0)"
    assert events[1].startswith("fault recovered after update 1: kill_engine (engine-0 answers")
    assert "none of the dead engine's" in events[1] and events[1].endswith("still runs)")


def test_a_killed_rollout_worker_counts_as_recovered_only_once_replaced(parts, monkeypatch):
    _, _, workers = parts
    slot = workers.slots[0]
    name = slot.name

    async def replace_it() -> None:  # what the player does when the worker's group fails
        await asyncio.sleep(1.0)
        assert workers.replace(slot, dead)

    dead = slot.handle
    events = _inject(parts, "kill_rollout_worker", replace_it)
    assert events[0] == f"fault injected after update 1: kill_rollout_worker ({name})"
    assert events[1] == (f"fault recovered after update 1: kill_rollout_worker ({name} replaced "
                         f"by {slot.name}, which answers)")  # fmt: skip

    # Nobody replaces it this time: the watch gives up and says so.
    monkeypatch.setattr(faults_module, "RECOVERY_WAIT_S", 3.0)
    events = _inject(parts, "kill_rollout_worker")
    assert events[1] == ("fault NOT recovered after update 1: kill_rollout_worker (nothing "
                         "replaced it within 3 s)")  # fmt: skip
    assert workers.replace(slot, slot.handle)  # leave a live worker for whoever runs next


async def _pid(worker) -> int | None:
    return await worker.sandbox_pid.remote()


async def _learner_pid(learner) -> int:
    for _ in range(600):  # a restarted learner reloads its model first
        try:
            return await learner.pid.remote()
        except Exception:
            await asyncio.sleep(0.5)
    raise TimeoutError("the learner did not come back")


def test_a_slower_env_reaches_every_worker_and_each_one_started_later(parts):
    import ray

    _, _, workers = parts
    events: list[str] = []
    injector = FaultInjector([Fault(at_update=2, kind="slow_env", latency_s=0.25)], [], None,
                             workers, events.append)  # fmt: skip

    async def scenario() -> None:
        await injector.inject_due(2)
        await asyncio.gather(*injector.watches)

    try:
        asyncio.run(scenario())
        assert events == [
            "fault injected after update 2: slow_env (every env step 0.25 s slower on 1 worker(s))",
            "fault recovered after update 2: slow_env (all 1 env worker(s) add 0.25 s to each "
            "step)",
        ]
        workers.resize(2)  # a worker started after the fault is just as slow
        assert ray.get([s.handle.step_latency.remote() for s in workers.slots]) == [0.25, 0.25]
    finally:
        ray.get(workers.set_step_latency(0.0))
        workers.resize(1)


def test_a_slowed_session_waits_before_each_step_and_follows_live_changes():
    import time

    from rollout.env_contract import StepResult
    from rollout.worker import SlowedSession

    class Instant:
        async def reset(self, task_id, seed):
            return StepResult(text=task_id)

        async def step(self, reply):
            return StepResult(text=reply)

        async def close(self):
            pass

    latency = [0.2]
    session = SlowedSession(Instant(), lambda: latency[0])

    async def timed(coro):
        started = time.perf_counter()
        result = await coro
        return result, time.perf_counter() - started

    async def scenario():
        _, reset_s = await timed(session.reset("t", 0))
        result, slow_s = await timed(session.step("aws s3 ls"))
        latency[0] = 0.0
        _, fast_s = await timed(session.step("aws s3 ls"))
        return reset_s, result, slow_s, fast_s

    reset_s, result, slow_s, fast_s = asyncio.run(scenario())
    assert result.text == "aws s3 ls"
    assert slow_s >= 0.2 and reset_s < 0.2 and fast_s < 0.2
