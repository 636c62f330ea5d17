"""Package boundaries: the learner never pulls in vLLM, env, rollout or Ray (outside its actor)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def imported_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    return {name.split(".")[0] for name in out.stdout.split()}


def test_learner_modules_import_no_vllm_env_rollout_or_ray():
    modules = "learner.trainer, learner.sft, learner.publish, learner.checkpoint, learner.grpo"
    loaded = imported_after(f"import {modules}")
    assert not loaded & {"vllm", "env", "rollout", "ray", "cluster"}
