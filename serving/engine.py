"""One vLLM ``AsyncLLM`` inside one Ray actor: token-in/token-out generation with LoRA versions.

Role in the data flow: rollout workers send prompt token ids and get back the sampled token ids,
their logprobs, the finish reason and the adapter version the request ran with. The learner's
adapters arrive through ``load_adapter``; each new version serves new requests while requests in
flight finish on the version they started with. The engine is never restarted for a swap.

After every load the engine answers the adapter's probe (the learner's fixed prompt and greedy
continuation) with its own teacher-forced logprobs; the caller (``EnginePool``) compares them with
the learner's numbers, so an adapter that silently did not land stops the run.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from serving.adapters import (
    BASE_VERSION,
    AdapterError,
    AdapterRegistry,
    AdapterVerificationError,
    lora_name,
    validate_adapter_dir,
)
from serving.config import EngineConfig
from serving.devices import actor_device, expose_devices_for_workers, ray_actor_id
from serving.engine_processes import (
    alive,
    family,
    forget,
    reap_previous_incarnation,
    remember,
)
from serving.lora_readback import Fingerprint, expected_fingerprint, relative_gap
from serving.probes import Readback, judge_probe
from serving.types import (
    AdapterProbe,
    AdapterVersion,
    Completion,
    EngineHealth,
    ProbeResult,
    SamplingSpec,
    weights_digest,
)


def resolve_model_path(model: str) -> str:
    """The config's model string, checked to be something vLLM and transformers can load."""
    if model.startswith("builtin:"):
        raise ValueError(
            f"engine.model={model!r} must be resolved to a path before engines start "
            "(cluster.models.registry.resolve_model does it)"
        )
    return model


