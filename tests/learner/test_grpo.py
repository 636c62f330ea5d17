"""GRPO's pieces against values computed by hand (see the docstring of learner/grpo.py)."""

from __future__ import annotations

import math

import pytest
import torch

from learner import grpo
from learner.types import lacks_signal


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


# ---------------------------------------------------------------- advantages


def test_advantages_subtract_the_group_mean_without_std_scaling_by_default():
    advantages = grpo.group_advantages(t([1.0, 0.0, 0.0, 1.0]))
    assert advantages.tolist() == [0.5, -0.5, -0.5, 0.5]


def test_advantages_with_std_scaling_divide_by_population_std():
    # mean 0.25, population std sqrt(0.1875) = 0.4330127
    advantages = grpo.group_advantages(t([1.0, 0.0, 0.0, 0.0]), scale_by_std=True, eps=0.0)
    expected = [0.75 / 0.4330127, -0.25 / 0.4330127, -0.25 / 0.4330127, -0.25 / 0.4330127]
    assert advantages.tolist() == pytest.approx(expected, rel=1e-5)


def test_advantages_of_unequal_rewards_sum_to_zero():
    advantages = grpo.group_advantages(t([0.2, 0.9, 0.4]))
    assert advantages.tolist() == pytest.approx([-0.3, 0.4, -0.1], abs=1e-6)


def test_zero_variance_groups_are_detected():
    assert lacks_signal([0.3, 0.3, 0.3])
    assert lacks_signal([1.0, 1.0])
    assert lacks_signal([0.2, 0.2 + 1e-9])  # numerically equal: no signal
    assert not lacks_signal([0.0, 1.0])
    assert not lacks_signal([0.5, 0.5, 0.51])
    # A configured minimum spread: step-cost noise among failures is no signal, a success is.
    assert lacks_signal([-0.05, -0.07, -0.03], min_spread=0.05)
    assert not lacks_signal([-0.05, 1.2, -0.03], min_spread=0.05)


# ---------------------------------------------------------------- logprob alignment


def test_token_logprobs_are_shifted_by_one_and_zero_at_position_zero():
    # vocab of 2; logits[:, i] predicts token i + 1
    logits = t([[[0.0, 0.0], [math.log(3.0), 0.0], [5.0, 5.0]]])
    ids = torch.tensor([[1, 0, 1]])
    out = grpo.token_logprobs(logits, ids)
    # position 1: token 0 under uniform -> log 0.5; position 2: token 1 under (3:1) -> log 0.25
    assert out.tolist()[0] == pytest.approx([0.0, math.log(0.5), math.log(0.25)], abs=1e-6)


def test_token_logprobs_use_the_sampling_temperature():
    logits = t([[[2.0, 0.0], [0.0, 0.0]]])
    ids = torch.tensor([[0, 0]])
    # temperature 2 -> logits (1, 0): p(token 0) = e / (e + 1)
    out = grpo.token_logprobs(logits, ids, temperature=2.0)
    assert out[0, 1].item() == pytest.approx(math.log(math.e / (math.e + 1.0)), abs=1e-6)


def test_masked_token_logprobs_equal_the_full_ones_where_trained_with_the_same_gradient():
    """Projecting only trained positions onto the vocabulary changes nothing the loss reads."""
    gen = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(8, 11, bias=False)
    hidden = torch.randn(3, 7, 8, generator=gen, requires_grad=True)
    ids = torch.randint(0, 11, (3, 7), generator=gen)
    mask = torch.tensor(
        [[0, 0, 1, 1, 0, 1, 1], [0, 0, 0, 0, 0, 0, 1], [0, 1, 1, 1, 1, 1, 1]], dtype=torch.float32
    )
    full = grpo.token_logprobs(head(hidden), ids, temperature=0.7)
    masked = grpo.masked_token_logprobs(hidden, head, ids, mask, temperature=0.7)
    # In chunks of 2 trained positions, logits recomputed in backward: the same numbers again.
    chunked = grpo.masked_token_logprobs(hidden, head, ids, mask, temperature=0.7, chunk_tokens=2)
    assert masked.shape == full.shape == chunked.shape
    torch.testing.assert_close(masked * mask, full * mask)
    torch.testing.assert_close(chunked, masked)
    assert (masked[mask == 0] == 0).all()
    grads = [torch.autograd.grad((lp * mask).sum(), hidden)[0] for lp in (full, masked, chunked)]
    torch.testing.assert_close(grads[0], grads[1])
    torch.testing.assert_close(grads[0], grads[2])
    head_grads = [
        torch.autograd.grad((grpo.masked_token_logprobs(hidden, head, ids, mask, 1.0, k) * mask)
                            .sum(), head.weight)[0]
        for k in (0, 3)
    ]  # fmt: skip
    torch.testing.assert_close(head_grads[0], head_grads[1])


