"""Make the run's model ready: resolve it (a hub id or path as is; a ``builtin:`` model built or
converted once), then, if ``run.warm_start``, SFT-warm it on the env's exported demonstrations.

The warm start exports SFT rows (``env.sft_export``) for the *training* tasks only — the tasks the
farm holds out for its before/after evaluation are never shown to the model — plus renamed variants
of them (``env.task_variants``: same logic, fresh resource names, so names are read from the task
rather than memorised), and fine-tunes with ``learner.sft``: the whole model when it is small (the
tiny model's weights start random), a LoRA adapter merged into the base when it is large (a real
pretrained model keeps its pretraining; GRPO's own LoRA then trains on the merged model). The result
is cached under ``$RLFARM_HOME/models/`` keyed by the base model and the recipe, written atomically.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

from cluster.config import FarmConfig
from cluster.progress import PhaseProgress

# Bump when the export or SFT changes in a way the recipe's fields do not show, so cached warm
# models are rebuilt.
WARM_START_RECIPE = 3


def prepare_model(config: FarmConfig, log=print) -> str:
    from cluster.model_registry import resolve_model

    base = resolve_model(config.model)
    if not config.run.warm_start:
        return base
    if not config.env.is_aws:
        # The warm start's demonstrations are the AWS env's solutions; another env starts cold.
        log(f"warm start: skipped (it teaches the AWS env; env.backend is {config.env.backend!r})")
        return base
    return str(warm_start(base, config, log))


def _train_catalog(config: FarmConfig):
    from cluster.task_split import task_split
    from env.catalog import Catalog, load_catalog

    catalog = load_catalog()
    keep = {t.id for t in task_split(config, catalog.tasks).train}
    return Catalog([t for t in catalog.tasks if t.id in keep])


def warm_recipe(base: str | Path, config: FarmConfig):
    """(recipe, cache directory, training catalog) of ``config``'s warm start of ``base`` (a local
    model directory or a hub id)."""
    from serving.tiny_model import rlfarm_home

    catalog = _train_catalog(config)
    name = Path(base).name if Path(base).is_dir() else str(base).replace("/", "--")
    recipe = {
        "base": name,
        "mode": config.run.warm_start_mode,
        "tasks": sorted(t.id for t in catalog.tasks),
        "steps": config.run.warm_start_steps,
        "kinds": sorted(config.run.warm_start_kinds),
        "variants": config.run.warm_start_variants,
        "lr": config.run.warm_start_lr,
        "batch_size": config.run.warm_start_batch_size,
        "seed": config.run.seed,
        "recipe": WARM_START_RECIPE,
    }
    key = hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:12]
    return recipe, rlfarm_home() / "models" / f"{name}-sft-{key}", catalog


def warm_start(base: str | Path, config: FarmConfig, log=print) -> Path:
    """The SFT-warmed copy of ``base`` (built on first use, then cached)."""
    from env.sft_export import export_sft, export_workers
    from learner.sft import SftOptions, run_sft

    recipe, target, catalog = warm_recipe(base, config)
    if (target / "config.json").exists():
        log(f"warm model: {target} (cached)")
        return target
    log(f"warm start: exporting demonstrations for {len(catalog.tasks)} training tasks")
    with tempfile.TemporaryDirectory(prefix="rlfarm-warm-") as tmp:
        data = Path(tmp) / "sft.jsonl"
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
        staging = Path(tmp) / "model"
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
        (staging / "rlfarm_warm_start.json").write_text(
            json.dumps({"recipe": recipe, "exports": counts, "sft": _plain(result)}, indent=1)
        )
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(staging, partial)
        partial.rename(target)
    return target


def _keep_kinds(path: Path, kinds: set[str]) -> int:
    rows = [line for line in path.read_text().splitlines() if json.loads(line)["kind"] in kinds]
    path.write_text("".join(line + "\n" for line in rows))
    return len(rows)


def _plain(result) -> dict:
    from dataclasses import asdict

    return json.loads(json.dumps(asdict(result), default=str))
