"""Reference numbers from transformers + peft, the learner's side of every comparison."""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from serving.types import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    AdapterProbe,
    AdapterVersion,
    weights_digest,
    write_manifest,
)


class Reference:
    """Makes LoRA adapters with known non-zero weights and computes exact logprobs for them."""

    def __init__(self, model_path: Path, workdir: Path) -> None:
        self.model_path = model_path
        self.workdir = workdir
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()

    def prompt(self, text: str) -> list[int]:
        messages = [{"role": "user", "content": text}]
        return list(
            self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]
        )

    def make_adapter(
        self,
        seed: int,
        rank: int = 8,
        scale: float = 1.0,
        modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj"),
    ) -> Path:
        """A peft LoRA with random (non-zero) A and B, saved in save_pretrained layout."""
        torch.manual_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=torch.float32)
        config = LoraConfig(
            r=rank,
            lora_alpha=2 * rank,
            target_modules=list(modules),
            init_lora_weights=False,
        )
        model = get_peft_model(base, config)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.mul_(scale)
        suffix = "" if len(modules) == 4 else "-" + "-".join(modules)
        suffix += "" if scale == 1.0 else f"-x{scale:g}"
        out = self.workdir / f"adapter-seed{seed}-r{rank}{suffix}"
        model.save_pretrained(out)
        return out

    def _model(self, adapter: Path | None):
        if adapter is None:
            return self.base
        return PeftModel.from_pretrained(self.base, adapter).eval()

    @torch.no_grad()
    def logprobs(self, adapter: Path | None, ids: list[int], start: int) -> list[float]:
        """log p(ids[i] | ids[:i]) for i >= start."""
        model = self._model(adapter)
        try:
            logits = model(torch.tensor([ids])).logits[0].float()
        finally:
            if adapter is not None:
                model.unload()
        logp = torch.log_softmax(logits, dim=-1)
        return [logp[i - 1, ids[i]].item() for i in range(start, len(ids))]

    @torch.no_grad()
    def greedy(self, adapter: Path | None, ids: list[int], n: int) -> list[int]:
        model = self._model(adapter)
        try:
            out = model.generate(
                torch.tensor([ids]), max_new_tokens=n, do_sample=False, eos_token_id=None
            )
        finally:
            if adapter is not None:
                model.unload()
        return out[0, len(ids) :].tolist()

    def publish(
        self, version: int, adapter: Path, probe_from: Path | None = None
    ) -> AdapterVersion:
        """The AdapterVersion a learner would publish; ``probe_from`` fakes another's probe."""
        source = probe_from or adapter
        prompt = self.prompt("probe: list the s3 buckets")
        completion = self.greedy(source, prompt, 8)
        ids = prompt + completion
        probe = AdapterProbe(
            prompt_token_ids=prompt,
            completion_token_ids=completion,
            logprobs=self.logprobs(source, ids, len(prompt)),
            reference_logprobs=self.logprobs(None, ids, len(prompt)),
        )
        files = {name: (adapter / name).read_bytes() for name in (CONFIG_FILE, WEIGHTS_FILE)}
        published = AdapterVersion(version=version, path=str(adapter), probe=probe,
                                   sha256=weights_digest(files), files=files)  # fmt: skip
        write_manifest(published)
        return published
