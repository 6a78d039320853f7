# Developer entry points. `make run` and `make test` need nothing but Python >= 3.11, a JDK >= 21 and Maven
# (plus Node.js >= 20 with npm for the JavaScript client interop test, skipped without them):
# the virtualenv is created on demand and the managed Elasticsearch node is downloaded/started by the code.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
BENCH_ARGS ?=
# First interpreter on PATH that is >= 3.11 (override with `make PYTHON=/path/to/python3.12 venv`).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& { echo $$p; break; }; done)

.PHONY: venv run test lint es-start es-stop es-status bench clean distclean

venv: $(STAMP)

# Re-installs only when pyproject.toml is newer than the stamp.
$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: Python >= 3.11 not found on PATH (set PYTHON=...)" >&2; exit 1; }
	@test -x $(PY) || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

# Starts the managed Elasticsearch itself when FHIR_ES_URL is unset, and stops it on Ctrl-C.
run: venv
	$(VENV)/bin/fhir-server serve

# The test session starts its own Elasticsearch node (conftest fixture).
test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy fhir_common fhir_server fhir_devtools profiles search
	$(PY) -m pytest -q -p no:cacheprovider tests/test_layering.py

es-start: venv
	$(VENV)/bin/fhir-server es start

es-stop: venv
	$(VENV)/bin/fhir-server es stop

es-status: venv
	$(VENV)/bin/fhir-server es status

bench: venv
	$(PY) bench/ingest.py $(BENCH_ARGS)
	$(PY) bench/read.py $(BENCH_ARGS)
	$(PY) bench/transactions.py $(BENCH_ARGS)
	$(PY) bench/validate.py
	$(PY) bench/search.py $(BENCH_ARGS)
	$(PY) bench/audit.py
	$(PY) bench/fuzz.py $(BENCH_ARGS)

# Build and tool caches; keeps .venv and the downloaded Elasticsearch (~/.cache/fhir-server).
clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
