# dwnotify: `make demo` runs the product on loopback emulators, `make test` installs and tests it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
STATE ?= sqlite
FC_PYTHON ?= 3.10
NPM ?= npm
# The Serverless Devs CLI the tests judge s.yaml with: the exact version package-lock.json pins, installed
# in node_modules/ (not globally), so `make test` runs the same `s` everywhere.
SDEVS_STAMP := node_modules/.installed

.PHONY: install serverless-devs demo test lint typecheck unit bench soak build clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

serverless-devs: $(SDEVS_STAMP)

$(SDEVS_STAMP): package.json package-lock.json
	$(NPM) ci --no-audit --no-fund --ignore-scripts
	touch $(SDEVS_STAMP)

demo: install
	$(PY) -m dwnotify demo --state $(STATE)

lint: install
	$(VENV)/bin/ruff check functions emulators tests benchmarks
	$(VENV)/bin/ruff format --check functions emulators tests benchmarks

typecheck: install
	$(VENV)/bin/mypy

unit: install
	$(VENV)/bin/pytest -m "not slow"

test: lint typecheck serverless-devs
	$(VENV)/bin/pytest

bench: install
	$(PY) -m benchmarks

soak: install
	DWNOTIFY_SOAK=1 $(VENV)/bin/pytest tests/test_soak.py tests/test_diff.py tests/test_crash.py tests/test_fuzz.py tests/test_faults.py

clean:
	rm -rf build .dwnotify

# The FC code package in $(BUILD_DIR) (default build/code, the folder s.yaml deploys) for python$(FC_PYTHON).
build: install
	$(PY) scripts/build.py --python $(FC_PYTHON) --out $(or $(BUILD_DIR),build/code)
