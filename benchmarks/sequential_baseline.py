"""The sequential baseline of ``rlfarm bench rollout``: what the farm is measured against.

Shaped like the public project's loop: the warm model in this process under transformers
``generate`` (on the engines' device and dtype: float32 on CPU, bf16 on a GPU; sampling at the
farm's temperature), one episode turn at a time behind a
``threading.Lock`` (the public trainer serialised generation the same way), the env in-process
(``AwsEnv`` on one sandbox process), and no learning. The G episodes of a group run on G threads
so env steps may overlap another episode's generation, but never two generations at once.

Prompts are rendered exactly as the farm renders them (``rollout.chat.Conversation`` with the
env's own wording, ``rollout.aws_backend``), and tasks and seeds come from a
``CurriculumSampler`` seeded like the farm's, so both play the same first groups.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from cluster.base.config import FarmConfig
from cluster.base.task_split import task_split
from cluster.farm.curriculum import CurriculumSampler
from cluster.farm.metrics import percentile
from rollout.env_backends import task_renamer
from rollout.env_contract import EnvTask


@dataclass
class BaselineStats:
    """Totals of one baseline run; lists are appended from several threads (append is atomic)."""

    episodes: int = 0
    achieved: int = 0
    generated_tokens: int = 0
    env_step_s: list[float] = field(default_factory=list)
    generate_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0


class _LockedGenerator:
    """transformers ``generate`` for one prompt at a time; the lock serialises all callers."""

    def __init__(
        self, model_path: str, temperature: float, max_new_tokens: int, device: str, dtype: str
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = (
            AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype))
            .to(self.device)
            .eval()
        )
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens
        self.lock = threading.Lock()

    def generate(self, prompt_ids: list[int]) -> list[int]:
        torch = self.torch
        ids = torch.tensor([prompt_ids], device=self.device)
        sampling = (
            {"do_sample": True, "temperature": self.temperature, "top_p": 1.0, "top_k": 0}
            if self.temperature > 0
            else {"do_sample": False}
        )
        eos = self.tokenizer.eos_token_id
        with self.lock, torch.no_grad():
            out = self.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=self.max_new_tokens,
                eos_token_id=eos,
                pad_token_id=self.tokenizer.pad_token_id or eos,
                **sampling,
            )
        # One sequence: generation stops at the end token, so nothing after it is padding.
        return out[0, len(prompt_ids) :].tolist()


def _play_episode(
    task: EnvTask, seed: int, gen: _LockedGenerator, env, config: FarmConfig, stats: BaselineStats
) -> bool:
    """One episode, the farm's episode loop (``rollout.episode_loop.run_episode``) made synchronous,
    with the same AWS env contract (``rollout.aws_backend``)."""
    from rollout.aws_backend import AwsSession, command_to_send, reset_result, step_result
    from rollout.chat import Conversation

    max_len = config.engine.max_model_len
    max_new = config.rollout.max_new_tokens
    first = reset_result(env.reset(task.id, seed))
    conv, _ = Conversation.start(gen.tokenizer, AwsSession.system_prompt, first.text)
    achieved = False
    for _ in range(config.rollout.max_steps):
        if len(conv.token_ids) + max_new > max_len:
            break
        started = time.perf_counter()
        completion = gen.generate(list(conv.token_ids))
        generated = time.perf_counter()
        reply = conv.add_completion(completion)
        command, parsed = command_to_send(reply)
        result = step_result(env.step(command), parsed)
        stats.generate_s.append(generated - started)
        stats.env_step_s.append(time.perf_counter() - generated)
        stats.generated_tokens += len(completion)
        if result.success:
            achieved = True
            break
        if result.done:
            break
        conv.add_user(result.text)
    return achieved


def run_sequential_baseline(model_path: str, config: FarmConfig, groups: int, log=print) -> dict:
    """Play ``groups`` groups of G episodes sequentially; return rates and latencies."""
    from env.catalog import load_catalog
    from env.environment import AwsEnv
    from env.sandbox_pool import SandboxPool

    catalog = load_catalog()
    # The farm's own task stream: the same tasks, renamed the same way.
    sampler = CurriculumSampler(
        task_split(config, catalog.tasks).train, config.curriculum, config.run.seed,
        task_renamer(config.env),
    )  # fmt: skip
    # The engines' device and dtype: on a GPU config the baseline runs on CUDA in bf16 too.
    gen = _LockedGenerator(
        model_path, config.rollout.temperature, config.rollout.max_new_tokens,
        config.engine.resolved_device(), config.engine.resolved_dtype(),
    )  # fmt: skip
    size = config.rollout.group_size
    stats = BaselineStats()
    count_lock = threading.Lock()

    with SandboxPool(processes=1) as pool, ThreadPoolExecutor(max_workers=size) as threads:

        def episode(task: EnvTask, seed: int) -> bool:
            env = AwsEnv(
                catalog, pool=pool, max_steps=config.rollout.max_steps, disrupt=config.env.disrupt
            )
            try:
                local = BaselineStats()
                achieved = _play_episode(task, seed, gen, env, config, local)
            finally:
                env.close()
            with count_lock:  # merge per-episode counts: no lost updates across threads
                stats.episodes += 1
                stats.achieved += achieved
                stats.generated_tokens += local.generated_tokens
                stats.env_step_s.extend(local.env_step_s)
                stats.generate_s.extend(local.generate_s)
            return achieved

        started = time.perf_counter()
        for index in range(groups):
            task, seed = sampler.next()
            gen.torch.manual_seed(seed)
            achieved = list(threads.map(episode, [task] * size, [seed] * size))
            sampler.observe(task.tier, achieved, task.id)
            log(f"[sequential] group {index + 1}/{groups} {task.id}: {sum(achieved)}/{size} solved")
        stats.wall_s = time.perf_counter() - started
    return summarize(stats)


def summarize(stats: BaselineStats) -> dict:
    wall = max(stats.wall_s, 1e-9)
    steps = len(stats.env_step_s)
    return {
        "episodes": stats.episodes,
        "achieved": stats.achieved,
        "wall_s": stats.wall_s,
        "episodes_per_s": stats.episodes / wall,
        "generated_tokens_per_s": stats.generated_tokens / wall,
        "env_steps_per_s": steps / wall,
        "env_steps": steps,
        "env_step_ms_p50": percentile(stats.env_step_s, 0.5) * 1000,
        "env_step_ms_p99": percentile(stats.env_step_s, 0.99) * 1000,
        "generate_ms_p50": percentile(stats.generate_s, 0.5) * 1000,
        # One generation at a time by construction; the lock holds it, never a batch.
        "generation_concurrency": 1,
    }
