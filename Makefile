# slm-operator developer entry points. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
SLM := $(VENV)/bin/slm
export SLM_CACHE_HOME ?= $(HOME)/.cache/slm-operator

.PHONY: help install run test unit lint fmt crds docs generate

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-16s %s\n", $$1, $$2}'

install: $(VENV)/.installed ## Create .venv and install the project with every extra (idempotent)

$(VENV)/.installed: pyproject.toml hack/install.sh
	hack/install.sh $(VENV)
	@touch $@

run: install ## Serve the embedded default model (Gemma 3 270M) on 127.0.0.1:11434
	$(SLM) serve examples/gemma3-270m.yaml

test: install test-tools cluster-bins ## Install every test tool, then run the whole suite (unit, real control plane and node, e2e)
	$(PY) -m pytest tests

unit: install ## Run only the unit tests (no cluster, no model)
	$(PY) -m pytest tests/unit

lint: install ## ruff and mypy
	$(VENV)/bin/ruff check operator runtime gateway tests hack bench
	$(VENV)/bin/ruff format --check operator runtime gateway tests hack bench
	$(VENV)/bin/mypy

fmt: install ## Format and autofix
	$(VENV)/bin/ruff format operator runtime gateway tests hack bench
	$(VENV)/bin/ruff check --fix operator runtime gateway tests hack bench

crds: install ## Regenerate the CRD YAML (crds/ and charts/slm-operator/crds/)
	$(SLM) crd --write crds/slm-operator.io_slmdeployments.yaml --write charts/slm-operator/crds/slm-operator.io_slmdeployments.yaml

docs: install ## Regenerate docs/api.md from the API models
	$(PY) -m slm_operator.apidoc > docs/api.md

generate: crds docs ## Regenerate every generated file

# Further targets (cluster, bench, chart ...) live next to the scripts they drive.
-include hack/*.mk
