"""The warm start: full fine-tune for the tiny model, a LoRA merged into the base for pretrained
models (forced here on the tiny model, whose size alone would pick full)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from cluster.base.config import load_config
from cluster.models.warm_start import prepare_model, warm_recipe

CONFIG = Path(__file__).parents[2] / "configs" / "local.yaml"
NARROW = [
    "curriculum.tiers=[warmup]",
    "curriculum.start_tier=warmup",
    "curriculum.tasks=[s3-list-buckets,iam-list-users,sqs-list-queues,sns-list-topics]",
    "curriculum.holdout_fraction=0.0",
    "run.warm_start_kinds=[first_step]",
    "run.warm_start_variants=0",
    "run.warm_start_batch_size=4",
]


def test_recipe_names_hub_models_and_keys_on_the_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("RLFARM_HOME", str(tmp_path))
    config = load_config(CONFIG, NARROW)
    recipe, target, _ = warm_recipe("Qwen/Qwen2.5-Coder-3B-Instruct", config)
    assert recipe["base"] == "Qwen--Qwen2.5-Coder-3B-Instruct" and recipe["mode"] == "auto"
    assert target.parent == tmp_path / "models"
    assert target.name.startswith("Qwen--Qwen2.5-Coder-3B-Instruct-sft-")
    lora = load_config(CONFIG, [*NARROW, "run.warm_start_mode=lora"])
    assert warm_recipe("Qwen/Qwen2.5-Coder-3B-Instruct", lora)[1] != target


def test_lora_warm_start_merges_into_a_plain_model_that_differs_only_in_attention(
    tiny_model_path,
):
    config = load_config(
        CONFIG,
        [*NARROW, "run.warm_start_mode=lora", "run.warm_start_steps=3", "run.warm_start_lr=5e-3"],
    )
    warm = Path(prepare_model(config, log=lambda *_: None))
    assert (warm / "config.json").exists() and (warm / "tokenizer.json").exists()
    assert not (warm / "adapter_config.json").exists()  # merged, not an adapter dir
    base = load_file(tiny_model_path / "model.safetensors")
    tuned = load_file(warm / "model.safetensors")
    assert base.keys() == tuned.keys()
    changed = {k for k in base if not torch.equal(base[k], tuned[k])}
    # LoRA on q/k/v/o: exactly those projections moved, and every one of them did.
    attention = {k for k in base if any(f"self_attn.{p}_proj.weight" in k for p in "qkvo")}
    assert changed == attention
