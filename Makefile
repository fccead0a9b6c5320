# gumbel_tut: every command a reader or CI needs. `make docs` builds the tutorial website, `make test` runs all tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP_INSTALL := $(BIN)/pip install --quiet --disable-pip-version-check
PORT ?= 8000
DOCS_WORKERS ?= 2

.PHONY: help setup test fuzz-explore docs-cache-check check-sync check-clean check-export check-readme nbtest pytest lab docs serve bench results readme export clean chromium test-triton bench-gpu

## help: list the targets below and what they do (from their `## target:` comments)
help:
	@awk '/^## [a-z][a-z-]*: / { sub(/^## /, ""); name = $$0; sub(/:.*/, "", name); sub(/^[a-z-]+: */, ""); \
	       printf "  %-12s %s\n", name, $$0; next } \
	     /^## / { sub(/^## */, ""); printf "  %-12s %s\n", "", $$0 }' $(firstword $(MAKEFILE_LIST))

## setup: create .venv and install the project (editable) with its dev and docs extras, pinned by constraints.txt
setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip -c constraints.txt
	$(PIP_INSTALL) -c constraints.txt -e '.[dev,docs]'
	@touch $(STAMP)

## export: regenerate gumbel_tut/ and README.md from nbs/ (after editing a notebook)
export: setup
	$(BIN)/nbdev-export
	$(BIN)/nbdev-clean
	$(BIN)/python docs/readme.py

## test: sync checks, the website build (it executes every notebook, once; a failing cell fails it), then
## pytest, whose tests/test_site.py checks the built site in headless Chromium
test: setup check-sync docs docs-cache-check chromium pytest

check-sync: check-clean check-export check-readme

# Each check regenerates its files and fails with the names of those that changed.
check-clean: setup
	@$(BIN)/python .ci/check_unchanged.py "nbdev-clean (notebooks must be committed clean)" -- $(BIN)/nbdev-clean

check-export: setup
	@$(BIN)/python .ci/check_unchanged.py "nbdev-export (gumbel_tut/ must match nbs/)" -- $(BIN)/nbdev-export

check-readme: setup
	@$(BIN)/python .ci/check_unchanged.py "docs/readme.py (README.md must match nbs/index.ipynb)" -- $(BIN)/python docs/readme.py

# nbtest: the notebooks alone, without the website (make test runs them once, through `make docs`)
nbtest: setup
	$(BIN)/nbdev-test --n-workers 2

pytest: setup
	$(BIN)/python -m pytest -n 2 -q

## fuzz-explore: the property-based tests of tests/test_fuzz.py with random examples, many more than CI's fixed ones
##               (Hypothesis profile 'explore' of tests/conftest.py), to hunt for new failures; minutes, not seconds
fuzz-explore: setup
	HYPOTHESIS_PROFILE=explore $(BIN)/python -m pytest -p no:xdist -q tests/test_fuzz.py

## bench: time the fast Gumbel-softmax against F.gumbel_softmax and clone (BENCH_ARGS='--shapes 256x10,4096x1024 --json bench.json')
BENCH_ARGS ?=
bench: setup
	$(BIN)/gumbel-tut-bench $(BENCH_ARGS)

## test-triton: install the optional triton extra (about 1 GB) and test the Triton kernels; without a GPU they
## run in Triton's interpreter on CPU tensors (TRITON_INTERPRET=1)
test-triton: setup
	$(PIP_INSTALL) -c constraints.txt -e '.[triton]'
	$(BIN)/python -m pytest -p no:xdist -q tests/test_triton.py

## bench-gpu: on a machine with a CUDA GPU: the Triton tests on CUDA, every sampler under CUDA's sync debug mode, then the GPU benchmarks (bench-gpu.json, bench-gpu-fast.json, bench-gpu-decoding.json: token sampling with the Triton decoding kernel)
bench-gpu: setup
	$(PIP_INSTALL) -c constraints.txt -e '.[triton]'
	@$(BIN)/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'make bench-gpu: no CUDA device here')"
	$(BIN)/python -m pytest -p no:xdist -q tests/test_triton.py
	$(BIN)/python scripts/cuda_sync_check.py
	$(BIN)/gumbel-tut-bench --device cuda --backend triton --shapes 65536x4096,8192x32000 --json bench-gpu.json
	$(BIN)/gumbel-tut-bench --device cuda --backend fast --shapes 65536x4096,8192x32000 --json bench-gpu-fast.json
	$(BIN)/python -c "import json; from gumbel_tut.decoding_bench import decoding_rows; \
	  json.dump(decoding_rows(device='cuda', rounds=15, warmup=2), open('bench-gpu-decoding.json', 'w'), indent=1)"

## results: chapter 4's estimator comparison into nbs/results/vae_<data>.json (long: `nohup make results > results.log 2>&1 &`;
##          RESULTS_DATA=digits for one data set, RESULTS_ARGS='--jobs 1' for one run at a time). Stop it any way you like
##          (Ctrl-C, kill, kill -9): the next call continues where it stopped. A line per run says what was done, with an
##          ETA; a second call on a data set in use is refused (status 2). Each finished run leaves a record in
##          nbs/results/records/<data>/: commit them, and a call on another machine reuses them instead of training
RESULTS_DATA ?= digits fashion-mnist
RESULTS_ARGS ?= --jobs 2
results: setup
	for d in $(RESULTS_DATA); do nice $(BIN)/python scripts/vae_results.py --data $$d $(RESULTS_ARGS) || exit 1; done

## lab: JupyterLab on nbs/ for reading along (adds --allow-root when run as root, as Jupyter requires)
LAB_AS_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)
lab: setup
	$(BIN)/jupyter lab --notebook-dir=nbs $(LAB_AS_ROOT)

## docs: build the tutorial website into docs/_build/html (notebooks executed through an execution cache that a
## change to their code or to the package invalidates; see docs/build.py)
docs: setup
	$(BIN)/python docs/build.py --jobs $(DOCS_WORKERS)

# docs-cache-check: a prose-only edit rebuilds from the execution cache (time printed as a ratio to the cold build)
docs-cache-check: setup
	$(BIN)/python docs/build.py --time-prose-edit --jobs $(DOCS_WORKERS)

## serve: serve the built website on http://127.0.0.1:$(PORT) (PORT=8000 by default)
serve:
	@test -f docs/_build/html/index.html || { echo "make serve: no website yet, run 'make docs' first" >&2; exit 1; }
	@echo "Serving docs/_build/html on http://127.0.0.1:$(PORT)/ (Ctrl-C stops)"
	$(PYTHON) -m http.server --bind 127.0.0.1 $(PORT) --directory docs/_build/html

## chromium: install Debian's chromium for the browser test (tests/test_site.py) when it is missing
chromium:
	@test -x /usr/bin/chromium || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get install -y chromium || { $$SUDO apt-get update && $$SUDO apt-get install -y chromium; }; }

clean:
	rm -rf _proc _docs docs/_build .pytest_cache
