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

.PHONY: run test lint typecheck crds crds-check unit integration bench deps controlplane clean \
	web web-types web-types-check

run: deps controlplane web
	$(PY) -m penguinmails.devstack run

test: deps controlplane lint typecheck crds-check web web-types-check
	$(TIMED) pytest $(PY) -m pytest -q -p no:cacheprovider --durations=30 tests

deps: $(STAMP)
	@$(TIMED) system-packages bash dev/install-system-packages.sh

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(TIMED) virtualenv $(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

controlplane: deps web
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
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache web/node_modules web/dist

# The dashboard (web/): npm packages from the lockfile, cached like the Go builds; built once
# per change of its sources; its API types generated from the API's OpenAPI document.
NPM       := npm --prefix web --cache $(HOME)/.cache/penguinmails/npm --prefer-offline --no-audit --no-fund
WEB_DEPS  := web/node_modules/.installed
WEB_BUILD := web/dist/index.html
WEB_SRC   := $(shell find web/src -type f 2>/dev/null) web/index.html web/vite.config.ts web/tsconfig.json

web: $(WEB_BUILD)

$(WEB_DEPS): web/package-lock.json
	$(TIMED) npm-ci $(NPM) ci
	@touch $(WEB_DEPS)

$(WEB_BUILD): $(WEB_DEPS) $(WEB_SRC)
	$(TIMED) web-build $(NPM) run build

build/openapi.json: deps FORCE
	@mkdir -p build
	$(PY) -m penguinmails.api.http openapi > build/openapi.json

web-types: $(WEB_DEPS) build/openapi.json
	cd web && node_modules/.bin/openapi-typescript ../build/openapi.json -o src/api/schema.d.ts

web-types-check: $(WEB_DEPS) build/openapi.json
	cd web && node_modules/.bin/openapi-typescript ../build/openapi.json -o ../build/schema.d.ts >/dev/null
	@diff -q web/src/api/schema.d.ts build/schema.d.ts >/dev/null || { \
	  echo "web/src/api/schema.d.ts is stale: the API's OpenAPI document changed; run make web-types"; \
	  exit 1; }

.PHONY: FORCE
FORCE:
