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

.PHONY: install serverless-devs demo test lint typecheck unit bench soak mutate build clean

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

# Mutation run over the pure core (not part of `make test`): what is mutated and which tests judge it is
# [tool.mutmut] in pyproject.toml. mutmut works in a scratch copy, $(MUTATE_DIR), laid out as it expects
# (functions/dwnotify as src/dwnotify); nothing under functions/ is rewritten. Prints the counts and the
# diff of every mutant the tests left alive.
MUTATE_DIR := build/mutate
MUTMUT := $(CURDIR)/$(VENV)/bin/mutmut
MUTATE_JOBS ?= $(shell nproc 2>/dev/null || echo 2)

mutate: install
	rm -rf $(MUTATE_DIR)
	mkdir -p $(MUTATE_DIR)/src
	cp -R functions/dwnotify $(MUTATE_DIR)/src/dwnotify
	cp -R pyproject.toml tests emulators $(MUTATE_DIR)/
	cd $(MUTATE_DIR) && start=$$(date +%s) && $(MUTMUT) run --max-children $(MUTATE_JOBS) && \
		echo "mutmut run took $$(( $$(date +%s) - start ))s"
	cd $(MUTATE_DIR) && $(MUTMUT) export-cicd-stats >/dev/null && $(CURDIR)/$(PY) -c 'import json; \
		print("killed %(killed)d, survived %(survived)d, timeout %(timeout)d, no tests %(no_tests)d, " \
		"suspicious %(suspicious)d, segfault %(segfault)d (of %(total)d mutants)" \
		% json.load(open("mutants/mutmut-cicd-stats.json")))'
	cd $(MUTATE_DIR) && $(MUTMUT) results > mutants/alive.txt && cat mutants/alive.txt && \
		for name in $$(sed -n 's/^ *\([^ :]*\): .*/\1/p' mutants/alive.txt); do $(MUTMUT) show "$$name"; done

clean:
	rm -rf build .dwnotify

# The FC code package in $(BUILD_DIR) (default build/code, the folder s.yaml deploys) for python$(FC_PYTHON).
build: install
	$(PY) scripts/build.py --python $(FC_PYTHON) --out $(or $(BUILD_DIR),build/code)
