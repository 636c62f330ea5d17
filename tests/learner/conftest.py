"""Shared fixtures for the learner tests: the built-in tiny model, one thread for torch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from serving.tiny_model import ensure_tiny_model

# The development machine has 2 cores shared by several people; one is plenty for a 4M model.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    return ensure_tiny_model()
