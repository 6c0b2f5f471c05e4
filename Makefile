# The two set-up commands of the README, and the pieces they are made of.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: serve test check lint typecheck imports promtool pytest setup setup-serve setup-test

# Runs the main job: the webhook on https://127.0.0.1:8443 with fresh local certificates.
# Installs only what serving needs (no test or lint tools).
serve: setup-serve
	$(BIN)/virtdev webhook --host 127.0.0.1

# Runs every check CI runs: lint, types, and the whole test suite.
test: setup-test check pytest

setup:
	@scripts/setup.sh

setup-serve:
	@scripts/setup.sh --serve

setup-test:
	@scripts/setup.sh --test-tools

check: lint typecheck imports promtool

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy

# The layers (pyproject.toml's [tool.importlinter]): each package and module imports only downward.
imports:
	$(BIN)/lint-imports

# The Prometheus component's alerts (`promtool test rules`: each fires and stays quiet) and
# every query of its dashboard (`promtool check rules`); promtool is Debian's `prometheus`
# (scripts/setup-tools.sh). Skipped without promtool, failed without it under CI=true.
promtool:
	$(BIN)/pytest -q -p no:randomly tests/manifests/test_monitoring.py -k "not rendered"

pytest:
	$(BIN)/pytest
