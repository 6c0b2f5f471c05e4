#!/usr/bin/env bash
# Install checkov into a virtualenv of its own (.venv-checkov), idempotently: checkov pins many
# dependencies exactly, which would fight the project's own in `.venv`. tests/manifests runs it
# over the rendered manifests and the Dockerfile.
set -euo pipefail
cd "$(dirname "$0")/.."
CHECKOV_VENV=${CHECKOV_VENV:-.venv-checkov}
CHECKOV_VERSION=3.3.30

stamp="$CHECKOV_VENV/.installed"
if [ ! -f "$stamp" ] || [ scripts/setup-checkov.sh -nt "$stamp" ]; then
  python3 -m venv "$CHECKOV_VENV"
  "$CHECKOV_VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip
  "$CHECKOV_VENV/bin/pip" install -q --disable-pip-version-check "checkov==$CHECKOV_VERSION"
  "$CHECKOV_VENV/bin/checkov" --version >/dev/null
  touch "$stamp"
fi
