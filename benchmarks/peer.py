"""``rlfarm bench peer``: TRL's GRPOTrainer and the rlfarm farm side by side, in one run.

The peer is what a user would run instead: TRL's ``GRPOTrainer`` (the installed version) with our
env as its ``environment_factory`` (``env.trl_adapter.AwsCliTool``), generating with its default
path (transformers ``generate``, no vLLM), LoRA of the config's rank on the config's modules,
float32 on CPU. The farm is the config's farm (vLLM engines, env workers, the GRPO+LoRA learner),
in sync and then async mode. Both get the same model file, the same training tasks, G, the same
groups per optimizer step (TRL: ``per_device_train_batch_size`` = G and
``gradient_accumulation_steps`` = groups per update, so one step trains on the same number of
groups as one farm update), the same per-turn token budget (TRL's ``generation_kwargs``
``max_new_tokens``) and turns per episode (``max_tool_calling_iterations`` = turns - 1: as many
replies as the farm's turns), the same temperature, learning rate and seed.

TRL's episode ceiling in tokens (``max_completion_length``, which counts the tool results it
inserts) is the farm's context, ``engine.max_model_len``: a ceiling of turns x per-turn tokens cut
TRL's episodes after about two turns of observations.

The format (``--trl-format``): ``farm`` (the default) gives TRL the farm's text format through
transformers' response and chat templates (``benchmarks.trl_farm_format``): a whole reply is one
call of the ``aws`` tool, a tool result is the next user turn, and TRL renders every conversation
token for token as the farm does, so both sides play the same episodes of the same model.
``tool-call`` leaves TRL in Qwen2.5's JSON tool-call format, which a model warm-started on the
farm's format rarely writes: TRL's episodes then end after one reply with no env step.

What still differs is in the result (``work``): the farm stops an episode at done, TRL plays on to
its turn budget (its calls after the end are counted); the farm trains on renamed variants of the
tasks, TRL plays them as named. So beside GRPO steps/hour and episodes/s the result normalises by
tokens: generated tokens/s (every token sampled from the policy) and trained tokens/s (tokens the
loss covers), and gives env steps and tokens per episode on each side. Each side's first
step/update is not timed (start-up, first use of kernels), as in ``rlfarm bench rollout``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import sys
import time
from pathlib import Path

from cluster.base.config import ConfigError, FarmConfig, load_config

DEFAULT_CONFIG = Path(__file__).parents[1] / "configs" / "local.yaml"
TARGET_STEPS_RATIO = 10.0  # rlfarm's GRPO steps/hour over TRL's, at equal groups per step
RATIO_KEYS = (
    "grpo_steps_per_hour", "episodes_per_s", "generated_tokens_per_s", "trained_tokens_per_s",
)  # fmt: skip


def bench_config(args: argparse.Namespace) -> FarmConfig:
    from benchmarks.rollout import NARROW_TASKS, QUICK

    overrides = [
        *NARROW_TASKS, *(QUICK if args.quick else []), f"run.out_dir={args.out}",
        f"run.name=peer-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}", *args.overrides,
    ]  # fmt: skip
    return load_config(args.config or DEFAULT_CONFIG, overrides)


def _log(message: str) -> None:
    print(f"[bench peer {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---- TRL ----------------------------------------------------------------------------------------


def trl_args(config: FarmConfig, steps: int, out: Path) -> dict:
    """GRPOConfig arguments doing the farm's work per optimizer step (see the module doc)."""
    rollout, learner = config.rollout, config.learner
    return {
        "output_dir": str(out),
        "max_steps": steps,
        "num_generations": rollout.group_size,
        "per_device_train_batch_size": rollout.group_size,
        "gradient_accumulation_steps": config.train.groups_per_update,
        "max_completion_length": config.engine.max_model_len,
        "generation_kwargs": {"max_new_tokens": rollout.max_new_tokens},
        "max_tool_calling_iterations": max(0, rollout.max_steps - 1),
        "temperature": rollout.temperature,
        "top_p": rollout.top_p,
        "learning_rate": learner.lr,
        "beta": learner.kl_coef,
        "seed": learner.seed,
        "use_cpu": True,
        "bf16": False,
        "gradient_checkpointing": False,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
    }


