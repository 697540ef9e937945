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

# Bytecode for our packages, written even where PYTHONDONTWRITEBYTECODE is set: Temporal's workflow
# sandbox re-imports a workflow's modules for every workflow run, and without a .pyc compiles them again.
bytecode: install
	$(BIN)/python -m compileall -q invsaga workflows activities workers bench

dev: bytecode
	$(BIN)/invsaga dev

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# CPython before 3.11.8 and 3.12.2 keeps one recursion counter for every ast.parse, so two at once
# (a garbage collection can switch threads mid-parse) fail with "AST constructor recursion depth
# mismatch" (python/cpython#106905). 3.11's tracebacks call ast.parse to place their carets, and a
# test process formats tracebacks in several threads (the API's, the SDK's) while pytest parses a
# failing test's source: CI once ended in an INTERNALERROR so. Without column tables (PEP 657's
# PYTHONNODEBUGRANGES) a traceback parses nothing; pytest's own parse is then the only one.
test: lint bytecode
	PYTHONNODEBUGRANGES=1 $(BIN)/pytest

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: bytecode
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .data .mypy_cache .pytest_cache .ruff_cache
