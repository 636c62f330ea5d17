"""Shared fixtures for the learner tests: the built-in tiny model, one thread for torch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# The development machine has 2 cores shared by several people; one is plenty for a 4M model.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model_path) -> Path:
    """The farm's default tiny model (tests/conftest.py), shared by every package's tests."""
    return tiny_model_path
