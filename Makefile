# PenguinMails: `make run` starts the local stack with the operator; `make test` proves it works.
# Both install what they need (Debian packages, the Go build of the control plane, a virtualenv).

# The top-level folder operator/ would shadow the standard library's `operator` module if the
# working directory were on sys.path; PYTHONSAFEPATH (Python 3.11+) keeps it off.
export PYTHONSAFEPATH := 1

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TIMED  := bash dev/timed.sh

.PHONY: run test lint typecheck crds crds-check unit integration bench deps controlplane clean

run: deps controlplane
	$(PY) -m penguinmails.devstack run

test: deps controlplane lint typecheck crds-check
	$(TIMED) pytest $(PY) -m pytest -q -p no:cacheprovider tests

deps: $(STAMP)
	@$(TIMED) system-packages bash dev/install-system-packages.sh

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(TIMED) virtualenv $(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

controlplane: deps
	$(TIMED) build $(PY) -m penguinmails.devstack build

lint: deps
	$(TIMED) ruff $(VENV)/bin/ruff check .
	$(TIMED) ruff-format $(VENV)/bin/ruff format --check .

typecheck: deps
	$(TIMED) mypy $(VENV)/bin/mypy

crds: deps
	$(PY) -m penguinmails.api.crdgen

crds-check: deps
	$(PY) -m penguinmails.api.crdgen --check

unit: deps
	$(PY) -m pytest -q -m "not integration" tests

integration: deps controlplane
	$(PY) -m pytest -q -m integration tests

bench: deps controlplane
	$(PY) -m penguinmails.bench $(BENCH)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
