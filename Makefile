# `make demo` trains on the bundled digits data; `make test` runs the test suite; `make lint` checks style.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# one test process per core, each with one torch thread: faster than two threads per process here
PYTEST_ARGS ?= -n auto --dist loadfile

.PHONY: demo test lint format install clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

$(VENV)/.installed-dev: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -e ".[dev]"
	touch $@

install: $(VENV)/.installed-dev

demo: install
	$(VENV)/bin/cnnlab

test: install
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) build *.egg-info