# ---------------------------------------------------------------- clipping


def surrogate_case(ratio: float, advantage: float, eps_low=0.2, eps_high=0.28):
    logprobs = torch.tensor([[math.log(ratio)]], requires_grad=True)
    old = torch.zeros(1, 1)
    surrogate, low, high = grpo.clipped_surrogate(
        logprobs, old, torch.tensor([[advantage]]), eps_low, eps_high
    )
    surrogate.sum().backward()
    return surrogate.item(), bool(low.item()), bool(high.item()), logprobs.grad.item()


def test_clip_high_caps_a_positive_advantage_above_one_plus_eps_high():
    value, low, high, grad = surrogate_case(1.5, +1.0)
    assert value == pytest.approx(1.28)
    assert (low, high) == (False, True)
    assert grad == 0.0  # the clipped branch is flat: no gradient pushes further


def test_ratio_between_the_two_eps_is_not_clipped_for_positive_advantage():
    # asymmetric: 1.25 would be clipped by a symmetric 0.2, but clip-higher lets it through
    value, low, high, grad = surrogate_case(1.25, +1.0)
    assert value == pytest.approx(1.25)
    assert (low, high) == (False, False)
    assert grad == pytest.approx(1.25)  # d(ratio * A)/d(logprob) = ratio * A


def test_clip_low_caps_a_negative_advantage_below_one_minus_eps_low():
    value, low, high, grad = surrogate_case(0.5, -1.0)
    assert value == pytest.approx(-0.8)
    assert (low, high) == (True, False)
    assert grad == 0.0


def test_pessimistic_side_is_never_clipped():
    # ratio above the band with A < 0: min picks the unclipped (worse) value and keeps gradient
    value, low, high, grad = surrogate_case(1.5, -2.0)
    assert value == pytest.approx(-3.0)
    assert (low, high) == (False, False)
    assert grad == pytest.approx(-3.0)
    # ratio below the band with A > 0: same
    value, low, high, grad = surrogate_case(0.5, +2.0)
    assert value == pytest.approx(1.0)
    assert (low, high) == (False, False)
    assert grad == pytest.approx(1.0)


# ---------------------------------------------------------------- truncated importance sampling


def test_importance_weights_are_truncated_at_the_cap_and_detached():
    old = torch.tensor([[math.log(3.0), math.log(0.5), 0.0]], requires_grad=True)
    behaviour = torch.zeros(1, 3)
    weights, raw = grpo.truncated_importance_weights(old, behaviour, cap=2.0)
    assert weights.tolist()[0] == pytest.approx([2.0, 0.5, 1.0])
    assert raw.tolist()[0] == pytest.approx([3.0, 0.5, 1.0])
    assert not weights.requires_grad


# ---------------------------------------------------------------- aggregation and KL


