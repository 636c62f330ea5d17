"""Carriers shared by the learner (which writes adapters) and the engines (which load them).

An adapter version lives in one directory in peft's ``save_pretrained`` layout plus a
``manifest.json`` written by the learner. The manifest carries a *probe*: a fixed prompt, the
greedy continuation the learner's model produced from it, and the learner's teacher-forced
logprobs of that continuation with the adapter enabled and disabled. An engine that has loaded the
adapter recomputes the same logprobs; if they disagree the swap did not land (or landed the wrong
weights) and the run must stop. This module imports neither torch nor vLLM.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

MANIFEST_NAME = "manifest.json"
WEIGHTS_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"


@dataclass(frozen=True)
class AdapterProbe:
    """Expected behaviour of one adapter on a fixed token sequence.

    ``logprobs[i]`` is log p(completion_token_ids[i] | prompt + completion[:i]) under the adapter;
    ``reference_logprobs`` is the same under the base model (adapter disabled), which tells the
    verifier whether the probe can tell this adapter apart from the base at all.
    """

    prompt_token_ids: list[int]
    completion_token_ids: list[int]
    logprobs: list[float]
    reference_logprobs: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class AdapterVersion:
    """One published LoRA adapter: its integer version, its files, and where it came from.

    ``files`` maps file names (``adapter_config.json``, ``adapter_model.safetensors``) to their
    bytes: an adapter travels to engines through Ray with its files, so no engine ever opens a
    path another node wrote. ``sha256`` is the digest of the weights file, which an engine checks
    after writing its own copy. ``path`` is where a copy is stored on this machine, if anywhere.
    """

    version: int
    path: str | None = None
    learner_step: int = 0
    created_at: float = 0.0
    probe: AdapterProbe | None = None
    sha256: str = ""
    files: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)

    def to_manifest(self) -> dict:
        data = asdict(self)
        data.pop("files")
        return data

    @classmethod
    def from_manifest(cls, data: dict, files: dict[str, bytes] | None = None) -> AdapterVersion:
        probe = data.get("probe")
        return cls(
            version=int(data["version"]),
            path=data.get("path"),
            learner_step=int(data.get("learner_step", 0)),
            created_at=float(data.get("created_at", 0.0)),
            probe=AdapterProbe(**probe) if probe else None,
            sha256=str(data.get("sha256", "")),
            files=files or {},
        )


def weights_digest(files: dict[str, bytes]) -> str:
    """sha256 of an adapter's weights file (what engines check they loaded)."""
    return hashlib.sha256(files.get(WEIGHTS_FILE, b"")).hexdigest()


def write_manifest(adapter: AdapterVersion, directory: str | Path | None = None) -> Path:
    """Write ``manifest.json`` into ``directory`` (default: the adapter's own path)."""
    target = Path(directory or adapter.path) / MANIFEST_NAME
    target.write_text(json.dumps(adapter.to_manifest(), indent=1))
    return target


def read_manifest(directory: str | Path) -> AdapterVersion:
    """Read an adapter directory's manifest; the recorded path is replaced by the real one."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not path.exists():
        raise FileNotFoundError(
            f"{directory} has no {MANIFEST_NAME}: it is not an adapter published by rlfarm "
            "(load a plain peft adapter with an explicit version instead)"
        )
    data = json.loads(path.read_text())
    data["path"] = str(directory)
    return AdapterVersion.from_manifest(data)


def now() -> float:
    return time.time()


@dataclass(frozen=True)
class SamplingSpec:
    """Sampling settings of one generate call (a small, picklable subset of vLLM's)."""

    max_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None
    # Generate exactly max_tokens (the engine-peak benchmark: a fixed batch for its whole run).
    ignore_eos: bool = False


@dataclass(frozen=True)
class Completion:
    """What the engine sampled for one prompt.

    ``logprobs[i]`` is the engine's logprob of ``token_ids[i]`` (the sampled token) under the
    adapter ``adapter_version`` that the request ran with from start to finish (0 = base model).
    """

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str
    adapter_version: int
    prompt_tokens: int
    engine_id: str = ""
    queue_s: float = 0.0
    total_s: float = 0.0


@dataclass(frozen=True)
class ProbeResult:
    """An engine's answer to an adapter probe, judged against the learner's numbers
    (``serving.probes.judge_probe`` says how).

    ``max_abs_diff``/``mean_abs_diff``: |engine - learner| over the probe tokens, against
    ``atol`` (the mean) and ``max_atol``; ``reference_gap``: the largest |adapter - base| gap of
    the learner's own numbers. ``distinguishable``: the learner's numbers for this version and
    the previous one differ by more than the tolerance, so the probe can tell them apart;
    ``nearer_previous``: the engine's answer is closer to the previous version's numbers than
    to this one's (a swap that did not land). ``weights_ok``: the bytes the engine loaded have
    the digest the learner published. ``weights_read``: the engine read back the LoRA weights
    its kernels use (``serving.lora_readback``); ``weights_gap``: their largest relative gap to
    the published files' weights, against ``weights_rtol``.
    """

    version: int
    engine_id: str
    max_abs_diff: float
    mean_abs_diff: float
    reference_gap: float
    atol: float
    max_atol: float
    distinguishable: bool = False
    nearer_previous: bool = False
    weights_ok: bool = True
    weights_read: bool = False
    weights_gap: float = 0.0
    weights_rtol: float = 0.0

    @property
    def matches(self) -> bool:
        return (
            self.weights_ok
            and (not self.weights_read or self.weights_gap <= self.weights_rtol)
            and not self.nearer_previous
            and self.mean_abs_diff <= self.atol
            and self.max_abs_diff <= self.max_atol
        )

    @property
    def discriminative(self) -> bool:
        return self.reference_gap > 2 * self.atol


@dataclass(frozen=True)
class EngineHealth:
    """One engine's liveness and load report (``Engine.health``; ``EnginePool.health`` stands in
    a ``down`` report for an engine Ray is restarting, which has no process to name)."""

    engine_id: str
    alive: bool = True
    pid: int | None = None
    started_at: float | None = None  # wall-clock start of this incarnation
    in_flight: int = 0
    served: int = 0
    failed: int = 0
    latest_version: int = 0
    resident_versions: tuple[int, ...] = ()
    busy_s: float = 0.0  # seconds with at least one request running, since start
    uptime_s: float = 0.0
    node_id: str | None = None
    adapters_loaded: int = 0  # adapters loaded and verified since start
    prefix_cache_queries: int = 0  # prompt tokens looked up in the prefix cache
    prefix_cache_hits: int = 0
    # vLLM's scheduler after each engine step, summed since start (utilisation over a window is a
    # difference of two reports): steps, running sequences, KV-cache use (0-1); and now, waiting.
    engine_steps: int = 0
    running_sum: int = 0
    waiting: int = 0
    kv_cache_usage_sum: float = 0.0
    generated_tokens: int = 0
    prompt_tokens: int = 0  # prompt tokens scheduled (prefix-cache hits included)
    prefilled_tokens: int = 0  # of those, computed (not served by the prefix cache)
    max_num_seqs: int = 0
    error: str = ""

    @classmethod
    def down(cls, engine_id: str, error: str) -> EngineHealth:
        return cls(engine_id=engine_id, alive=False, error=error)

    @property
    def incarnation(self) -> tuple[int, float] | None:
        """Which process this is (a restart changes it); None while the engine is down."""
        if not self.alive or self.pid is None or self.started_at is None:
            return None
        return self.pid, self.started_at
