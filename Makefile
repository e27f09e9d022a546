# medlab: the two commands the README starts with.
#   make test   set up .venv if missing, then run the test suite
#   make run    set up .venv if missing, then run every lesson (cpu profile) into runs/latest
#   make lab    open the lessons in JupyterLab
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.medlab-installed
PROFILE ?= cpu
OUT ?= runs/latest

.PHONY: setup test run smoke lab clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

run: $(STAMP)
	$(BIN)/medlab run --profile $(PROFILE) --out $(OUT)

smoke: $(STAMP)
	$(BIN)/medlab run --profile smoke --out runs/smoke

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf runs .pytest_cache test-artifacts
