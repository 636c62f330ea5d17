"""The built-in tiny default model: nothing can be downloaded on the machines rlfarm is built on.

``ensure_tiny_model()`` returns a local Hugging Face directory holding a seeded, randomly
initialised Qwen2-architecture model of a few million parameters and a byte-level BPE tokenizer
trained on AWS CLI vocabulary (botocore's service, operation, parameter and output-field names,
plus any extra texts the caller passes, such as the env's task descriptions). The tokenizer carries
a ChatML chat template with ``{% generation %}`` markers so trl can mask non-assistant tokens.
transformers, peft and vLLM all load the directory as they would a hub model.

The weights are random: the model becomes useful only after the SFT warm start (learner/sft.py).
Builds are deterministic and cached under ``$RLFARM_HOME/models/`` (default ``~/.cache/rlfarm``),
keyed by a hash of the spec and the corpus, and written atomically so parallel callers never see
a half-written model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}{{- '\\n' }}"
    "{%- else %}"
    "{{- message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Bump when the build recipe changes so cached models from an older recipe are not reused.
BUILD_RECIPE = 3
# Pre-tokens are CLI word pieces with their leading dashes (` create`, `-table`, ` --table`,
# `-name`, ` s3api`) so BPE learns them as whole tokens; punctuation runs and spaces stand apart.
PRETOKEN_PATTERN = r" ?-*[A-Za-z0-9_]+| ?[^\sA-Za-z0-9_]+|\s+"

# Services whose operations, parameters and output fields go into the tokenizer corpus: the ones
# the env's tasks use, plus neighbours an agent is likely to reach for.
CORPUS_SERVICES = (
    "s3", "s3api", "iam", "sts", "dynamodb", "sqs", "sns", "lambda", "ec2", "kms",
    "secretsmanager", "ssm", "logs", "cloudwatch", "events", "kinesis", "rds", "cognito-idp",
    "ecr", "route53", "stepfunctions", "cloudformation", "apigateway", "elbv2", "autoscaling",
    "ecs", "acm", "firehose", "glue", "athena", "ses", "organizations",
)  # fmt: skip


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape of the built-in model. head_dim 64 keeps vLLM's CPU attention kernels happy."""

    vocab_size: int = 4096
    hidden_size: int = 256
    intermediate_size: int = 768
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 4096
    seed: int = 0


def rlfarm_home() -> Path:
    return Path(os.environ.get("RLFARM_HOME", Path.home() / ".cache" / "rlfarm"))


def aws_cli_corpus() -> list[str]:
    """Lines of AWS CLI vocabulary read from botocore's service models (installed locally)."""
    import botocore.session
    from botocore import xform_name

    session = botocore.session.get_session()
    available = set(session.get_available_services())
    lines = [" ".join(sorted(available))]
    for cli_name in CORPUS_SERVICES:
        api_name = "s3" if cli_name == "s3api" else cli_name
        if api_name not in available:
            continue
        model = session.get_service_model(api_name)
        for op_name in model.operation_names:
            op = model.operation_model(op_name)
            params = []
            if op.input_shape is not None:
                params = [f"--{xform_name(m, '-')}" for m in op.input_shape.members]
            fields = list(op.output_shape.members) if op.output_shape is not None else []
            lines.append(f"aws {cli_name} {xform_name(op_name, '-')} {' '.join(params)}")
            if fields:
                lines.append(json.dumps({f: "" for f in fields}))
    return lines


def _train_tokenizer(corpus: list[str], vocab_size: int):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKEN_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS),
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=["<|im_start|>"],
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _build(target: Path, spec: TinyModelSpec, corpus: list[str]) -> None:
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tokenizer = _train_tokenizer(corpus, spec.vocab_size)
    config = Qwen2Config(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        dtype="float32",
    )
    torch.manual_seed(spec.seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    )
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    (target / "rlfarm_tiny.json").write_text(json.dumps(asdict(spec), indent=1))


def tiny_model_key(spec: TinyModelSpec, corpus: list[str]) -> str:
    digest = hashlib.sha256(json.dumps([BUILD_RECIPE, asdict(spec), corpus]).encode()).hexdigest()
    return f"tiny-qwen2-{digest[:12]}"


def ensure_tiny_model(
    home: Path | None = None,
    extra_texts: Iterable[str] = (),
    spec: TinyModelSpec | None = None,
) -> Path:
    """Return the directory of the built-in model, building it first if it is not cached."""
    spec = spec or TinyModelSpec()
    corpus = aws_cli_corpus() + [t for t in extra_texts if t]
    models_dir = (home or rlfarm_home()) / "models"
    target = models_dir / tiny_model_key(spec, corpus)
    if (target / "rlfarm_tiny.json").exists():
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=models_dir))
    try:
        _build(staging, spec, corpus)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "rlfarm_tiny.json").exists():  # lost a race to a broken build
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
