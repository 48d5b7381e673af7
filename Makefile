# Set-up and checks. `make demo` and `make test` work on a fresh machine with no GPU and no hub access.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel; on a GPU machine use e.g. `make install TORCH_SPEC=torch EXTRAS=serve,dev,gpu`.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= serve,dev
export RAY_USAGE_STATS_ENABLED = 0
export HF_HUB_OFFLINE ?= 1

.PHONY: install demo test typecheck bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

demo: install
	$(PY) -m serve.demo

test: install typecheck
	$(PY) -m pytest -q $(PYTEST_ARGS)

typecheck: install
	$(PY) -m mypy

bench: install
	$(PY) bench/engine.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache build *.egg-info
