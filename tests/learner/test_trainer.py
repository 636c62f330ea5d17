"""The Learner on the built-in tiny model: masking, alignment, skipping, KL, metrics, config."""

from __future__ import annotations

import math
import random

import pytest
import torch
from pydantic import ValidationError

from learner.autocast import MAX_MEAN_GAP, cpu_has_bf16
from learner.forward import shared_prefix_length
from learner.trainer import (
    Learner,
    MicroBatch,
    lr_factor,
    plan_micro_batches,
    plan_shared_prefix_batches,
)
from learner.types import Sample, SampleGroup
from tests.learner.engine_standin import sample_completion, to_sample
from tests.learner.samples import make_config, prompt_group, random_group

# ---------------------------------------------------------------- pure helpers


def test_micro_batches_respect_the_padded_token_budget():
    lengths = [10, 30, 20, 25, 5]
    plan = plan_micro_batches(lengths, token_budget=60)
    # longest first: [30, 25] -> 2 x 30 = 60 fits; adding 20 would be 90
    assert plan == [[1, 3], [2, 0, 4]]
    for batch in plan:
        assert max(lengths[i] for i in batch) * len(batch) <= 60
    # a row longer than the budget runs alone
    assert plan_micro_batches([100, 10], token_budget=50) == [[0], [1]]


def test_shared_prefix_length_keeps_one_own_token_per_row():
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == 2
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # identical rows: one token each
    assert shared_prefix_length([[7, 1], [8, 1]]) == 0


def test_shared_prefix_plan_runs_each_groups_prompt_once_per_micro_batch():
    prompt = list(range(100, 120))  # 20 shared tokens >= MIN_SHARED_PREFIX
    ids = [prompt + [1] * 10, prompt + [2] * 30, prompt + [3] * 20, [5] * 12, [6] * 40]
    plan = plan_shared_prefix_batches([[0, 1, 2], [3, 4]], ids, token_budget=60)
    # group 0 shares 20 tokens; its suffixes (10, 30, 20) are planned by suffix size, longest
    # first: [30, 20] fits 60, 10 runs in a second batch with the prefix again; group 1 shares
    # nothing and is planned whole (40 and 12 do not fit 60 together once padded: 2 x 40).
    assert plan == [MicroBatch([1, 2], 20), MicroBatch([0], 20), MicroBatch([4]), MicroBatch([3])]


def test_lr_schedule_warms_up_then_decays():
    assert [lr_factor(s, 2, "constant", None) for s in range(4)] == [0.5, 1.0, 1.0, 1.0]
    assert lr_factor(2, 2, "linear", 12) == 1.0
    assert lr_factor(7, 2, "linear", 12) == pytest.approx(0.5)
    assert lr_factor(12, 2, "linear", 12) == 0.0
    assert lr_factor(7, 2, "cosine", 12) == pytest.approx(0.5)


def test_config_errors_name_the_field_and_the_fix(tiny_model_dir):
    with pytest.raises(ValidationError, match="total_steps"):
        make_config(tiny_model_dir, lr_schedule="cosine")
    with pytest.raises(ValidationError, match="target_modules is empty"):
        make_config(tiny_model_dir, target_modules=[])
    with pytest.raises(ValidationError, match="lora_rank"):
        make_config(tiny_model_dir, lora_rank=8)  # misspelt: rejected, not silently ignored
    with pytest.raises(ValidationError, match="device"):
        make_config(tiny_model_dir, device="tpu")


def test_sample_rejects_misaligned_or_untrainable_first_token():
    with pytest.raises(ValueError, match="aligned"):
        Sample([1, 2, 3], [0, 1], [0.0, -1.0, -1.0], reward=1.0)
    with pytest.raises(ValueError, match="first token"):
        Sample([1, 2], [1, 1], [-1.0, -1.0], reward=1.0)
    with pytest.raises(ValueError, match="at least 2"):
        SampleGroup("g", "t", [Sample([1, 2], [0, 1], [0.0, -1.0], reward=1.0)])


# ---------------------------------------------------------------- the learner


