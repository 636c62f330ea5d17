"""Serving: vLLM engines in Ray actors, LoRA versions hot-swapped into them, and endpoints.

- ``engine``: ``Engine`` (vLLM ``AsyncLLM``, token-in/token-out, LoRA versions, swap probes);
- ``engine_pool``: ``EnginePool``, M engines behind one object (routing, broadcast loads);
- ``adapters``: adapter validation, version registry and eviction inside one engine;
- ``types``: ``AdapterVersion``/``AdapterProbe``/``Completion`` carriers shared with the learner;
- ``config``: ``EngineConfig``; ``cpu_lora_ops``: grouped LoRA matmuls for vLLM's CPU platform;
- ``openai_server``: ``rlfarm serve``. (The built-in models are built in ``cluster.models``.)

Knows nothing of env or GRPO.
"""
