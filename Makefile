# gumbel_tut: every command a reader or CI needs. `make docs` builds the tutorial website, `make test` runs all tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP_INSTALL := $(BIN)/pip install --quiet --disable-pip-version-check

.PHONY: setup test check-sync check-clean check-export check-readme nbtest pytest lab docs serve bench readme export clean chromium

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

## test: sync checks, every notebook executed, then pytest
test: setup check-sync nbtest pytest

check-sync: check-clean check-export check-readme

# Each check regenerates its files and fails with the names of those that changed.
check-clean: setup
	@$(BIN)/python .ci/check_unchanged.py "nbdev-clean (notebooks must be committed clean)" -- $(BIN)/nbdev-clean

check-export: setup
	@$(BIN)/python .ci/check_unchanged.py "nbdev-export (gumbel_tut/ must match nbs/)" -- $(BIN)/nbdev-export

check-readme: setup
	@$(BIN)/python .ci/check_unchanged.py "docs/readme.py (README.md must match nbs/index.ipynb)" -- $(BIN)/python docs/readme.py

nbtest: setup
	$(BIN)/nbdev-test --n-workers 2

pytest: setup
	$(BIN)/python -m pytest -n 2 -q

## lab: JupyterLab on nbs/ for reading along
lab: setup
	$(BIN)/jupyter lab --notebook-dir=nbs

## docs: build the tutorial website into docs/_build/html (notebooks executed fresh)
docs: setup
	@echo "make docs: the website build is not in yet (see the website issue)."

## serve: serve the built website on 127.0.0.1
serve:
	@echo "make serve: the website build is not in yet (see the website issue)."

clean:
	rm -rf _proc _docs docs/_build .pytest_cache
