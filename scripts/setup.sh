#!/usr/bin/env bash
# Install what virtdev needs on a fresh Debian machine, idempotently: the system tools the tests
# drive (curl, openssl) and the project in a virtualenv.
#   --serve       only what serving needs (`make serve`): the project and its dependencies
#   (no option)   also the test and lint tools (pytest, ruff, mypy, ...)
#   --test-tools  also the manifest checkers (kubectl, kubernetes-validate, checkov): `make test`
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
mode=${1:-}

need_apt=()
for tool in curl openssl; do  # curl: the README's first steps after `make serve`
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

# One stamp per level: a full install also satisfies --serve; a --serve install is completed,
# not redone, by the next full one.
full="$VENV/.installed"
serve="$VENV/.installed-serve"
install() {
  [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip
  "$VENV/bin/pip" install -q --disable-pip-version-check -e "$1"
}
if [ "$mode" = --serve ]; then
  if { [ ! -f "$full" ] || [ pyproject.toml -nt "$full" ]; } &&
     { [ ! -f "$serve" ] || [ pyproject.toml -nt "$serve" ]; }; then
    install .
    touch "$serve"
  fi
  exit 0
fi
if [ ! -f "$full" ] || [ pyproject.toml -nt "$full" ]; then
  install '.[test]'
  touch "$full" "$serve"
fi

if [ "$mode" = --test-tools ]; then
  scripts/setup-tools.sh  # kubectl, kubernetes-validate and checkov for tests/manifests
fi
