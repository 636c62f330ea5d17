"""Every file in configs/ parses; bad configs fail early and name the field and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.base.config import ConfigError, load_config

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


def test_there_are_configs_for_cpu_one_gpu_and_eight_gpus():
    names = {p.name for p in CONFIGS}
    assert {"local.yaml", "gpu-1x.yaml", "h100-8x.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_file_parses(path):
    config = load_config(path)
    # Shared settings were propagated, not left to disagree.
    assert config.engine.model == config.learner.model_path == config.model
    assert config.learner.lora_r <= config.engine.max_lora_rank


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        (["train.mdoe=sync"], ["train.mdoe", "unknown field"]),
        (["train.mode=fast"], ["train.mode", "'async' or 'sync'"]),
        (["learner.lora_r=32"], ["learner.lora_r=32", "engine.max_lora_rank"]),
        (["engine.model=other"], ["engine.model", "top level"]),
        (["env.backend=http"], ["env.url"]),
        (["curriculum.start_tier=expert", "curriculum.tiers=[warmup]"], ["start_tier"]),
        (["rollout.group_size=1"], ["rollout.group_size"]),
    ],
)
def test_bad_values_name_the_field(overrides, names):
    with pytest.raises(ConfigError) as err:
        load_config(CONFIGS[0], overrides)
    for name in names:
        assert name in str(err.value)


def test_overrides_are_validated_and_applied():
    config = load_config(None, ["train.updates=3", "env.workers=4", "train.mode=sync"])
    assert (config.train.updates, config.env.workers, config.train.mode) == (3, 4, "sync")


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_engines_run_lora_only_where_the_learner_trains_it():
    config = load_config(
        Path("configs/local.yaml"), ["learner.target_modules=[q_proj,v_proj,gate_proj]"]
    )
    assert config.engine.lora_target_modules == ["q_proj", "v_proj", "gate_proj"]
    # vLLM fuses q/k/v and gate/up into one layer each.
    assert config.engine.vllm_lora_modules() == ["gate_up_proj", "qkv_proj"]
    with pytest.raises(ConfigError, match=r"engine\.lora_target_modules"):
        load_config(Path("configs/local.yaml"), ["engine.lora_target_modules=[o_proj]"])
