"""``Learner``: the base model with a trainable LoRA adapter, one GRPO update per ``train_step``.

Data flow: ``SampleGroup``s (converted by the cluster from rollout trajectory groups) ->
``train_step`` (advantages, micro-batches by token budget, recomputed logprobs on the engine's
exact ids, loss from ``learner.grpo``, AdamW step) -> ``publish`` (a new ``AdapterVersion`` for the
engines) and, now and then, ``save_checkpoint``. Plain Python, so it is testable without Ray;
``learner/actor.py`` wraps it in a Ray actor.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from learner import grpo
from learner.checkpoint import (
    TrainingState,
    export_state,
    import_state,
    load_checkpoint,
    save_checkpoint,
)
from learner.config import LearnerConfig
from learner.forward import shared_prefix_length, trained_token_logprobs
from learner.types import LearnerState, Sample, SampleGroup, UpdateMetrics, lacks_signal
from serving.devices import actor_device
from serving.types import AdapterVersion

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """``auto``: decided where the learner runs, from the GPUs Ray gave its actor."""
    if name == "auto":
        return torch.device(actor_device("auto"))
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={name!r} but CUDA is not available here: set device='cpu'")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # numpy is optional for the learner itself
        pass


def lr_factor(step: int, warmup_steps: int, schedule: str, total_steps: int | None) -> float:
    """Multiplier of the peak LR at optimizer step ``step`` (0-based): linear warm-up, then
    constant or decayed (linear/cosine) to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant" or total_steps is None:
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class _Row:
    """One sample scheduled for training: its episode advantage and, when the update has several
    mini-batches, its logprobs under pi_old (the policy at the start of the update)."""

    sample: Sample
    advantage: float
    group: int = 0
    old_logprobs: tuple[float, ...] | None = None


