"""trl's ``SFTTrainer`` with the loss computed the way the GRPO learner computes it.

trl computes log-probabilities, entropy and top-1 accuracy at every position, through a chunked
LM head built for GPU memory. In the warm start's agent rows only ~15% of tokens are the
assistant's (the system prompt, the task and env observations are context), and on a CPU the
vocabulary projection of the other 85% and its backward were over half of each step. Here the
loss is the same token-mean negative log-likelihood over the same labels, but only trained
positions are projected (``learner.forward``), and the rows' common prefix (the system prompt
and the start of the task turn) runs once per batch.
"""

from __future__ import annotations

import torch
from trl import SFTTrainer

from learner.forward import shared_prefix_length, trained_token_logprobs

# Below this many shared tokens the batch runs without a shared prefix.
MIN_SHARED_PREFIX = 16


class TrainedTokensSFTTrainer(SFTTrainer):
    """``SFTTrainer`` whose training loss reads the LM head only at labelled tokens."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
        if return_outputs or getattr(causal_lm.config, "final_logit_softcapping", None):
            # Evaluation wants the model's outputs; a soft-capped head needs the model's forward.
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        ids, labels = inputs["input_ids"], inputs["labels"]
        attention_mask = inputs.get("attention_mask", torch.ones_like(ids))
        loss_mask = (labels != -100).long()
        lengths = attention_mask.sum(dim=1).tolist()
        rows = [row[:n] for row, n in zip(ids.tolist(), lengths, strict=True)]
        prefix = shared_prefix_length(rows)
        if ids.shape[0] < 2 or prefix < MIN_SHARED_PREFIX:
            prefix = 0
        logprobs = trained_token_logprobs(causal_lm, ids, attention_mask, loss_mask, prefix)
        tokens = loss_mask[:, 1:].sum() if num_items_in_batch is None else num_items_in_batch
        return -logprobs.sum() / torch.as_tensor(tokens).clamp(min=1)
