"""Adapter versions on disk: ``<dir>/v000012/`` in peft's ``save_pretrained`` layout plus
``manifest.json``, written atomically, the newest ``keep_last`` kept.

The driver stores every version it receives in its run directory (what ``rlfarm eval`` and
``rlfarm serve`` read); each engine keeps its own node-local copy in a cache directory of its
own. Nothing here is shared between machines.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import replace
from pathlib import Path

from serving.types import MANIFEST_NAME, AdapterVersion, weights_digest, write_manifest

VERSION_DIR = re.compile(r"^v(\d{6,})$")
TEMP_PREFIX = ".publishing-"


def version_dir_name(version: int) -> str:
    return f"v{version:06d}"


def published_versions(out_dir: Path) -> list[int]:
    """Versions present in ``out_dir`` (complete ones only: temp dirs never match), ascending."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = (VERSION_DIR.match(p.name) for p in out_dir.iterdir() if p.is_dir())
    return sorted(int(m.group(1)) for m in found if m)


def store_adapter(adapter: AdapterVersion, out_dir: Path, keep_last: int = 0) -> AdapterVersion:
    """Write ``adapter``'s files and manifest as ``out_dir/vNNNNNN`` (atomically: written under a
    temporary name, then renamed); keep the newest ``keep_last`` (0: all). Returns the adapter
    with ``path`` set to its directory."""
    if not adapter.files:
        raise ValueError(f"adapter v{adapter.version} carries no files to store")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / version_dir_name(adapter.version)
    stored = replace(adapter, path=str(final))
    staging = out_dir / f"{TEMP_PREFIX}{final.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir()
        for name, data in adapter.files.items():
            (staging / name).write_bytes(data)
        write_manifest(stored, staging)
        shutil.rmtree(final, ignore_errors=True)  # an earlier copy of the same version
        os.rename(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if keep_last > 0:
        prune_versions(out_dir, keep_last)
    return stored


def read_adapter(directory: Path, version: int | None = None) -> AdapterVersion:
    """An adapter directory with its files: rlfarm's (with a manifest and probe), or a plain
    peft one (then ``version`` is required and there is no probe)."""
    directory = Path(directory)
    files = {p.name: p.read_bytes() for p in directory.iterdir()
             if p.is_file() and p.name != MANIFEST_NAME}  # fmt: skip
    manifest = directory / MANIFEST_NAME
    if manifest.exists():
        data = json.loads(manifest.read_text())
        data["path"] = str(directory)
        adapter = AdapterVersion.from_manifest(data, files)
        return adapter if version is None else replace(adapter, version=version)
    if version is None:
        raise FileNotFoundError(
            f"{directory} has no {MANIFEST_NAME}: it is not an adapter published by rlfarm "
            "(load a plain peft adapter with an explicit version instead)"
        )
    return AdapterVersion(version, str(directory), sha256=weights_digest(files), files=files)


def prune_versions(out_dir: Path, keep_last: int) -> list[int]:
    """Delete all but the newest ``keep_last`` versions; returns the deleted version numbers."""
    versions = published_versions(out_dir)
    doomed = versions[:-keep_last] if keep_last > 0 else versions
    for version in doomed:
        shutil.rmtree(Path(out_dir) / version_dir_name(version), ignore_errors=True)
    return doomed
