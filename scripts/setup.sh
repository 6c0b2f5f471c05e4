#!/usr/bin/env bash
# Install everything virtdev's commands and tests need on a fresh Debian machine, idempotently:
# the system tools the tests drive (curl, openssl) and the project in a virtualenv; with
# --test-tools also the manifest checkers (kubectl, kubernetes-validate, checkov).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

need_apt=()
for tool in curl openssl; do
  command -v "$tool" >/dev/null 2>&1 || need_apt+=("$tool")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup: please install: ${need_apt[*]}" >&2
    exit 1
  fi
fi

stamp="$VENV/.installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip
  "$VENV/bin/pip" install -q --disable-pip-version-check -e '.[test]'
  touch "$stamp"
fi

if [ "${1:-}" = "--test-tools" ]; then
  scripts/setup-tools.sh  # kubectl, kubernetes-validate and checkov for tests/manifests
fi