def test_token_mean_counts_only_mask_tokens_over_the_whole_batch():
    values = t([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = t([[0, 1, 1], [0, 1, 0]])
    weights = t(grpo.sequence_weights([2, 1], "token"))
    assert grpo.weighted_sum(values, mask, weights).item() == pytest.approx(10.0 / 3.0)


def test_token_mean_over_micro_batches_equals_the_batch_token_mean():
    # episode A has 3 trained tokens, episode B has 1: token-mean weights A's tokens 3:1,
    # a mean of per-episode means would weight the episodes 1:1.
    a_values, a_mask = t([[1.0, 1.0, 1.0, 1.0]]), t([[0, 1, 1, 1]])
    b_values, b_mask = t([[9.0, 9.0]]), t([[0, 1]])
    w_a, w_b = grpo.sequence_weights([3, 1], "token")
    summed = grpo.weighted_sum(a_values, a_mask, t([w_a])) + grpo.weighted_sum(
        b_values, b_mask, t([w_b])
    )
    assert summed.item() == pytest.approx((1 + 1 + 1 + 9) / 4)
    assert summed.item() != pytest.approx((1 + 9) / 2)


def test_sequence_norm_weighs_every_episode_the_same():
    # The same two episodes under loss_norm="sequence": a mean of per-episode means, so the
    # 3-token episode no longer outweighs the 1-token one (a long failed episode cannot dominate).
    a_values, a_mask = t([[1.0, 1.0, 1.0, 1.0]]), t([[0, 1, 1, 1]])
    b_values, b_mask = t([[9.0, 9.0]]), t([[0, 1]])
    w_a, w_b = grpo.sequence_weights([3, 1], "sequence")
    summed = grpo.weighted_sum(a_values, a_mask, t([w_a])) + grpo.weighted_sum(
        b_values, b_mask, t([w_b])
    )
    assert summed.item() == pytest.approx((1 + 9) / 2)
    assert grpo.sequence_weights([2, 0], "sequence") == [0.25, 0.0]


def test_token_mean_rejects_an_empty_batch():
    with pytest.raises(ValueError, match="at least one trained token"):
        grpo.sequence_weights([0, 0], "token")
    with pytest.raises(ValueError, match="loss_norm"):
        grpo.sequence_weights([1], "episode")


def test_k3_kl_is_zero_at_the_reference_and_positive_elsewhere():
    logprobs = t([[math.log(0.5), math.log(0.25)]])
    ref = t([[math.log(0.5), math.log(0.5)]])
    kl = grpo.kl_to_reference(logprobs, ref)
    # second token: d = log 2 -> 2 - log 2 - 1
    assert kl.tolist()[0] == pytest.approx([0.0, 1.0 - math.log(2.0)], abs=1e-6)


def test_grpo_token_loss_combines_weight_surrogate_and_kl():
    logprobs = torch.tensor([[0.0, math.log(0.4)]], requires_grad=True)
    old = logprobs.detach().clone()  # first mini-batch: ratio is exactly 1
    behaviour = t([[0.0, math.log(0.1)]])  # engine was less sure: raw weight 4 -> capped at 2
    ref = t([[0.0, math.log(0.2)]])
    parts = grpo.grpo_token_loss(
        logprobs,
        old,
        behaviour,
        t([[0.5]]),
        eps_low=0.2,
        eps_high=0.28,
        is_cap=2.0,
        kl_coef=0.1,
        ref_logprobs=ref,
    )
    kl = 0.5 - math.log(0.5) - 1.0  # d = log(0.2 / 0.4)
    assert parts["weight"].tolist()[0] == pytest.approx([1.0, 2.0])
    assert parts["policy_loss"].tolist()[0] == pytest.approx([-0.5, -1.0])
    assert parts["loss"].tolist()[0] == pytest.approx([-0.5, -1.0 + 0.1 * kl])
    # gradient of the policy term: -w * A * ratio = -1.0 for token 1; KL adds beta * (1 - e^d)
    parts["loss"][0, 1].backward()
    assert logprobs.grad[0, 1].item() == pytest.approx(-1.0 + 0.1 * (1.0 - 0.5))


def test_grpo_token_loss_with_kl_needs_reference_logprobs():
    with pytest.raises(ValueError, match="ref_logprobs"):
        grpo.grpo_token_loss(
            t([[0.0]]), t([[0.0]]), t([[0.0]]), t([[1.0]]),
            eps_low=0.2, eps_high=0.28, is_cap=2.0, kl_coef=0.1,
        )  # fmt: skip
