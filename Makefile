# Developer entry points. `make help` lists them.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Quieter TensorFlow start-up for every target.
export TF_CPP_MIN_LOG_LEVEL ?= 2
PORT ?= 8000

.DEFAULT_GOAL := help
.PHONY: help setup serve test lint docs format bench gpu-check default-model clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[cpu,train,serve,dev,batch]'
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

docs: $(STAMP) ## build the docs/ site with its API reference into site/ (mkdocs, offline, strict)
	$(VENV)/bin/mkdocs build --quiet

test: lint docs ## lint, build the docs, then the whole test suite
	$(PY) -m pytest

bench: $(STAMP) ## run every benchmark in bench/ and rewrite bench/RESULTS.md
	$(PY) -m bench.run

gpu-check: $(STAMP) ## align 300 UTKFace photos, train one epoch, serve it, time the model at batch 1/32/256 -> bench/results/gpu.md
	$(PY) -m bench.gpu_check

RUN := runs/default_model
RUN2 := runs/default_model_stage2
default-model: $(STAMP) ## retrain models/default.h5 from ../shared/data/utkface: align, fine-tune dlib's face ResNet (8 epochs), fine-tune on old-print augmentation (3), calibrate by decade, evaluate (about 70 minutes on 2 cores); resumable
	$(VENV)/bin/age-align --images ../shared/data/utkface/images --utkface --out dataset/utkface150 \
	    --img-size 150 --padding 0.25 --start-label 1 --workers 2
	set -eo pipefail; $(VENV)/bin/age-train --config configs/default_model.json | tee $(RUN).log
	set -eo pipefail; $(VENV)/bin/age-train --config configs/default_model_stage2.json | tee $(RUN2).log
	$(VENV)/bin/age-calibrate --model "$$(tail -n 1 $(RUN2).log | sed 's/^saved: //')" \
	    --csv $(RUN2)/val.csv --images / --aligned --out models/default.h5
	$(VENV)/bin/age-evaluate --model models/default.h5 --csv models/holdout.csv --images ../shared/data/utkface \
	    --groups Gender,Race --plots models/default_eval > models/default_eval/holdout.json
	$(VENV)/bin/age-robustness --model models/default.h5 --csv $(RUN2)/test.csv --images / \
	    --out models/default_eval/robustness_test.json

clean: ## remove caches (keeps .venv/)
	rm -rf .pytest_cache .mypy_cache .ruff_cache site
