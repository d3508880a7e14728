# The two set-up commands of README.md: `make demo` and `make test`.
# `make demo` installs rxjobs alone (editable) into .venv and runs `rxjobs demo`;
# `make test` installs it with its test extra and runs the gates and every test.
# PYTHON and VENV may be given: `make demo PYTHON=python3.10 VENV=.venv-3.10` (what .ci/run does).
# `make test-full` is `make test` with the fault, load and fuzz trials at their full counts,
# and line and branch coverage, which must reach the floor of [tool.coverage.report] fail_under.
# Both run pytest on TEST_WORKERS processes (pytest-xdist, `--dist loadgroup` from pyproject's
# addopts: the tests that share a module's cluster, JVM or browser are marked for one worker, see
# tests/conftest.py); `make test TEST_WORKERS=0` runs them serially, in one process.

PYTHON ?= python3
VENV   ?= .venv
TEST_WORKERS ?= 2
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check
STAMP  := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo

.PHONY: demo test test-full bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# rxjobs and its own dependencies: all the demo needs.
$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(PIP) -e .
	touch $@

# rxjobs with its test extra (the engines, the page, the test and lint tools).
$(STAMP): pyproject.toml | $(BIN)/python
	$(PIP) -e '.[test]'
	touch $@ $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/rxjobs demo

test: $(STAMP)
	bash .ci/install-system-deps
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

test-full: $(STAMP)
	bash .ci/install-system-deps
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	RXJOBS_FULL_TRIALS=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --cov --cov-report=term-missing:skip-covered

bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .venv-3.* build *.egg-info src/*.egg-info .pytest_cache .ruff_cache .coverage .coverage.*