@pytest.fixture(scope="module")
def learner(tiny_model_dir) -> Learner:
    return Learner(make_config(tiny_model_dir, lora_dropout=0.0))


def test_unknown_target_module_is_a_clear_error(tiny_model_dir):
    with pytest.raises(ValueError, match="gate_projj"):
        Learner(make_config(tiny_model_dir, target_modules=["gate_projj"]))


def test_loss_matches_hand_computation_from_learner_logprobs(tiny_model_dir):
    """Masking, alignment, token-mean and TIS in one number: with pi_old == pi_theta the
    per-token loss is -min(exp(lp - behaviour), cap) * A, averaged over mask-1 tokens only."""
    learner = Learner(make_config(tiny_model_dir, lora_dropout=0.0, is_cap=1.5))
    group = random_group(random.Random(1), "g", [1.0, 0.0, 0.5])
    advantages = [0.5, -0.5, 0.0]
    expected, tokens = 0.0, 0
    for sample, adv in zip(group.samples, advantages, strict=True):
        lps = learner.sample_logprobs(sample.token_ids)
        for lp, beh, m in zip(lps, sample.behaviour_logprobs, sample.loss_mask, strict=True):
            if m:
                expected += -min(math.exp(lp - beh), 1.5) * adv
                tokens += 1
    metrics = learner.train_step([group])
    assert metrics.trained_tokens == tokens == sum(s.num_trained_tokens for s in group.samples)
    assert metrics.loss == pytest.approx(expected / tokens, rel=1e-4, abs=1e-6)
    assert metrics.importance_weight_max > 1.5  # random behaviour logprobs: some get truncated
    assert 0.0 < metrics.importance_truncated_fraction < 1.0


def test_masked_out_tokens_never_affect_the_update(tiny_model_dir):
    """Changing the behaviour logprobs at mask-0 positions changes nothing at all."""
    group = random_group(random.Random(2), "g", [1.0, 0.0, 0.0, 1.0])
    scrambled = SampleGroup(
        "g",
        "task",
        [
            Sample(
                s.token_ids,
                s.loss_mask,
                [
                    b if m else -123.0
                    for b, m in zip(s.behaviour_logprobs, s.loss_mask, strict=True)
                ],
                s.reward,
            )
            for s in group.samples
        ],
    )
    results = []
    for g in (group, scrambled):
        learner = Learner(make_config(tiny_model_dir, lora_dropout=0.0))
        metrics = learner.train_step([g])
        results.append((metrics.loss, [p.detach().clone() for p in learner.params]))
    assert results[0][0] == results[1][0]
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1], strict=True))


