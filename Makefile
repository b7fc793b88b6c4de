# Two commands do everything on a fresh clone:
#   make book   set up, execute every chapter and build the HTML site into _build/html
#   make test   set up and run the whole test suite (lint, unit tests, nbval over every chapter)
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.vglib-installed

# torch must be the CPU build. Where this machine has the local CPU wheel, take it; elsewhere
# take PyTorch's CPU index. Either way the install fails if a CUDA package comes along.
TORCH_WHEELS ?= /opt/wheels
ifneq ($(wildcard $(TORCH_WHEELS)/torch-2.13.0+cpu-*.whl),)
TORCH_SOURCE := --find-links $(TORCH_WHEELS)
else
TORCH_SOURCE := --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple
endif

# Kernels are looked up in the virtual environment first, so chapters run with its Python.
export JUPYTER_PATH := $(CURDIR)/$(VENV)/share/jupyter
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: help setup book test lint notebooks benchmarks clean

help:
	@echo "make book   build the site into _build/html (sets everything up first)"
	@echo "make test   run the whole test suite (sets everything up first)"

setup: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_SOURCE) -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -r requirements.txt -c constraints.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (vglib)" >/dev/null
	@if $(BIN)/python -m pip list 2>/dev/null | grep -i -E '^(nvidia-|triton|cuda-)'; then \
	  echo "error: CUDA packages were installed (above); torch must be the CPU build" >&2; exit 1; fi
	$(BIN)/python -c "import torch, vglib; assert not torch.version.cuda, torch.version.cuda"
	touch $@

# Front-end assets the site ships (MathJax), from the npm registry, pinned by package-lock.json.
SITE_ASSETS := _site_assets/_vendor/mathjax/tex-chtml.js
$(SITE_ASSETS): package.json package-lock.json
	npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	rm -rf _site_assets && mkdir -p _site_assets/_vendor/mathjax
	cp -r node_modules/mathjax/es5/tex-chtml.js node_modules/mathjax/es5/output \
	  node_modules/mathjax/es5/input node_modules/mathjax/es5/a11y node_modules/mathjax/es5/ui \
	  node_modules/mathjax/es5/adaptors node_modules/mathjax/LICENSE _site_assets/_vendor/mathjax/

book: $(STAMP) $(SITE_ASSETS)
	$(BIN)/jupyter-book clean . --all >/dev/null
	$(BIN)/jupyter-book build . -W -n --keep-going
	@echo "The book is built: open file://$(CURDIR)/_build/html/index.html"

lint: $(STAMP)
	$(BIN)/ruff check vglib tests benchmarks
	$(BIN)/ruff format --check vglib tests benchmarks

# The site test drives Debian's Chromium; under CI the set-up installs it (the test never skips,
# and fails with instructions where Chromium is missing).
test: lint book
	@if [ "$${CI:-}" = "true" ] && ! command -v chromium >/dev/null 2>&1; then \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; fi
	rm -rf test-artifacts
	$(BIN)/python -m pytest

# Re-execute the committed chapters in place (their outputs are what nbval compares against).
notebooks: $(STAMP)
	find chapters -name '*.ipynb' -not -path '*/.ipynb_checkpoints/*' -print0 \
	  | xargs -0 -n1 $(BIN)/jupyter-execute --inplace

benchmarks: $(STAMP)
	$(BIN)/python benchmarks/explorer_latency.py
	$(BIN)/python benchmarks/monitor_overhead.py
	$(BIN)/python benchmarks/activation_cost.py
	$(BIN)/python benchmarks/recurrent_cost.py
	$(BIN)/python benchmarks/normalisation_cost.py
	$(BIN)/python benchmarks/chapter_times.py

clean:
	rm -rf _build _site_assets node_modules $(VENV)