class Engine:
    """A vLLM AsyncLLM with versioned LoRA adapters. Wrapped by ``EngineActor`` for Ray."""

    def __init__(
        self, config: EngineConfig, engine_id: str = "engine-0", board: Any = None
    ) -> None:
        # ``auto`` is decided here, from what Ray gave this actor (serving.devices).
        self.config = config.on_device(actor_device(config.device, config.tensor_parallel_size))
        self.engine_id = engine_id
        # The pool's AdapterBoard (None for a standalone engine): a restarted engine takes its
        # current adapter, verified, before it serves anything.
        self._board = board
        self._caught_up = board is None
        self._catch_up_lock = asyncio.Lock()
        self._probe_results: dict[int, ProbeResult | None] = {}
        # Each resident version's weights as this engine should hold them (the readback's truth).
        self._fingerprints: dict[int, Fingerprint] = {}
        # This engine's own copies of the adapters it serves (node-local, removed on eviction).
        self._cache_dir = Path(tempfile.mkdtemp(prefix=f"rlfarm-adapters-{engine_id}-"))
        self.model_path = resolve_model_path(config.model)
        self.registry = AdapterRegistry(max_loras=config.max_loras)
        self._request_ids = itertools.count()
        self._started_at = time.time()
        self._busy_since: float | None = None
        self._busy_s = 0.0
        self._in_flight = 0
        self._served = 0
        self._failed = 0
        self._stats = new_engine_stats()  # vLLM's own scheduler and iteration counts, summed
        self._adapters_loaded = 0
        # A restarted actor first ends what its dead incarnation left running (its engine-core
        # process holds device memory vLLM's start-up check would count as taken).
        self._actor_key = ray_actor_id()
        reap_previous_incarnation(self._actor_key)
        self._llm = self._build()
        if self._actor_key is not None:
            remember(self._actor_key, family())
        self._hidden_size = self._read_hidden_size()

    def _build(self):
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        cfg = self.config
        kwargs: dict = dict(
            model=self.model_path,
            dtype=cfg.resolved_dtype(),
            max_model_len=cfg.max_model_len,
            enable_lora=True,
            max_loras=cfg.max_loras,
            max_cpu_loras=cfg.max_loras + 2,
            max_lora_rank=cfg.max_lora_rank,
            lora_target_modules=cfg.vllm_lora_modules(),
            enable_prefix_caching=cfg.enable_prefix_caching,
            block_size=cfg.block_size,
            max_num_seqs=cfg.max_num_seqs,
            seed=cfg.seed,
            tensor_parallel_size=cfg.tensor_parallel_size,
            # Sampled-token logprobs of the distribution actually sampled from (after
            # temperature): the learner's importance weights compare against exactly that.
            # Prompt logprobs (the swap probe) are the same in either mode.
            logprobs_mode="processed_logprobs",
            # Lets the engine read back the LoRA weights its kernels use (every swap verified).
            worker_extension_cls="serving.lora_readback.LoraReadback",
        )
        # A per-request seed kills vLLM's CPU engine core: when a seeded request's sampled token
        # is discarded (its prompt was only partly prefilled in that step), the model runner
        # rewinds the request's generator offset, which only CUDA generators have ("CPU
        # Generator does not use offset"). On CPU, requests are sampled unseeded instead.
        self._seeds_work = cfg.resolved_device() != "cpu"
        if cfg.max_num_batched_tokens is not None:
            kwargs["max_num_batched_tokens"] = cfg.max_num_batched_tokens
        if cfg.resolved_device() == "cpu":
            # vLLM's default multiprocess worker dies with SIGILL when started inside a Ray actor
            # on CPU; the uniprocess backend is what works there. vLLM's CPU platform turns
            # "uni" back into a separate worker process unless V1 multiprocessing is off, and
            # that pair of processes busy-waits on each other's shared-memory queue (up to 1 s
            # of spinning after every message): on a small CPU box a whole core goes to
            # spinning instead of the learner. Off, the worker runs inside the engine-core
            # process (AsyncLLM keeps its own engine-core process either way). GPUs keep vLLM's
            # normal executors.
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
            # Ray gives an actor OMP_NUM_THREADS = its CPUs (1); vLLM's engine-core process,
            # spawned from here, takes its torch threads from it.
            os.environ["OMP_NUM_THREADS"] = str(cfg.cpu_threads)
            if cfg.cpu_nice:  # before the engine-core process starts: it inherits it
                os.nice(cfg.cpu_nice)  # relative (raising niceness needs no privilege)
            kwargs["distributed_executor_backend"] = "uni"
            kwargs["kv_cache_memory_bytes"] = int(cfg.cpu_kv_cache_gib * 1024**3)
        else:
            kwargs["gpu_memory_utilization"] = cfg.gpu_memory_utilization
            if cfg.tensor_parallel_size > 1:
                # Inside a Ray actor, vLLM's own Ray executor starts the tensor-parallel workers
                # in the placement group the actor was scheduled in (cluster.base.placement).
                kwargs["distributed_executor_backend"] = "ray"
                expose_devices_for_workers()
        return AsyncLLM.from_engine_args(
            AsyncEngineArgs(**kwargs), stat_loggers=[engine_stats_logger(self._stats)]
        )

    def _read_hidden_size(self) -> int | None:
        try:
            return int(self._llm.model_config.hf_config.hidden_size)
        except AttributeError:
            return None

    # ---- generation -------------------------------------------------------------------------

    async def generate(
        self,
        prompt_token_ids: list[int],
        sampling: SamplingSpec,
        adapter_version: int | None = None,
    ) -> Completion:
        """Sample one completion; ``adapter_version=None`` means the newest loaded version."""
        await self._catch_up()
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        version = self.registry.acquire(adapter_version)
        params = SamplingParams(
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            stop_token_ids=list(sampling.stop_token_ids),
            seed=sampling.seed if self._seeds_work else None,
            ignore_eos=sampling.ignore_eos,
            logprobs=0,
            # Token in, token out: callers decode what they need. No per-step text and no
            # per-step cumulative copies of the output (one final output per request) spare
            # the engine's front end work on every generated token.
            detokenize=False,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        started = time.perf_counter()
        self._enter()
        try:
            final = None
            async for output in self._llm.generate(
                TokensPrompt(prompt_token_ids=list(prompt_token_ids)),
                params,
                request_id=self._next_request_id(),
                lora_request=self._lora_request(version),
            ):
                final = output
        except Exception:
            self._failed += 1
            raise
        finally:
            self._exit()
            self.registry.release(version)
            await self._evict_idle()
        choice = final.outputs[0]
        token_ids = list(choice.token_ids)
        logprobs = [step[tok].logprob for step, tok in zip(choice.logprobs, token_ids, strict=True)]
        self._served += 1
        return Completion(
            token_ids=token_ids,
            logprobs=logprobs,
            finish_reason=str(choice.finish_reason),
            adapter_version=version,
            prompt_tokens=len(prompt_token_ids),
            engine_id=self.engine_id,
            queue_s=_first_token_latency(final),
            total_s=time.perf_counter() - started,
        )

    def _next_request_id(self) -> str:
        return f"{self.engine_id}-{next(self._request_ids)}-{uuid.uuid4().hex[:6]}"

    def _lora_request(self, version: int):
        if version == BASE_VERSION:
            return None
        from vllm.lora.request import LoRARequest

        path = self.registry.resident[version].path
        return LoRARequest(lora_name(version), version, path)

    # Busy time is wall time with at least one request in flight; idle fraction = 1 - busy/uptime.
    def _enter(self) -> None:
        if self._in_flight == 0:
            self._busy_since = time.perf_counter()
        self._in_flight += 1

    def _exit(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0 and self._busy_since is not None:
            self._busy_s += time.perf_counter() - self._busy_since
            self._busy_since = None

    # ---- adapters ---------------------------------------------------------------------------

    async def load_adapter(self, adapter: AdapterVersion) -> ProbeResult | None:
        """Serve ``adapter`` to new requests; answer its probe if it has one.

        The adapter's files are written to this engine's own node-local cache and their digest
        checked before vLLM reads them: no engine opens a path another machine wrote. Loading a
        version that is already resident answers with its first probe result (a restarted
        engine may have taken it from the board before the pool's broadcast came).
        """
        await self._catch_up()
        return await self._load(adapter)

    async def _catch_up(self) -> None:
        if self._caught_up:
            return
        async with self._catch_up_lock:
            if self._caught_up:
                return
            current = await self._board.current.remote()
            if current is not None:
                result = await self._load(current)
                if result is not None and not result.matches:
                    raise AdapterVerificationError(
                        f"{self.engine_id} restarted and could not verify the current adapter "
                        f"v{current.version} (probe differs by {result.mean_abs_diff:.3g})"
                    )
            self._caught_up = True

    async def _load(self, adapter: AdapterVersion) -> ProbeResult | None:
        from vllm.lora.request import LoRARequest

        version = adapter.version
        if version in self.registry.resident:
            return self._probe_results.get(version)
        path, weights_ok = self._cache(adapter)
        validate_adapter_dir(
            path, self.config.max_lora_rank, self._hidden_size, self.config.lora_target_modules
        )
        try:
            added = await self._llm.add_lora(LoRARequest(lora_name(version), version, str(path)))
        except Exception as exc:
            raise AdapterError(f"vLLM rejected adapter v{version}: {exc}") from exc
        if not added:
            raise AdapterError(f"vLLM refused to add adapter v{version}")
        previous = self.registry.resident.get(self.registry.latest)
        previous_latest = self.registry.latest
        self.registry.register(version, str(path), adapter.probe)
        result = None
        if adapter.probe is not None:
            try:
                served = await self.probe_logprobs(version, adapter.probe)
                readback = await self._read_back(adapter, previous_latest)
            except Exception:
                await self._rollback(version, previous_latest)
                raise
            result = judge_probe(
                version, self.engine_id, adapter.probe, served,
                previous.probe if previous is not None else None,
                self.config.resolved_dtype(), self.config.probe_atol, weights_ok, readback,
            )  # fmt: skip
            if not result.matches:
                await self._rollback(version, previous_latest)
        self._probe_results[version] = result
        self._adapters_loaded += result is None or result.matches
        await self._evict_idle()
        return result

    async def _read_back(self, adapter: AdapterVersion, previous: int) -> Readback | None:
        """Compare the LoRA slot vLLM serves ``adapter`` from with the published files' weights
        (None where the slot is sharded by tensor parallelism: the digest and the logprob probe
        then carry the verdict)."""
        replies = await self._llm.collective_rpc("rlfarm_lora_fingerprint", args=(adapter.version,))
        reply = replies[0]
        if reply["tp"] > 1:
            return None
        if reply["modules"] is None:
            raise AdapterError(f"vLLM holds no weights for adapter v{adapter.version} it loaded")
        expected = expected_fingerprint(adapter.files, self.config.resolved_dtype())
        self._fingerprints[adapter.version] = expected
        before = self._fingerprints.get(previous)
        step = relative_gap(expected, before) if before is not None else None
        return Readback(gap=relative_gap(reply["modules"], expected), step=step)

    def _cache(self, adapter: AdapterVersion) -> tuple[Path, bool]:
        """Write the adapter's files into this engine's cache; (its directory, digest ok)."""
        if not adapter.files:
            raise AdapterError(
                f"adapter v{adapter.version} arrived without its files: engines load adapters "
                "from the bytes they are sent (serving.adapter_files.read_adapter reads a dir)"
            )
        path = self._cache_dir / f"v{adapter.version:06d}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        for name, data in adapter.files.items():
            (path / name).write_bytes(data)
        written = weights_digest({n: (path / n).read_bytes() for n in adapter.files})
        return path, not adapter.sha256 or written == adapter.sha256

    async def _rollback(self, version: int, previous_latest: int) -> None:
        # A version that failed verification must never serve a request.
        self.registry.forget(version)
        self._fingerprints.pop(version, None)
        self.registry.latest = previous_latest
        await self._llm.remove_lora(version)

    async def probe_logprobs(self, version: int, probe: AdapterProbe) -> list[float]:
        """Teacher-forced logprobs of the probe continuation under ``version``."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        ids = list(probe.prompt_token_ids) + list(probe.completion_token_ids)
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        final = None
        async for output in self._llm.generate(
            TokensPrompt(prompt_token_ids=ids),
            params,
            request_id=self._next_request_id(),
            lora_request=self._lora_request(version),
        ):
            final = output
        start = len(probe.prompt_token_ids)
        return [float(final.prompt_logprobs[i][ids[i]].logprob) for i in range(start, len(ids))]

    async def _evict_idle(self) -> None:
        for version in self.registry.evictable():
            path = self.registry.resident[version].path
            self.registry.forget(version)
            self._probe_results.pop(version, None)
            self._fingerprints.pop(version, None)
            await self._llm.remove_lora(version)
            shutil.rmtree(path, ignore_errors=True)

    async def reset_prefix_cache(self) -> bool:
        """Drop every cached prefix block (none may be in use): the bench's replay starts from
        the same cold cache the rollouts it replays started from. True if vLLM dropped them."""
        return bool(await self._llm.reset_prefix_cache())

    async def resident_versions(self) -> list[int]:
        """Versions the vLLM engine itself holds (for tests and the bench)."""
        return sorted(await self._llm.list_loras())

    # ---- health -----------------------------------------------------------------------------

    def processes(self) -> list[tuple[int, float]]:
        """This actor's process and its descendants (vLLM's engine core): (pid, start time)."""
        return family()

    def survivors(self, members: list[tuple[int, float]]) -> list[int]:
        """Which of ``members`` (another incarnation's ``processes``) still run on this node."""
        return alive(members)

    async def health(self) -> EngineHealth:
        """Cheap liveness + load report; raises if the engine core has died."""
        await self._catch_up()
        await self._llm.check_health()
        uptime = time.time() - self._started_at
        busy = self._busy_s
        if self._busy_since is not None:
            busy += time.perf_counter() - self._busy_since
        return EngineHealth(
            engine_id=self.engine_id,
            pid=os.getpid(),
            started_at=self._started_at,
            in_flight=self._in_flight,
            served=self._served,
            failed=self._failed,
            latest_version=self.registry.latest,
            resident_versions=tuple(sorted(self.registry.resident)),
            busy_s=busy,
            uptime_s=uptime,
            node_id=_node_id(),
            adapters_loaded=self._adapters_loaded,
            prefix_cache_queries=self._stats["queries"],
            prefix_cache_hits=self._stats["hits"],
            engine_steps=self._stats["steps"],
            running_sum=self._stats["running_sum"],
            waiting=self._stats["waiting"],
            kv_cache_usage_sum=self._stats["kv_cache_usage_sum"],
            generated_tokens=self._stats["generated_tokens"],
            prompt_tokens=self._stats["prompt_tokens"],
            prefilled_tokens=self._stats["prefilled_tokens"],
            max_num_seqs=self.config.max_num_seqs,
        )

    async def ready(self) -> str:
        await self._catch_up()
        return self.engine_id

    def shutdown(self) -> None:
        self._llm.shutdown()
        shutil.rmtree(self._cache_dir, ignore_errors=True)
        forget(self._actor_key)  # a clean stop leaves nothing for a restart to reap


def new_engine_stats() -> dict[str, float]:
    return {"queries": 0, "hits": 0, "steps": 0, "running_sum": 0, "waiting": 0,
            "kv_cache_usage_sum": 0.0, "generated_tokens": 0, "prompt_tokens": 0,
            "prefilled_tokens": 0}  # fmt: skip


def engine_stats_logger(stats: dict[str, float]):
    """A vLLM stat-logger factory that sums, into ``stats``, what vLLM itself reports after each
    engine step: prefix-cache queries and hits (tokens), the running sequences and KV-cache use
    (summed per step, so a window's mean is a difference of sums over a difference of
    ``steps``), the waiting sequences now, generated and prompt tokens (all, and those actually
    prefilled, i.e. not served by the prefix cache). Read in process."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class EngineStats(StatLoggerBase):
        def __init__(self, vllm_config, engine_index: int = 0) -> None:
            pass

        def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx=0):
            if scheduler_stats is not None:
                stats["queries"] += scheduler_stats.prefix_cache_stats.queries
                stats["hits"] += scheduler_stats.prefix_cache_stats.hits
                stats["steps"] += 1
                stats["running_sum"] += scheduler_stats.num_running_reqs
                stats["waiting"] = scheduler_stats.num_waiting_reqs
                stats["kv_cache_usage_sum"] += scheduler_stats.kv_cache_usage
            if iteration_stats is not None:
                stats["generated_tokens"] += iteration_stats.num_generation_tokens
                stats["prompt_tokens"] += iteration_stats.num_prompt_tokens
                stats["prefilled_tokens"] += iteration_stats.prompt_token_stats.computed

        def log_engine_initialized(self) -> None:
            pass

    return EngineStats


class AdapterBoard:
    """The adapter version every engine of a pool must serve, kept outside the engines: an engine
    actor that Ray restarts after a crash reads it before taking requests."""

    def __init__(self) -> None:
        self._current: AdapterVersion | None = None

    def publish(self, adapter: AdapterVersion) -> None:
        self._current = adapter

    def current(self) -> AdapterVersion | None:
        return self._current


def engine_actor_class():
    """The Ray actor class for ``Engine`` (Ray is imported lazily to keep the CLI light)."""
    import ray

    return ray.remote(Engine)


def adapter_board_class():
    import ray

    return ray.remote(num_cpus=0)(AdapterBoard)


def _node_id() -> str | None:
    """The Ray node this engine runs on (None outside Ray)."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # not in a Ray worker
        return None


def _first_token_latency(output) -> float:
    """Seconds from arrival to the first sampled token, from vLLM's request stats (0 if off)."""
    stats = getattr(output, "metrics", None)
    return float(getattr(stats, "first_token_latency", 0.0) or 0.0)
