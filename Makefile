# Two commands for a newcomer: `make dev` starts the whole local stack, `make test` runs every check.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install bytecode dev test lint format bench clean

$(BIN)/invsaga: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(BIN)/invsaga

# Bytecode for our packages, written even where PYTHONDONTWRITEBYTECODE is set. Temporal's workflow
# sandbox re-imports the workflow module for every workflow run; without a .pyc it compiles the source
# each time, in several threads at once, and CPython 3.11 can fail compiling in parallel threads
# ("AST constructor recursion depth mismatch", python/cpython#106905): once seen in the API fuzz test.
bytecode: install
	$(BIN)/python -m compileall -q invsaga workflows activities workers bench

dev: bytecode
	$(BIN)/invsaga dev

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint bytecode
	$(BIN)/pytest

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: bytecode
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .data .mypy_cache .pytest_cache .ruff_cache
