"""Make the run's model ready: resolve it (a hub id or path as is; a ``builtin:`` model built or
converted once), then, if ``run.warm_start``, SFT-warm it on demonstrations of the training tasks.

The AWS env's demonstrations are exported by playing each training task's canonical solution
(``env.sft_export``) — the tasks the farm holds out for its evaluation are never shown to the model
— plus renamed variants of them (``env.task_variants``: same logic, fresh resource names, none of
the evaluation's, so names are read from the task rather than memorised). A Python env that can
``demonstration(task_id, seed) -> reply`` gets the same warm start from its own answers
(``rollout.python_backend.demonstration_rows``); other envs start cold. The fine-tune is
``learner.sft``: the whole model when it is small (the tiny model's weights start random), a LoRA
adapter merged into the base when it is large (a real pretrained model keeps its pretraining;
GRPO's own LoRA then trains on the merged model). The result is cached under
``$RLFARM_HOME/models/`` keyed by the base model and the recipe, written atomically.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from cluster.base.config import FarmConfig
from cluster.base.progress import PhaseProgress

# Bump when the export or SFT changes in a way the recipe's fields do not show, so cached warm
# models are rebuilt. 4: SFT variants avoid the evaluation's names.
WARM_START_RECIPE = 4
# Demonstrations per training task of a Python env (each with its own seed).
DEMO_SEEDS = 4
# What built a warm model (recipe, exports, the SFT's result), written beside its weights.
WARM_START_RECORD = "rlfarm_warm_start.json"
# The narrow warm start of the farm's tests and quick benches: the tiny model learns these four
# one-command tasks in about a minute (cached after), and its sampled replies then solve them
# sometimes but not always, so groups carry a learning signal and an async learner is not
# starved of trainable groups.
NARROW_WARM_START = (
    "run.warm_start_steps=40",
    "run.warm_start_kinds=[first_step]",
    "run.warm_start_batch_size=16",
    "run.warm_start_lr=1e-3",
    "run.warm_start_variants=0",
    "curriculum.tiers=[warmup]",
    "curriculum.start_tier=warmup",
    "curriculum.tasks=[s3-list-buckets,iam-list-users,sqs-list-queues,sns-list-topics]",
)


def prepare_model(config: FarmConfig, log=print) -> str:
    """The model path every part of the run opens. On a cluster with GPUs or several nodes, a
    model made here is shipped to every node that lacks it and the warm start runs as a Ray
    task, on a GPU when there are any (``cluster.models.shipping``); on one CPU node (a laptop,
    this box) it runs here, with its progress on the terminal."""
    import ray

    from cluster.models.registry import resolve_model
    from cluster.models.shipping import live_nodes, run_warm_start, ship_model
    from serving.devices import cluster_gpus

    base = resolve_model(config.model)
    several = ray.is_initialized() and len(live_nodes()) > 1
    clustered = several or cluster_gpus() > 0
    if several and Path(base).is_dir():
        ship_model(base)  # a builtin model built on this node: the others need it too
    if not config.run.warm_start:
        return base
    if not config.env.is_aws and not _demonstrates(config):
        # Nothing to learn from: the env cannot show a right answer.
        log(f"warm start: skipped (env.backend {config.env.backend!r} gives no demonstrations)")
        return base
    if not clustered:
        return str(warm_start(base, config, log))
    report = run_warm_start(base, config)
    where = f"GPU {','.join(report['gpus'])}" if report["gpus"] else "CPU"
    log(f"warm start: ran as a Ray task on node {report['node'][:8]} ({where}); "
        f"on {len(report['shipped']) or 1} node(s)")  # fmt: skip
    return report["path"]


def _demonstrates(config: FarmConfig) -> bool:
    from rollout.python_backend import can_demonstrate

    return config.env.backend == "python" and can_demonstrate(config.env)


def _train_catalog(config: FarmConfig):
    from cluster.base.task_split import task_split
    from env.catalog import Catalog, load_catalog

    catalog = load_catalog()
    keep = {t.id for t in task_split(config, catalog.tasks).train}
    return Catalog([t for t in catalog.tasks if t.id in keep])


def warm_recipe(base: str | Path, config: FarmConfig) -> tuple[dict, Path, list[str]]:
    """(recipe, cache directory, training task ids) of ``config``'s warm start of ``base`` (a
    local model directory or a hub id)."""
    from cluster.base.task_split import task_split
    from cluster.models.tiny import rlfarm_home

    train = sorted(t.id for t in task_split(config).train)
    name = Path(base).name if Path(base).is_dir() else str(base).replace("/", "--")
    recipe = {
        "base": name,
        "mode": config.run.warm_start_mode,
        "tasks": train,
        "steps": config.run.warm_start_steps,
        "kinds": sorted(config.run.warm_start_kinds),
        "variants": config.run.warm_start_variants,
        "lr": config.run.warm_start_lr,
        "batch_size": config.run.warm_start_batch_size,
        "seed": config.run.seed,
        "recipe": WARM_START_RECIPE,
    }
    if not config.env.is_aws:  # a demonstrating env: its answers, not the AWS export
        recipe |= {"env": config.env.factory, "kinds": ["demonstration"], "variants": DEMO_SEEDS}
    key = hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:12]
    return recipe, rlfarm_home() / "models" / f"{name}-sft-{key}", train


def warm_start(base: str | Path, config: FarmConfig, log=print) -> Path:
    """The SFT-warmed copy of ``base`` (built on first use, then cached)."""
    recipe, target, train = warm_recipe(base, config)
    if (target / "config.json").exists():
        log(f"warm model: {target} (cached)")
        return target
    with tempfile.TemporaryDirectory(prefix="rlfarm-warm-") as tmp:
        data = Path(tmp) / "sft.jsonl"
        if config.env.is_aws:
            counts = _export_aws(data, config, log)
        else:
            counts = _export_demonstrations(data, config, train, log)
        result = _fine_tune(base, data, Path(tmp) / "model", config, log)
        staging = Path(tmp) / "model"
        (staging / WARM_START_RECORD).write_text(
            json.dumps({"recipe": recipe, "exports": counts, "sft": _plain(result)}, indent=1)
        )
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(staging, partial)
        partial.rename(target)
    return target


def warm_start_record(model: Path) -> dict | None:
    """What built the warm model at ``model`` (None for a model the warm start did not build)."""
    record = Path(model) / WARM_START_RECORD
    return json.loads(record.read_text()) if record.exists() else None


def _export_aws(data: Path, config: FarmConfig, log: Callable) -> dict:
    from env.sft_export import export_sft, export_workers

    catalog = _train_catalog(config)
    log(f"warm start: exporting demonstrations for {len(catalog.tasks)} training tasks")
    with PhaseProgress("warm start: export", "tasks") as export_progress:
        counts = export_sft(
            data,
            val_fraction=0.1,
            seed=config.run.seed,
            catalog=catalog,
            variants=config.run.warm_start_variants,
            on_task=export_progress.update,
            workers=export_workers(),
        )
    kept = _keep_kinds(data, set(config.run.warm_start_kinds))
    log(f"warm start: {kept} rows; SFT for {config.run.warm_start_steps} steps")
    return counts


def _export_demonstrations(data: Path, config: FarmConfig, train: list[str], log) -> dict:
    """The env's own answers to every training task (``DEMO_SEEDS`` seeds each), split by task
    into train and validation rows as the AWS export is."""
    import random

    from rollout.python_backend import demonstration_rows

    rows = demonstration_rows(config.env, train, range(DEMO_SEEDS))
    val_tasks = set(random.Random(config.run.seed).sample(train, max(1, len(train) // 10)))
    val = [r for r in rows if r["task_id"] in val_tasks]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows if r["task_id"] not in val_tasks))
    data.with_name(f"{data.stem}.val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in val))
    log(f"warm start: {len(rows) - len(val)} demonstrations; SFT for "
        f"{config.run.warm_start_steps} steps")  # fmt: skip
    return {"train_rows": len(rows) - len(val), "val_rows": len(val), "train_tasks": len(train)}


def _fine_tune(base, data: Path, staging: Path, config: FarmConfig, log: Callable):
    from learner.sft import SftOptions, run_sft

    sft_progress = PhaseProgress("warm start: SFT", "steps")
    with sft_progress:
        result = run_sft(
            SftOptions(
                data=data,
                out=staging,
                model=str(base),
                mode=config.run.warm_start_mode,
                merge=True,  # the engines and GRPO's LoRA load it as a plain base model
                max_steps=config.run.warm_start_steps,
                lr=config.run.warm_start_lr,
                batch_size=config.run.warm_start_batch_size,
                max_length=config.engine.max_model_len,
                eval_data=data.with_name(f"{data.stem}.val.jsonl"),
                eval_before=False,  # `rlfarm eval` scores the base model when wanted
                seed=config.run.seed,
            ),
            on_step=sft_progress.update,
        )
    log(
        f"warm start: {result.mode} fine-tune, {result.seconds:.0f}s, exact match on the SFT "
        f"validation tasks {result.exact_match_after}"
    )
    return result


def _keep_kinds(path: Path, kinds: set[str]) -> int:
    rows = [line for line in path.read_text().splitlines() if json.loads(line)["kind"] in kinds]
    path.write_text("".join(line + "\n" for line in rows))
    return len(rows)


def _plain(result) -> dict:
    from dataclasses import asdict

    return json.loads(json.dumps(asdict(result), default=str))