def test_recomputed_logprobs_match_the_sampler_on_its_exact_ids(learner):
    """On-policy samples from the engine stand-in give importance weights of exactly ~1: the
    learner recomputes logprobs at the same positions of the same ids."""
    generator = torch.Generator().manual_seed(0)
    prompt = learner.tokenizer.apply_chat_template(
        [{"role": "user", "content": "List my buckets"}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
    )["input_ids"]
    samples = []
    for reward in (1.0, 0.0, 0.0):
        completion, logprobs = sample_completion(
            learner.model, prompt, max_new_tokens=6, stop_ids=set(), generator=generator
        )
        samples.append(to_sample(prompt, completion, logprobs, reward))
        recomputed = learner.sample_logprobs(samples[-1].token_ids)[len(prompt) :]
        assert recomputed == pytest.approx(logprobs, abs=1e-5)
    metrics = learner.train_step([SampleGroup("g", "t", samples)])
    assert metrics.importance_weight_mean == pytest.approx(1.0, abs=1e-4)
    assert metrics.importance_weight_max == pytest.approx(1.0, abs=1e-4)
    assert metrics.clip_fraction == 0.0  # one mini-batch: pi_old == pi_theta


def test_zero_variance_groups_are_skipped_and_counted(learner):
    rng = random.Random(3)
    before = [p.detach().clone() for p in learner.params]
    step = learner.step
    flat = [random_group(rng, "a", [1.0, 1.0]), random_group(rng, "b", [0.0, 0.0, 0.0])]
    metrics = learner.train_step(flat)
    assert (metrics.stepped, metrics.skipped_zero_variance, metrics.trained_groups) == (False, 2, 0)
    assert learner.step == step
    assert all(torch.equal(a, b) for a, b in zip(before, learner.params, strict=True))
    mixed = [*flat, random_group(rng, "c", [0.0, 1.0])]
    metrics = learner.train_step(mixed)
    assert (metrics.stepped, metrics.skipped_zero_variance, metrics.trained_groups) == (True, 2, 1)
    assert metrics.samples == 7
    assert learner.step == step + 1


def _gradients_of_one_update(learner: Learner, groups: list[SampleGroup]) -> list[torch.Tensor]:
    """The accumulated gradient the optimizer steps on (read just before its step)."""
    seen: list[torch.Tensor] = []
    step = learner.optimizer.step

    def recording_step(*args, **kwargs):
        seen[:] = [p.grad.detach().clone() for p in learner.params]
        return step(*args, **kwargs)

    learner.optimizer.step = recording_step
    assert learner.train_step(groups).stepped
    return seen


def test_tiny_micro_batches_give_the_same_update_as_one_batch(tiny_model_dir):
    """Gradient accumulation with the batch-wide token count is the same as one big batch: the
    gradient the optimizer steps on is compared (AdamW's first step is about lr * sign(g), so the
    weights after it would hide a mis-weighted micro-batch)."""
    groups = [random_group(random.Random(4), str(i), [0.0, 1.0, 0.3]) for i in range(2)]
    grads = []
    for budget in (4096, 20):
        learner = Learner(make_config(tiny_model_dir, lora_dropout=0.0, micro_batch_tokens=budget))
        grads.append(_gradients_of_one_update(learner, groups))
    scale = max(float(g.abs().max()) for g in grads[0])
    assert scale > 0
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * scale)


def test_kl_is_zero_at_init_and_grows_as_the_adapter_moves(tiny_model_dir):
    learner = Learner(make_config(tiny_model_dir, lora_dropout=0.0, kl_coef=0.1, lr=5e-3))
    rng = random.Random(5)
    first = learner.train_step([random_group(rng, "g", [0.0, 1.0, 0.0, 1.0])])
    assert first.kl == pytest.approx(0.0, abs=1e-7)  # LoRA B starts at 0: adapter == base
    for _ in range(3):
        later = learner.train_step([random_group(rng, "g", [0.0, 1.0, 0.0, 1.0])])
    assert later.kl > 1e-6
    off = Learner(make_config(tiny_model_dir)).train_step([random_group(rng, "g", [0.0, 1.0])])
    assert off.kl is None


def test_minibatches_make_the_clip_active(tiny_model_dir):
    """With two optimizer steps per update, the second mini-batch sees pi_theta != pi_old; a
    large learning rate moves the ratio outside the clip band on some tokens."""
    learner = Learner(make_config(tiny_model_dir, lora_dropout=0.0, minibatches=2, lr=0.2))
    rng = random.Random(6)
    groups = [random_group(rng, str(i), [0.0, 1.0, 0.0, 1.0]) for i in range(2)]
    metrics = learner.train_step(groups)
    assert metrics.clip_fraction > 0.0
    assert metrics.clip_fraction == pytest.approx(
        metrics.clip_fraction_low + metrics.clip_fraction_high
    )


