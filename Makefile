# The two set-up commands of the README, and the pieces they are made of.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: serve test check lint typecheck pytest setup

# Runs the main job: the webhook on https://127.0.0.1:8443 with fresh local certificates.
serve: setup
	$(BIN)/virtdev webhook --host 127.0.0.1

# Runs every check CI runs: lint, types, and the whole test suite.
test: setup check pytest

setup:
	@scripts/setup.sh

check: lint typecheck

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy

pytest:
	$(BIN)/pytest
