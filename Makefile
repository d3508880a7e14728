# The two set-up commands of README.md: `make demo` and `make test`.
# Each creates .venv and installs rxjobs into it (editable, with test tools) when needed.
# `make test-full` is `make test` with the fault, load and fuzz trials at their full counts,
# and line and branch coverage, which must reach the floor of [tool.coverage.report] fail_under.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-full bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/rxjobs demo

test: $(STAMP)
	bash .ci/install-system-deps
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

test-full: $(STAMP)
	bash .ci/install-system-deps
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	RXJOBS_FULL_TRIALS=1 $(BIN)/python -m pytest --cov --cov-report=term-missing:skip-covered

bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache .coverage .coverage.*