def trl_dataset(config: FarmConfig, rows: int, trl_format: str = "farm"):
    """The config's training tasks as TRL rows (task, seed), repeated to ``rows`` rows."""
    from benchmarks.trl_farm_format import farm_format_dataset
    from env.trl_adapter import task_dataset

    ids = [t.id for t in _train_tasks(config)]
    seeds = max(1, -(-rows // len(ids)))
    if trl_format == "farm":
        return farm_format_dataset(task_ids=ids, seeds=seeds)
    return task_dataset(task_ids=ids, seeds=seeds)


def run_trl(
    config: FarmConfig, model_path: str, steps: int, settle: int, out: Path,
    trl_format: str = "farm",
) -> dict:  # fmt: skip
    """TRL's GRPOTrainer for ``settle + steps`` optimizer steps; rates over the last ``steps``."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer
    from trl.chat_template_utils import qwen2_5_chat_template

    from benchmarks.trl_farm_format import FarmFormatTool, speak_farm_format
    from env.trl_adapter import AwsCliTool

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if trl_format == "farm":
        speak_farm_format(tokenizer)
        tool = FarmFormatTool
    else:
        # TRL parses tool calls only for chat templates it knows; both built-in models speak
        # ChatML with Qwen2.5's special tokens, so they get Qwen2.5's template (with tools).
        tokenizer.chat_template = qwen2_5_chat_template
        tool = AwsCliTool
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    learner = config.learner
    lora = LoraConfig(
        r=learner.lora_r, lora_alpha=learner.lora_alpha, lora_dropout=learner.lora_dropout,
        target_modules=list(learner.target_modules), task_type="CAUSAL_LM",
    )  # fmt: skip
    total = settle + steps
    groups = config.train.groups_per_update
    per_step = groups * config.rollout.group_size
    clock = StepClock()
    trainer = GRPOTrainer(
        model=model,
        processing_class=tokenizer,
        train_dataset=trl_dataset(config, total * groups, trl_format),
        environment_factory=tool,
        peft_config=lora,
        args=GRPOConfig(**trl_args(config, total, out)),
        callbacks=[clock],
    )
    _log(
        f"TRL GRPOTrainer ({trl_format} format): {total} steps of {groups} groups x "
        f"G={config.rollout.group_size}"
    )
    started = time.perf_counter()
    trainer.train()
    logs = [row for row in trainer.state.log_history if "completions/mean_length" in row]
    if len(clock.ends) != total or len(logs) != total:
        raise RuntimeError(f"TRL ran {len(clock.ends)} steps ({len(logs)} logged), not {total}")
    marks = [started, *clock.ends]
    wall = marks[-1] - marks[settle]
    timed = logs[settle:]
    # TRL's mean completion length counts the tokens the policy sampled (tool results, masked out
    # of its loss, are not counted), and its loss covers exactly those.
    generated = sum(row["completions/mean_length"] for row in timed) * per_step
    return {
        "framework": "trl",
        "trl_version": _version("trl"),
        "format": trl_format,
        "steps": steps,
        "settle_steps": settle,
        "wall_s": wall,
        "episodes": steps * per_step,
        "grpo_steps_per_hour": steps * 3600 / wall,
        "episodes_per_s": steps * per_step / wall,
        "generated_tokens_per_s": generated / wall,
        "trained_tokens_per_s": generated / wall,
        "completion_tokens_per_episode": generated / (steps * per_step),
        "tool_calls_per_episode": _mean(timed, "tools/call_frequency"),
        "tool_failures_per_call": _mean(timed, "tools/failure_frequency"),
        # Over every step, the untimed ones included (the tool counts in this process).
        "calls_after_episode_end_share": (
            FarmFormatTool.calls_after_end / FarmFormatTool.calls
            if trl_format == "farm" and FarmFormatTool.calls
            else None
        ),
        "reward_mean": _mean(timed, "reward"),
        "step_s": [round(b - a, 2) for a, b in itertools.pairwise(marks)],
    }


def run_trl_apart(
    config: FarmConfig, model_path: str, steps: int, settle: int, out: Path,
    trl_format: str = "farm",
) -> dict:  # fmt: skip
    """``run_trl`` in a process of its own, gone before the farm starts. In the bench's process
    TRL's model, trainer and allocator caches stayed resident (9.5 GiB on SmolLM2-135M): the farm
    then ran on 14 GiB of a 24 GiB box and Ray's memory monitor killed its learner mid-update."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    spawn = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        return pool.submit(run_trl, config, model_path, steps, settle, out, trl_format).result()


def _mean(rows: list[dict], key: str) -> float | None:
    values = [row[key] for row in rows if key in row]
    return sum(values) / len(values) if values else None


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


# ---- the farm -----------------------------------------------------------------------------------


async def _farm_modes(farm, updates: int, settle: int) -> dict:
    from benchmarks.rollout import _farm_stage

    config, stages = farm.config, {}
    for mode in ("sync", "async"):
        _log(f"farm {mode}: {settle} + {updates} updates")
        before = len(farm.metrics.history)
        stage = await _farm_stage(
            farm, updates, mode, config.env.workers, config.rollout.group_size, settle
        )
        rows = farm.metrics.history[before + settle :]
        trained = sum((row.learner or {}).get("trained_tokens", 0) for row in rows)
        episodes = stage["episodes"]
        stages[mode] = {
            "framework": "rlfarm",
            **stage,
            "trained_tokens_per_s": trained / stage["wall_s"],
            # Rates x wall give back integer counts up to float error (3.0000000000000004 steps).
            "completion_tokens_per_episode": round(
                stage["generated_tokens_per_s"] * stage["wall_s"] / max(1, episodes), 6
            ),
            "env_steps_per_episode": round(
                stage["env_steps_per_s"] * stage["wall_s"] / max(1, episodes), 6
            ),
        }
    return stages


def run_farm(config: FarmConfig, model_path: str, updates: int, settle: int) -> dict:
    from cluster.base.ray_runtime import farm_cpus, init_ray
    from cluster.farm.driver import Farm

    init_ray(min_cpus=farm_cpus(config.run.engines, config.most_env_workers))
    farm = Farm.start(config, model_path)
    try:
        return asyncio.run(_farm_modes(farm, updates, settle))
    finally:
        farm.shutdown()


# ---- the whole bench ----------------------------------------------------------------------------


def ratios(farm: dict[str, dict], trl: dict) -> dict[str, dict[str, float | None]]:
    """Each farm mode over TRL, per rate."""
    return {
        mode: {k: (stage[k] / trl[k] if trl[k] else None) for k in RATIO_KEYS}
        for mode, stage in farm.items()
    }


def run_peer_bench(config: FarmConfig, args: argparse.Namespace) -> dict:
    from cluster.models.warm_start import prepare_model

    out = Path(args.out)
    model_path = prepare_model(config, log=_log)
    started = time.perf_counter()
    # TRL first, before Ray and the engines exist: neither side runs beside the other's processes.
    trl = run_trl_apart(
        config, model_path, args.trl_steps, args.settle, out / "trl", args.trl_format
    )
    farm = run_farm(config, model_path, args.updates, args.settle)
    rates = ratios(farm, trl)
    best = max(r["grpo_steps_per_hour"] or 0.0 for r in rates.values())
    return {
        "model": config.model,
        "model_path": model_path,
        "tasks": [t.id for t in _train_tasks(config)],
        "group_size": config.rollout.group_size,
        "groups_per_step": config.train.groups_per_update,
        "turn_tokens": config.rollout.max_new_tokens,
        "episode_turns": config.rollout.max_steps,
        "lora": {"r": config.learner.lora_r, "modules": list(config.learner.target_modules)},
        "farm_minibatches": config.learner.minibatches,
        "trl": trl,
        "farm": farm,
        "ratios": rates,
        "work": {
            "completion_tokens_per_episode": {
                "trl": trl["completion_tokens_per_episode"],
                **{m: s["completion_tokens_per_episode"] for m, s in farm.items()},
            },
            "env_steps_per_episode": {
                "trl": trl["tool_calls_per_episode"],
                **{m: s["env_steps_per_episode"] for m, s in farm.items()},
            },
        },
        "target": {
            "grpo_steps_ratio": TARGET_STEPS_RATIO,
            "best": best,
            "met": best >= TARGET_STEPS_RATIO,
        },
        "wall_s": round(time.perf_counter() - started, 1),
    }


def _train_tasks(config: FarmConfig) -> list:
    from cluster.base.task_split import task_split

    return task_split(config).train


def main(args: argparse.Namespace) -> int:
    from benchmarks.rollout import _stdout_reserved_for_json

    try:
        config = bench_config(args)
    except ConfigError as exc:
        print(f"rlfarm bench peer: {exc}", file=sys.stderr)
        return 2
    with _stdout_reserved_for_json() if args.json else contextlib.nullcontext(sys.stdout) as real:
        result = run_peer_bench(config, args)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "peer.json").write_text(json.dumps(result, indent=1))
        from benchmarks.records import record

        record(f"peer-{Path(args.config or DEFAULT_CONFIG).stem}", result)
        real.write((json.dumps(result) if args.json else json.dumps(result, indent=1)) + "\n")
        real.flush()
    return 0
