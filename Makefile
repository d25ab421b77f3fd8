# beam-caption: `make help` lists the targets. Every target installs what it needs into .venv/.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# google-auth probes the GCE metadata server when it looks for credentials; nothing here runs on GCE.
export NO_GCE_CHECK := true
export PYTHONUNBUFFERED := 1
DEMO_OUT ?= out/demo

.DEFAULT_GOAL := help
.PHONY: help install test test-fast lint demo bench bench-full simulate clean

help: ## List the targets with one line each
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install beam-caption with its dev tools

test: $(STAMP) ## Run every test (unit, contract, integration against the local simulator)
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-fast: $(STAMP) ## Run the unit and contract tests only
	$(PY) -m pytest -q -p no:cacheprovider tests/unit tests/contract $(PYTEST_ARGS)

lint: $(STAMP) ## ruff check and format check
	$(VENV)/bin/ruff check beam_caption tests bench

demo: $(STAMP) ## Caption the bundled sample photos against the local simulator into out/demo/
	$(VENV)/bin/beam-caption run --simulate --input 'samples/*.jpg' --output $(DEMO_OUT) --overwrite

simulate: $(STAMP) ## Start the local OpenAI-compatible simulator on 127.0.0.1:8080
	$(VENV)/bin/beam-caption simulate --port 8080

bench: $(STAMP) ## Quick benchmarks (under 10 minutes); results in bench/RESULTS.md
	$(PY) bench/run.py --quick

bench-full: $(STAMP) ## All benchmark scenarios (long)
	$(PY) bench/run.py --full

clean: ## Remove the virtual environment, caches and outputs
	rm -rf $(VENV) out .pytest_cache .ruff_cache *.egg-info
