# Fleetcore: `make run` starts the platform, `make test` runs the whole suite.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION := 0.13.8
VENV := .venv
BIN := $(VENV)/bin
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
export UV_PYTHON_DOWNLOADS := never
export UV_COMPILE_BYTECODE := 1
export UV_LINK_MODE := copy

.PHONY: help install system-deps run test lint audit fmt bench clean

help:
	@echo "make run     install, then start Fleetcore on SQLite + the embedded broker (http://127.0.0.1:8000)"
	@echo "make test    install, then lint, type-check and run every test (SQLite and PostgreSQL)"
	@echo "make bench   run the benchmarks under bench/ and write bench/report.json"
	@echo "make lint    ruff and mypy only"
	@echo "make audit   known vulnerabilities in the locked dependencies (pip-audit)"

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

# Idempotent: re-syncs only when the lock or a project file changed.
$(VENV)/.installed: $(UV) uv.lock pyproject.toml packages/*/pyproject.toml
	$(UV) sync --frozen --all-packages --python 3.11
	touch $@

install: $(VENV)/.installed

# What the tests need from Debian: PostgreSQL 15, Mosquitto, Prometheus, Chromium (dashboard tests).
system-deps:
	@scripts/system-deps.sh

run: install
	FLEETCORE_ENVIRONMENT=$${FLEETCORE_ENVIRONMENT:-development} $(BIN)/fleetcore serve --demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

audit: install
	UV=$(UV) scripts/audit-deps.sh

# Three workers on this 2-core machine, a file each at a time (a file's tests share its
# fixtures and order): the suite waits on servers and subprocesses much of the time, so a
# third worker fills the cores' idle time (pytest 13:25 with two, 11:41-12:50 with three, fresh
# clones, quiet). TEST_WORKERS=0 runs it serially.
# The 15 slowest tests are listed at the end: where the suite's time goes.
# Bytecode is cached even where PYTHONDONTWRITEBYTECODE is set (this machine's image sets it):
# else every `fleetcore` process the tests start, and every worker's rewritten test modules,
# compile from source again.
TEST_WORKERS ?= 3
test: install system-deps lint audit
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/pytest --durations=15 $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

bench: install system-deps
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .tools .mypy_cache .ruff_cache .pytest_cache
