# Developer entry points. `make help` lists them.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Quieter TensorFlow start-up for every target.
export TF_CPP_MIN_LOG_LEVEL ?= 2
PORT ?= 8000

.DEFAULT_GOAL := help
.PHONY: help setup serve test lint format bench gpu-check default-model clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

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

gpu-check: $(STAMP) ## align 300 UTKFace photos, train one epoch, serve it, time the model at batch 1/32/256 -> bench/results/gpu.md
	$(PY) -m bench.gpu_check

MEMBER_SEEDS ?= 0 1 2
RECIPE := runs/default_model_ensemble
default-model: $(STAMP) ## retrain models/default.h5 from ../shared/data/utkface: align, one member per seed, ensemble, evaluate (hours)
	$(VENV)/bin/age-align --images ../shared/data/utkface/images --utkface --out dataset/utkface \
	    --img-size 80 --padding 0.25 --start-label 1 --workers 2
	@mkdir -p $(RECIPE)
	set -eo pipefail; for seed in $(MEMBER_SEEDS); do \
	    $(VENV)/bin/age-train --config configs/default_model.json --set seed=$$seed \
	        --set run_dir=$(RECIPE)/seed$$seed --set output_dir=$(RECIPE)/seed$$seed | tee $(RECIPE)/seed$$seed.log; \
	    cp "$$(tail -n 1 $(RECIPE)/seed$$seed.log | sed 's/^saved: //')" $(RECIPE)/member_seed$$seed.h5; \
	done
	$(VENV)/bin/age-ensemble --drop-flip --models $(foreach seed,$(MEMBER_SEEDS),$(RECIPE)/member_seed$(seed).h5) \
	    --out models/default.h5 --csv $(RECIPE)/seed$(firstword $(MEMBER_SEEDS))/test.csv --images /
	$(VENV)/bin/age-evaluate --model models/default.h5 --csv models/holdout.csv --images ../shared/data/utkface \
	    --plots models/default_eval

clean: ## remove caches (keeps .venv/)
	rm -rf .pytest_cache .mypy_cache .ruff_cache
