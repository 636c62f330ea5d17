"""The learner's forward pass for training: logprobs at trained tokens only, with a shared prefix
run once. GRPO (``learner.trainer``) and the SFT warm start (``learner.sft``) both train through
it, so a speed-up or a fix here reaches both.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from learner.grpo import masked_token_logprobs


def shared_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the sequences' common prefix, at most the shortest length - 1 (every row keeps
    at least one token of its own)."""
    shortest = min(len(s) for s in sequences)
    length = 0
    while length < shortest - 1 and all(s[length] == sequences[0][length] for s in sequences):
        length += 1
    return length


def trained_token_logprobs(
    causal_lm: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    loss_mask: torch.Tensor,
    prefix: int = 0,
    temperature: float = 1.0,
    chunk_tokens: int = 0,
) -> torch.Tensor:
    """Logprob of each token where ``loss_mask`` is 1 (0 elsewhere), shape [B, T].

    ``causal_lm`` is a transformers causal LM (a peft model's ``get_base_model()``: the LoRA
    layers are inside it). Rows are right-padded. With ``prefix`` > 0 every row starts with the
    same ``prefix`` tokens: they run once and the rows continue from copies of their keys and
    values, so gradients from every row flow back into the one shared computation (exactly as if
    each row had run it). Only trained positions are projected onto the vocabulary
    (``grpo.masked_token_logprobs``).
    """
    decoder = causal_lm.base_model
    if prefix:
        shared = decoder(input_ids=input_ids[:1, :prefix], use_cache=True)
        cache = shared.past_key_values
        cache.batch_repeat_interleave(input_ids.shape[0])
        # Rows are right-padded: under the causal mask no real token sees a pad.
        own = decoder(input_ids=input_ids[:, prefix:], past_key_values=cache, use_cache=True)
        head = shared.last_hidden_state.expand(input_ids.shape[0], -1, -1)
        hidden = torch.cat([head, own.last_hidden_state], dim=1)
    else:
        hidden = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    return masked_token_logprobs(
        hidden,
        causal_lm.get_output_embeddings(),
        input_ids,
        loss_mask,
        temperature,
        chunk_tokens,
    )
