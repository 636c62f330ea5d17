"""Session-wide fixtures shared by every package's tests: one local Ray runtime, one tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_path() -> Path:
    from cluster.models import build_default_model

    return build_default_model()


@pytest.fixture(scope="session")
def ray_runtime():
    import ray

    from cluster.control import NAMESPACE

    if not ray.is_initialized():
        # Logical CPUs: every test actor fits on a 2-core box (they share the real cores).
        ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False, namespace=NAMESPACE)
    yield ray
