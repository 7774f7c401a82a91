# Developer entry points. `make help` lists them.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Quieter TensorFlow start-up for every target.
export TF_CPP_MIN_LOG_LEVEL ?= 2
PORT ?= 8000

.DEFAULT_GOAL := help
.PHONY: help setup serve test lint format bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[cpu,train,serve,dev]'
	@touch $(STAMP)

setup: $(STAMP) ## create .venv/ and install everything (CPU TensorFlow, dlib, landmark model, dev tools); fast when done
	@echo "setup: $(VENV) is ready"

serve: $(STAMP) ## serve the shipped default model on port 8000
	$(VENV)/bin/age-serve --host 0.0.0.0 --port $(PORT)

lint: $(STAMP) ## ruff check, ruff format --check, mypy on core/
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP) ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: lint ## lint, then the whole test suite
	$(PY) -m pytest

bench: $(STAMP) ## run every benchmark in bench/ and rewrite bench/RESULTS.md
	$(PY) -m bench.run

clean: ## remove caches (keeps .venv/)
	rm -rf .pytest_cache .mypy_cache .ruff_cache