def plan_micro_batches(lengths: Sequence[int], token_budget: int) -> list[list[int]]:
    """Group row indices into micro-batches whose padded size (rows x longest) fits the budget.

    Rows are sorted longest first so similar lengths share a batch (little padding); a row longer
    than the budget forms a micro-batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        grown = max(longest, lengths[i])
        if current and grown * (len(current) + 1) > token_budget:
            batches.append(current)
            current, longest = [], 0
            grown = lengths[i]
        current.append(i)
        longest = grown
    if current:
        batches.append(current)
    return batches


# Below this many shared tokens a group's rows are batched with everyone else's instead.
MIN_SHARED_PREFIX = 16


@dataclass(frozen=True)
class MicroBatch:
    """Rows (indices into an update's rows) run in one forward/backward. With ``prefix`` > 0 the
    rows' first ``prefix`` tokens are identical and run once, as a batch of one."""

    rows: list[int]
    prefix: int = 0


def plan_shared_prefix_batches(
    groups: Sequence[Sequence[int]], token_ids: Sequence[Sequence[int]], token_budget: int
) -> list[MicroBatch]:
    """Micro-batches that run each group's shared prefix once.

    ``groups`` lists row indices per group (the G episodes of one task share its prompt). A group
    whose common prefix has at least ``MIN_SHARED_PREFIX`` tokens is split by its padded *suffix*
    size into micro-batches that each carry the prefix; all other rows are planned together
    as usual (``plan_micro_batches``).
    """
    batches: list[MicroBatch] = []
    unshared: list[int] = []
    for rows in groups:
        prefix = shared_prefix_length([token_ids[i] for i in rows]) if len(rows) > 1 else 0
        if prefix < MIN_SHARED_PREFIX:
            unshared.extend(rows)
            continue
        suffixes = [len(token_ids[i]) - prefix for i in rows]
        for chunk in plan_micro_batches(suffixes, token_budget):
            batches.append(MicroBatch([rows[k] for k in chunk], prefix))
    lengths = [len(token_ids[i]) for i in unshared]
    batches += [
        MicroBatch([unshared[k] for k in chunk])
        for chunk in plan_micro_batches(lengths, token_budget)
    ]
    return batches


class Learner:
    """GRPO on a peft LoRA adapter over a frozen base model.

    ``step`` counts updates that changed the weights; ``version`` is the newest adapter version
    this learner published (0 = none, the engines serve the base model); ``data_cursor`` counts
    groups consumed by ``train_step`` (trained or skipped), for the caller's data resume.
    ``record`` is the learner's own account of what it trained: one entry per ``train_step``
    call, the group ids whose gradient it stepped on. It is part of the checkpointed state, so
    an audit can compare what the farm booked with what the weights it continued from contain.
    """

    def __init__(self, config: LearnerConfig) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.config = config
        self.device = resolve_device(config.device)
        seed_everything(config.seed)
        self.tokenizer = AutoTokenizer.from_pretrained(config.model_path)
        if self.tokenizer.chat_template is None:
            raise ValueError(
                f"{config.model_path} has no chat template: rollouts, SFT and the adapter probe "
                "render prompts with the tokenizer's own template; use a chat/instruct model"
            )
        self.memory = _check_memory(config, self.device)  # before any weight is on the device
        base = AutoModelForCausalLM.from_pretrained(config.model_path, dtype=DTYPES[config.dtype])
        missing = [m for m in config.target_modules if not _has_module(base, m)]
        if missing:
            raise ValueError(
                f"target_modules {missing} do not exist in {config.model_path}; pick module "
                "names from the model (e.g. q_proj, k_proj, v_proj, o_proj for Qwen2/Llama)"
            )
        self.model = adapt_for_training(base, config).to(self.device)
        self.model.train()
        self.pad_id = _pad_id(self.tokenizer)
        # Models that soft-cap their logits (Gemma 2) need their own forward for logprobs.
        self._softcapped = getattr(base.config, "final_logit_softcapping", None) is not None
        self._shares_prefix = (
            config.share_prefix and not config.gradient_checkpointing and not self._softcapped
        )
        self.autocast_gap: float | None = None  # autocast vs float32 at start-up, when on
        self.autocast = self._choose_autocast(base.dtype)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        # LoRA weights and optimizer state stay float32 whatever the base dtype.
        for p in self.params:
            p.data = p.data.float()
        self.optimizer = torch.optim.AdamW(
            self.params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: lr_factor(s, config.warmup_steps, config.lr_schedule, config.total_steps),
        )
        self.step = 0
        self.version = 0
        self.data_cursor = 0
        self.record: list[list[str]] = []
        self.last_publish_s: float | None = None
        self._probe_ids: tuple[list[int], list[int]] | None = None  # computed on first publish

    # ------------------------------------------------------------------ training

    def train_step(self, groups: Sequence[SampleGroup]) -> UpdateMetrics:
        """One GRPO update on ``groups``; zero-variance groups are skipped and counted."""
        started = time.perf_counter()
        if not groups:
            raise ValueError("train_step got no groups: pass at least one SampleGroup")
        trained, skipped = self._rows(groups)
        trained_ids = [g.group_id for g in groups
                       if not lacks_signal(g.rewards, self.config.min_reward_spread)]  # fmt: skip
        if trained and not any(r.sample.num_trained_tokens for g in trained for r in g):
            raise ValueError(
                "every loss_mask in this batch is 0, so nothing can train: the cluster must mark "
                "the tokens the engine sampled with loss_mask=1"
            )
        self.data_cursor += len(groups)
        self.record.append(trained_ids)
        stats = _Stats()
        if trained:
            if self.config.minibatches > 1:
                trained = self._with_old_logprobs(trained)
            for chunk in _split(trained, self.config.minibatches):
                self._optimizer_step(chunk, stats)
            self.step += 1
        elapsed = time.perf_counter() - started
        samples = [s for g in groups for s in g.samples]
        return UpdateMetrics(
            step=self.step,
            stepped=bool(trained),
            groups=len(groups),
            trained_groups=len(trained),
            skipped_zero_variance=skipped,
            samples=len(samples),
            trained_tokens=stats.tokens,
            loss=stats.mean("loss"),
            policy_loss=stats.mean("policy_loss"),
            kl=stats.mean("kl") if self.config.kl_coef > 0 else None,
            importance_weight_mean=stats.mean("raw_weight"),
            importance_weight_max=stats.max_weight,
            importance_truncated_fraction=stats.mean("truncated"),
            clip_fraction=stats.mean("clipped_low") + stats.mean("clipped_high"),
            clip_fraction_low=stats.mean("clipped_low"),
            clip_fraction_high=stats.mean("clipped_high"),
            grad_norm=max(stats.grad_norms, default=0.0),
            learning_rate=self.optimizer.param_groups[0]["lr"],
            reward_mean=sum(s.reward for s in samples) / len(samples),
            max_staleness=max(self.version - s.adapter_version for s in samples),
            tokens_per_s=stats.tokens / elapsed if elapsed > 0 else 0.0,
            update_s=elapsed,
        )

    def _rows(self, groups: Sequence[SampleGroup]) -> tuple[list[list[_Row]], int]:
        """Advantage-scored rows of each group with signal, and the count of skipped groups."""
        trained: list[list[_Row]] = []
        skipped = 0
        for group in groups:
            if lacks_signal(group.rewards, self.config.min_reward_spread):
                skipped += 1
                continue
            rewards = torch.tensor(group.rewards, dtype=torch.float32)
            advantages = grpo.group_advantages(rewards, self.config.scale_by_std)
            index = len(trained)
            trained.append(
                [_Row(s, float(a), index) for s, a in zip(group.samples, advantages, strict=True)]
            )
        return trained, skipped

    def _optimizer_step(self, rows: list[_Row], stats: _Stats) -> None:
        cfg = self.config
        counts = [r.sample.num_trained_tokens for r in rows]
        if sum(counts) == 0:  # a mini-batch of empty completions: nothing to step on
            return
        weights = grpo.sequence_weights(counts, cfg.loss_norm)
        self.optimizer.zero_grad(set_to_none=True)
        for micro in self._plan(rows):
            batch = self._collate([rows[i] for i in micro.rows])
            row_weights = torch.tensor([weights[i] for i in micro.rows], device=self.device)
            logprobs = self._trained_logprobs(batch, micro.prefix)
            # With one mini-batch pi_old is this very forward pass, detached: no extra pass.
            old_lp = batch.get("old_logprobs", logprobs.detach())
            ref_lp = self._reference_logprobs(batch, micro.prefix) if cfg.kl_coef > 0 else None
            parts = grpo.grpo_token_loss(
                logprobs,
                old_lp,
                batch["behaviour_logprobs"],
                batch["advantages"],
                eps_low=cfg.clip_eps_low,
                eps_high=cfg.clip_eps_high,
                is_cap=cfg.is_cap,
                kl_coef=cfg.kl_coef,
                ref_logprobs=ref_lp,
            )
            mask = batch["loss_mask"]
            grpo.weighted_sum(parts["loss"], mask, row_weights).backward()
            stats.add(parts, mask, cfg.is_cap)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        stats.grad_norms.append(float(grad_norm))
        self.optimizer.step()
        self.scheduler.step()

    @torch.no_grad()
    def _with_old_logprobs(self, groups: list[list[_Row]]) -> list[list[_Row]]:
        """Freeze pi_old for every row before the update's first optimizer step (eval mode)."""
        rows = [row for group in groups for row in group]
        old: dict[int, tuple[float, ...]] = {}
        self.model.eval()
        try:
            lengths = [len(r.sample.token_ids) for r in rows]
            for micro in self._plan(rows):
                batch = self._collate([rows[i] for i in micro.rows])
                logprobs = self._trained_logprobs(batch, micro.prefix).cpu()
                for k, i in enumerate(micro.rows):
                    old[i] = tuple(logprobs[k, : lengths[i]].tolist())
        finally:
            self.model.train()
        rebuilt, i = [], 0
        for group in groups:
            rebuilt.append([replace(row, old_logprobs=old[i + k]) for k, row in enumerate(group)])
            i += len(group)
        return rebuilt

    def _plan(self, rows: list[_Row]) -> list[MicroBatch]:
        budget = self.config.micro_batch_tokens
        if not self._shares_prefix:
            lengths = [len(r.sample.token_ids) for r in rows]
            return [MicroBatch(idx) for idx in plan_micro_batches(lengths, budget)]
        groups: dict[int, list[int]] = {}
        for i, row in enumerate(rows):
            groups.setdefault(row.group, []).append(i)
        ids = [r.sample.token_ids for r in rows]
        return plan_shared_prefix_batches(list(groups.values()), ids, budget)

    @torch.no_grad()
    def _reference_logprobs(self, batch: dict[str, torch.Tensor], prefix: int) -> torch.Tensor:
        # The reference policy is the base model: the same weights with the adapter switched
        # off, so no second copy of the model is held.
        with self.model.disable_adapter():
            return self._trained_logprobs(batch, prefix)

    def _choose_autocast(self, weights: torch.dtype) -> torch.dtype | None:
        """``learner.autocast`` resolved on this device and checked against float32 on the
        probe prompt (``learner.autocast``); None when off or when the check fails."""
        import sys

        from learner.autocast import MAX_MEAN_GAP, autocast_context, autocast_gap, resolve_autocast
        from learner.publish import probe_prompt_ids

        chosen = resolve_autocast(self.config.autocast, self.device, weights)
        if chosen is None:
            return None
        ids = torch.tensor([probe_prompt_ids(self.tokenizer)], device=self.device)
        mask = torch.ones_like(ids)

        def logprobs(on: bool) -> torch.Tensor:
            with autocast_context(self.device, chosen if on else None):
                return trained_token_logprobs(self.model.get_base_model(), ids, mask, mask)

        was_training = self.model.training
        self.model.eval()
        try:
            gap = autocast_gap(logprobs)
        finally:
            self.model.train(was_training)
        if gap > MAX_MEAN_GAP and self.config.autocast == "auto":
            print(f"learner: bf16 autocast off: its logprobs differ from float32 by {gap:.3g} "
                  f"on average (> {MAX_MEAN_GAP}); set learner.autocast: bfloat16 to use it "
                  "anyway", file=sys.stderr)  # fmt: skip
            return None
        print(f"learner: bf16 autocast on {self.device} (mean logprob gap to float32 "
              f"{gap:.2g}{'' if gap <= MAX_MEAN_GAP else ', above the auto limit'})",
              file=sys.stderr)  # fmt: skip
        self.autocast_gap = gap
        return chosen

    def _trained_logprobs(self, batch: dict[str, torch.Tensor], prefix: int = 0) -> torch.Tensor:
        """Logprobs at the batch's trained tokens (0 elsewhere): all the loss reads.

        With ``prefix`` > 0 every row starts with the same ``prefix`` tokens: they run once and
        the rows continue from copies of their keys and values, so gradients from every row
        flow back into the one shared computation (exactly as if each row had run it).
        """
        from learner.autocast import autocast_context

        ids = batch["input_ids"]
        if self._softcapped:  # the model's own forward applies its logit soft-cap
            return self._logprobs(ids, batch["attention_mask"])
        with autocast_context(self.device, self.autocast):
            return trained_token_logprobs(
                self.model.get_base_model(),
                ids,
                batch["attention_mask"],
                batch["loss_mask"],
                prefix,
                self.config.temperature,
                self.config.logit_chunk_tokens,
            )

    def _logprobs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        return grpo.token_logprobs(logits, input_ids, self.config.temperature)

    def _collate(self, rows: list[_Row]) -> dict[str, torch.Tensor]:
        width = max(len(r.sample.token_ids) for r in rows)

        def padded(values: list, fill: float | int) -> list:
            return list(values) + [fill] * (width - len(values))

        def tensor(values: list[list], dtype: torch.dtype) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype, device=self.device)

        batch = {
            "input_ids": tensor(
                [padded(r.sample.token_ids, self.pad_id) for r in rows], torch.long
            ),
            "attention_mask": tensor(
                [padded([1] * len(r.sample.token_ids), 0) for r in rows], torch.long
            ),
            "loss_mask": tensor([padded(r.sample.loss_mask, 0) for r in rows], torch.float32),
            "behaviour_logprobs": tensor(
                [padded(r.sample.behaviour_logprobs, 0.0) for r in rows], torch.float32
            ),
            "advantages": tensor([[r.advantage] for r in rows], torch.float32),
        }
        if all(r.old_logprobs is not None for r in rows):
            batch["old_logprobs"] = tensor(
                [padded(list(r.old_logprobs), 0.0) for r in rows], torch.float32
            )
        return batch

    # ------------------------------------------------------------------ publishing

    def publish(self, out_dir: str | Path | None = None, min_version: int = 0) -> AdapterVersion:
        """The current adapter as the next version: ``max(version, min_version, newest in
        out_dir) + 1``, so versions never repeat, even after a resume from an older checkpoint.
        With ``out_dir`` it is also stored there (atomically, newest ``keep_last`` kept)."""
        from learner.publish import build_version, probe_tokens
        from serving.adapter_files import published_versions, store_adapter

        started = time.perf_counter()
        on_disk = published_versions(Path(out_dir)) if out_dir is not None else []
        version = max([self.version, min_version, *on_disk]) + 1
        if self._probe_ids is None:
            self._probe_ids = probe_tokens(self.model, self.tokenizer, self.device)
        adapter = build_version(self.model, self._probe_ids, version, self.step, self.device)
        if out_dir is not None:
            adapter = store_adapter(adapter, Path(out_dir), self.config.keep_last)
        self.version = adapter.version
        self.last_publish_s = time.perf_counter() - started
        return adapter

    def train_and_publish(
        self, groups: Sequence[SampleGroup], out_dir: str | Path | None = None, min_version: int = 0
    ) -> tuple[UpdateMetrics, AdapterVersion | None]:
        """``train_step`` then, if the weights changed, ``publish``; metrics carry publish_s."""
        metrics = self.train_step(groups)
        if not metrics.stepped:
            return metrics, None
        adapter = self.publish(out_dir, min_version)
        return replace(metrics, publish_s=self.last_publish_s), adapter

    # ------------------------------------------------------------------ checkpoints

    def _training_state(self) -> TrainingState:
        return TrainingState(
            self.model, self.optimizer, self.scheduler, self.config, self.device,
            self.step, self.version, self.data_cursor, self.record,
        )  # fmt: skip

    def save_checkpoint(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Atomically write adapter, optimizer, scheduler, RNG, step and cursors to ``path``."""
        return save_checkpoint(self._training_state(), Path(path), extra or {})

    def load_checkpoint(self, path: str | Path) -> dict[str, Any]:
        """Restore everything ``save_checkpoint`` wrote; returns the caller's ``extra`` dict."""
        return self._restore(lambda state: load_checkpoint(state, Path(path)))

    def export_state(self, extra: dict[str, Any] | None = None) -> LearnerState:
        """The full training state as named blobs (what a checkpoint directory holds)."""
        return LearnerState(export_state(self._training_state(), extra or {}))

    def import_state(self, saved: LearnerState) -> dict[str, Any]:
        """Restore a state from ``export_state``; returns its ``extra`` dict."""
        return self._restore(lambda state: import_state(state, saved.blobs))

    def _restore(self, load) -> dict[str, Any]:
        state = self._training_state()
        extra = load(state)
        self.step, self.version, self.data_cursor = state.step, state.version, state.data_cursor
        self.record = state.record
        return extra

    # ------------------------------------------------------------------ helpers

    @torch.no_grad()
    def sample_logprobs(self, token_ids: list[int]) -> list[float]:
        """Learner logprobs of one token stream (eval mode), aligned like behaviour logprobs."""
        self.model.eval()
        try:
            ids = torch.tensor([token_ids], device=self.device)
            return self._logprobs(ids, torch.ones_like(ids))[0].tolist()
        finally:
            self.model.train()


class _Stats:
    """Token-weighted sums of the per-token loss pieces, for the metrics of one update."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.tokens = 0
        self.max_weight = 0.0
        self.grad_norms: list[float] = []

    def add(self, parts: dict[str, torch.Tensor], mask: torch.Tensor, is_cap: float) -> None:
        with torch.no_grad():
            selected = mask.bool()
            n = int(selected.sum())
            self.tokens += n
            values = dict(parts)
            values["truncated"] = parts["raw_weight"] > is_cap
            for name in ("loss", "policy_loss", "kl", "raw_weight", "truncated"):
                self._add(name, values[name], selected)
            for name in ("clipped_low", "clipped_high"):
                self._add(name, values[name], selected)
            if n:
                self.max_weight = max(self.max_weight, float(parts["raw_weight"][selected].max()))

    def _add(self, name: str, values: torch.Tensor, selected: torch.Tensor) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + float(values.float()[selected].sum())

    def mean(self, name: str) -> float:
        return self.sums.get(name, 0.0) / self.tokens if self.tokens else 0.0


def _split(groups: list[list[_Row]], parts: int) -> list[list[_Row]]:
    """Split trained groups into at most ``parts`` mini-batches; a group is never divided."""
    n = min(parts, len(groups))
    bounds = [round(i * len(groups) / n) for i in range(n + 1)]
    return [[row for group in groups[a:b] for row in group] for a, b in itertools.pairwise(bounds)]


def adapt_for_training(base: torch.nn.Module, config: LearnerConfig) -> torch.nn.Module:
    """``base`` wrapped with the config's LoRA (peft), set up for training as the learner trains
    it (gradient checkpointing when asked); the memory probe builds its model through here too."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, lora)
    if config.gradient_checkpointing:
        # Recompute activations in backward; inputs must require grad for the frozen
        # embedding's output to carry gradient into the checkpointed blocks.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return model


def _check_memory(config: LearnerConfig, device: torch.device):
    """Estimate the learner's memory from the model's shape (no weights loaded), say it, and on
    a GPU refuse a config that cannot fit the memory it was given (``learner.memory``): its
    ``memory_fraction`` of the device's total, and no more than is free now."""
    import sys

    from transformers import AutoConfig, AutoModelForCausalLM

    from learner.memory import GIB, LearnerMemoryError, ModelShape, check_fits, estimate

    hf_config = AutoConfig.from_pretrained(config.model_path)
    with torch.device("meta"):
        params = sum(p.numel() for p in AutoModelForCausalLM.from_config(hf_config).parameters())
    shape = ModelShape.from_hf_config(hf_config, params)
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        need = check_fits(shape, config, int(total * config.memory_fraction))
        free = torch.cuda.mem_get_info(device)[0]
        if free < need.total:
            raise LearnerMemoryError(
                f"the learner needs about {need.describe()} of the "
                f"{total * config.memory_fraction / GIB:.1f} GiB it was given, but only "
                f"{free / GIB:.1f} GiB of {device} is free: another process holds the rest "
                "(a previous run's engine, or another job on this GPU)"
            )
    else:
        need = estimate(shape, config)
    print(f"learner memory estimate on {device}: {need.describe()}", file=sys.stderr)
    return need


def _has_module(model: torch.nn.Module, name: str) -> bool:
    return any(n == name or n.endswith(f".{name}") for n, _ in model.named_modules())


def _pad_id(tokenizer) -> int:
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    return 0
