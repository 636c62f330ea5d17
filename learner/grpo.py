"""GRPO, as small pure torch functions, meant to be read next to the papers.

What the learner optimises, per trained token t of episode i in group g:

    A_i       = r_i - mean_g(r)                       group-relative advantage (GRPO, DeepSeekMath);
                (/ std_g(r) only if scale_by_std)     Dr.GRPO drops the std: it biases toward
                                                      near-uniform groups
    ratio_t   = pi_theta(t) / pi_old(t)               pi_old: the learner's policy when the update
                                                      started (equal to pi_theta in value on the
                                                      first mini-batch, so only gradients flow)
    surr_t    = min(ratio_t * A_i, clip(ratio_t, 1 - eps_low, 1 + eps_high) * A_i)
                                                      PPO clip, asymmetric (DAPO clip-higher)
    w_t       = min(pi_old(t) / mu(t), C)             truncated importance weight (TIS) against
                                                      the engine's behaviour policy mu: corrects
                                                      for staleness (mu is an older adapter) and
                                                      for engine/learner numeric differences
    loss_t    = -w_t * surr_t + beta * KL_t           KL_t: k3 estimator to the reference policy
                                                      (adapter disabled), only when beta > 0
    loss      = sum_t loss_t / (number of trained tokens in the whole batch)
                                                      token-mean across the batch (DAPO/Dr.GRPO);
                or mean_i (sum_{t in i} loss_t / |i|)  with loss_norm="sequence": a mean of
                                                      per-episode means (the original GRPO)

Groups whose rewards are all equal have A = 0 everywhere and are skipped (and counted), as are
groups whose rewards span no more than ``min_reward_spread``: ``learner.types.lacks_signal`` is
that rule, shared with the farm's ledger.
Every function here is deterministic and hand-checkable; the trainer only wires them together.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint


def group_advantages(
    rewards: torch.Tensor, scale_by_std: bool = False, eps: float = 1e-6
) -> torch.Tensor:
    """Advantage of each episode in one group: its reward minus the group mean.

    With ``scale_by_std`` the result is divided by the group's (population) std + eps, as in the
    original GRPO; off by default per Dr.GRPO.
    """
    rewards = rewards.to(torch.float32)
    advantages = rewards - rewards.mean()
    if scale_by_std:
        advantages = advantages / (rewards.std(unbiased=False) + eps)
    return advantages


def token_logprobs(
    logits: torch.Tensor, token_ids: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Per-position log p(token_ids[:, i] | token_ids[:, :i]), shape [B, T]; position 0 is 0.

    ``logits[:, i]`` is the model's prediction for position i + 1, so the logits are shifted by
    one against the ids. The result is aligned with ``token_ids`` exactly like the engine's
    behaviour logprobs. Uses gather - logsumexp instead of a full log_softmax so a 150k vocab
    does not need a second [B, T, V] tensor.
    """
    scaled = logits[:, :-1].float() / temperature
    targets = token_ids[:, 1:].unsqueeze(-1)
    picked = scaled.gather(-1, targets).squeeze(-1) - torch.logsumexp(scaled, dim=-1)
    return torch.nn.functional.pad(picked, (1, 0), value=0.0)


def masked_token_logprobs(
    hidden: torch.Tensor,
    output_layer: torch.nn.Module,
    token_ids: torch.Tensor,
    loss_mask: torch.Tensor,
    temperature: float = 1.0,
    chunk_tokens: int = 0,
) -> torch.Tensor:
    """``token_logprobs`` computed only where ``loss_mask`` is 1; every other position is 0.

    ``hidden`` is the decoder's last hidden state [B, T, H] and ``output_layer`` the LM head. Only
    sampled tokens are trained, and in an agent episode they are a small share of the tokens
    (system prompt, task and env observations are not), so projecting just those positions onto
    the vocabulary skips most of the [B, T, V] logits, their logsumexp and its backward.

    ``chunk_tokens`` > 0 projects that many trained positions at a time and recomputes each
    chunk's logits in backward instead of keeping them: the [tokens x vocab] tensor never exists
    whole (a 150k vocabulary makes it ~0.6 GB per 1k tokens in float32). Same values and
    gradients as unchunked.
    """
    predicts = loss_mask[:, 1:].bool()  # hidden state i predicts token i + 1
    states = hidden[:, :-1][predicts]
    targets = token_ids[:, 1:][predicts]
    if 0 < chunk_tokens < len(targets):
        pieces = [
            checkpoint(_chunk_logprobs, states[i : i + chunk_tokens], targets[i : i + chunk_tokens],
                       output_layer, temperature, use_reentrant=False)
            for i in range(0, len(targets), chunk_tokens)
        ]  # fmt: skip
        picked = torch.cat(pieces)
    else:
        picked = _chunk_logprobs(states, targets, output_layer, temperature)
    out = torch.zeros(predicts.shape, dtype=picked.dtype, device=picked.device)
    out = out.masked_scatter(predicts, picked)
    return torch.nn.functional.pad(out, (1, 0), value=0.0)