def test_gradient_checkpointing_gives_the_same_update(tiny_model_dir):
    groups = [random_group(random.Random(7), "g", [0.0, 1.0, 0.5])]
    results = []
    for checkpointing in (False, True):
        learner = Learner(
            make_config(tiny_model_dir, lora_dropout=0.0, gradient_checkpointing=checkpointing)
        )
        metrics = learner.train_step(groups)
        results.append((metrics.loss, [p.detach().clone() for p in learner.params]))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    for a, b in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_trained_positions_only_logits_give_the_same_update_as_full_logits(tiny_model_dir):
    """The learner projects only trained positions onto the vocabulary; forcing the model's own
    full-logits forward (the soft-capped-model path) must give the same loss and weights."""
    groups = [random_group(random.Random(8), "g", [0.0, 1.0, 0.5, 1.0])]
    results = []
    for full_logits in (False, True):
        learner = Learner(make_config(tiny_model_dir, lora_dropout=0.0, kl_coef=0.1))
        learner._softcapped = full_logits
        metrics = learner.train_step(groups)
        results.append((metrics.loss, metrics.kl, [p.detach().clone() for p in learner.params]))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    assert results[0][1] == pytest.approx(results[1][1], rel=1e-4, abs=1e-9)
    for a, b in zip(results[0][2], results[1][2], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("minibatches", [1, 2])
def test_a_shared_prompt_run_once_gives_the_same_update_as_every_row_whole(
    tiny_model_dir, minibatches
):
    """Groups whose episodes share a prompt: running it once per micro-batch (its keys and values
    copied to every row) must give the loss, KL, pi_old and weights of running every row whole."""
    rng = random.Random(9)
    groups = [
        prompt_group(rng, "a", [0.0, 1.0, 0.5, 1.0]),
        prompt_group(rng, "b", [1.0, 0.0, 0.0], prompt_len=30),
        random_group(rng, "c", [0.0, 1.0]),  # nothing shared: planned the ordinary way
    ]
    results = []
    for share in (True, False):
        learner = Learner(
            make_config(
                tiny_model_dir,
                lora_dropout=0.0,
                kl_coef=0.1,
                share_prefix=share,
                minibatches=minibatches,
                micro_batch_tokens=64,  # several micro-batches per group, each with the prompt
            )
        )
        rows = [r for g in learner._rows(groups)[0] for r in g]
        plan = learner._plan(rows)
        assert any(m.prefix >= 24 for m in plan) == share
        first = learner.train_step(groups)
        second = learner.train_step(groups)  # the adapter is no longer zero: KL and clip live
        params = [p.detach().clone() for p in learner.params]
        results.append((first.loss, second.loss, second.kl, second.clip_fraction, params))
    shared, whole = results
    for a, b in zip(shared[:4], whole[:4], strict=True):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-7)
    assert shared[2] > 0
    # Two Adam steps of lr 1e-3 move weights by ~2e-3; summation order differs by ~1e-6.
    for a, b in zip(shared[4], whole[4], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=2e-5)


def test_a_batch_with_nothing_to_train_is_refused_before_anything_changes(learner):
    untrained = [Sample([1, 2, 3], [0, 0, 0], [0.0, 0.0, 0.0], reward=r) for r in (0.0, 1.0)]
    cursor = learner.data_cursor
    with pytest.raises(ValueError, match="loss_mask=1"):
        learner.train_step([SampleGroup("g", "t", untrained)])
    assert learner.data_cursor == cursor


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no bf16 matrix instructions")
def test_bf16_autocast_trains_close_to_float32_and_publishes_an_exact_probe(tiny_model_dir):
    groups = [random_group(random.Random(11), "g", [0.0, 1.0, 0.5])]
    runs = {}
    for setting in ("off", "bfloat16"):
        learner = Learner(make_config(tiny_model_dir, lora_dropout=0.0, autocast=setting))
        batch = learner._collate(learner._rows(groups)[0][0])
        with torch.no_grad():
            logprobs = learner._trained_logprobs(batch)
        metrics = learner.train_step(groups)
        runs[setting] = (learner, logprobs, metrics)
    exact, fast = runs["off"], runs["bfloat16"]
    assert exact[0].autocast is None and fast[0].autocast == torch.bfloat16
    gap = (exact[1] - fast[1]).abs()
    # Really bf16 (not a silent float32), yet within what the start-up check accepts.
    assert float(gap.max()) > 0 and float(gap.mean()) < MAX_MEAN_GAP
    assert fast[2].loss == pytest.approx(exact[2].loss, abs=0.05)
    # The probe is computed without autocast: after the same start, float32 on both sides.
    probes = [run[0].publish().probe for run in (exact, fast)]
    assert probes[0].reference_logprobs == probes[1].reference_logprobs
