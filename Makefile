# medlab: the two commands the README starts with.
#   make test   set up .venv if missing (medlab with its dev extra), then run the test suite
#   make run    set up .venv if missing (medlab with its runner extra), then run every lesson (cpu profile)
#   make lab    set up .venv if missing (medlab with its lab extra), then open the lessons in JupyterLab
# Each target installs only the layer it needs (pyproject.toml): core (what the lessons import),
# runner (papermill, nbconvert, ipykernel, dask), lab (JupyterLab), dev (runner + lab + test tools).
#   make reset LESSON=01   restore a lesson to its committed state (your edits to it are lost)
#   make clean-cache       delete the downloaded data sets and pretrained weights
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.medlab-dev
RUNNER_STAMP := $(VENV)/.medlab-runner
LAB_STAMP := $(VENV)/.medlab-lab
CORE_STAMP := $(VENV)/.medlab-core
PROFILE ?= cpu
OUT ?= runs/latest

.PHONY: setup test run smoke lab clean reset clean-cache

setup: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

# dev = runner + lab + test tools, so it also satisfies the runner and lab targets
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP) $(RUNNER_STAMP) $(LAB_STAMP) $(CORE_STAMP)

$(RUNNER_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e ".[runner]"
	touch $(RUNNER_STAMP) $(CORE_STAMP)

$(LAB_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e ".[lab]"
	touch $(LAB_STAMP) $(CORE_STAMP)

# core only: what the lessons import (no runner, no JupyterLab)
$(CORE_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e .
	touch $(CORE_STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

run: $(RUNNER_STAMP)
	$(BIN)/medlab run --profile $(PROFILE) --out $(OUT)

smoke: $(RUNNER_STAMP)
	$(BIN)/medlab run --profile smoke --out runs/smoke

lab: $(LAB_STAMP)
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf runs .pytest_cache test-artifacts

reset: $(CORE_STAMP)
	@test -n "$(LESSON)" || { echo "make reset LESSON=01  (a lesson's number or name)"; exit 2; }
	$(BIN)/medlab reset $(LESSON)

clean-cache: $(CORE_STAMP)
	$(BIN)/medlab cache clear --yes