def _chunk_logprobs(
    states: torch.Tensor, targets: torch.Tensor, output_layer: torch.nn.Module, temperature: float
) -> torch.Tensor:
    # The head and its log-softmax in float32 even under the learner's bf16 autocast
    # (``learner.autocast``): a bf16 logit is off by ~2^-8 of its size, which logprobs would keep.
    with torch.autocast(device_type=states.device.type, enabled=False):
        logits = output_layer(states.to(output_layer.weight.dtype)).float()
    if temperature != 1.0:
        logits = logits / temperature
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def truncated_importance_weights(
    old_logprobs: torch.Tensor, behaviour_logprobs: torch.Tensor, cap: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """TIS weights w = min(pi_old / mu, cap), detached. Returns (truncated, untruncated)."""
    raw = torch.exp(old_logprobs.detach() - behaviour_logprobs.detach())
    return raw.clamp(max=cap), raw


def clipped_surrogate(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    eps_low: float,
    eps_high: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token-level PPO surrogate with asymmetric clipping.

    Returns (surrogate, clipped_low, clipped_high), each shaped like ``logprobs``.

    ``advantages`` broadcasts against ``logprobs`` (pass [B, 1] for one advantage per episode).
    The surrogate is the quantity to *maximise*. A token is "clipped" when the clipped branch is
    the one min() picks and it is flat in theta (so the token gives no gradient): ratio above
    1 + eps_high with A > 0 (clipped_high), or below 1 - eps_low with A < 0 (clipped_low).
    """
    ratio = torch.exp(logprobs - old_logprobs.detach())
    clipped_ratio = ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    surrogate = torch.minimum(ratio * advantages, clipped_ratio * advantages)
    clipped_high = (ratio > 1.0 + eps_high) & (advantages > 0)
    clipped_low = (ratio < 1.0 - eps_low) & (advantages < 0)
    return surrogate, clipped_low, clipped_high


def kl_to_reference(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(pi_theta || pi_ref): exp(d) - d - 1 with d = ref - theta.

    Unbiased for samples from pi_theta and always >= 0 (Schulman, "Approximating KL divergence").
    """
    delta = ref_logprobs.detach() - logprobs
    return torch.exp(delta) - delta - 1.0


def sequence_weights(token_counts: list[int], norm: str) -> list[float]:
    """Each episode's weight per trained token so that summing ``weight * loss_t`` over a batch
    is its loss: 1 / (all trained tokens) for ``token``, 1 / (episodes x the episode's own
    tokens) for ``sequence``. An episode with no trained token weighs 0."""
    if norm == "token":
        total = sum(token_counts)
        if total <= 0:
            raise ValueError("a batch needs at least one trained token")
        return [1.0 / total] * len(token_counts)
    if norm == "sequence":
        return [1.0 / (len(token_counts) * n) if n else 0.0 for n in token_counts]
    raise ValueError(f"loss_norm={norm!r}: use 'token' or 'sequence'")


def weighted_sum(values: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Sum over mask-1 tokens of ``values``, each row scaled by its weight ([B] or [B, 1])."""
    return (values * mask * weights.reshape(-1, 1)).sum()


def grpo_token_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    behaviour_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    *,
    eps_low: float,
    eps_high: float,
    is_cap: float,
    kl_coef: float = 0.0,
    ref_logprobs: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Per-token GRPO loss (see module docstring) and the per-token pieces the metrics need.

    All tensors are [B, T] except ``advantages`` ([B, 1] or [B, T]). Returns a dict of [B, T]
    tensors: ``loss`` (to minimise), ``policy_loss``, ``kl`` (zeros when off), ``weight``
    (truncated IS weight), ``raw_weight``, ``clipped_low``, ``clipped_high``.
    """
    weight, raw_weight = truncated_importance_weights(old_logprobs, behaviour_logprobs, is_cap)
    surrogate, clipped_low, clipped_high = clipped_surrogate(
        logprobs, old_logprobs, advantages, eps_low, eps_high
    )
    policy_loss = -weight * surrogate
    if kl_coef > 0.0:
        if ref_logprobs is None:
            raise ValueError("kl_coef > 0 needs ref_logprobs (the adapter-disabled logprobs)")
        kl = kl_to_reference(logprobs, ref_logprobs)
        loss = policy_loss + kl_coef * kl
    else:
        kl = torch.zeros_like(policy_loss)
        loss = policy_loss
    return {
        "loss": loss,
        "policy_loss": policy_loss,
        "kl": kl,
        "weight": weight,
        "raw_weight": raw_weight,
        "clipped_low": clipped_low,
        "clipped_high": clipped_high,
    }
