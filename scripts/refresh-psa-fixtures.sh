#!/usr/bin/env bash
# Refresh tests/fixtures/psa/baseline from kubernetes/pod-security-admission: its TestFixtures
# writes, for every policy version, pods that baseline must allow and pods it must refuse
# (test/testdata/baseline/v1.N/{pass,fail}/*.yaml). They are copied unchanged, every version;
# tests/webhook/rules/test_psa_fixtures.py posts each one to virtdev at its version.
#
# usage: scripts/refresh-psa-fixtures.sh GIT_DIR [COMMIT]
#   GIT_DIR  a clone (bare or not) of https://github.com/kubernetes/pod-security-admission
#   COMMIT   default: master. Write the commit into tests/fixtures/psa/README.md afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:?usage: $0 GIT_DIR [COMMIT]}
rev=${2:-master}
commit=$(git -C "$src" rev-parse --verify "$rev^{commit}")
out=tests/fixtures/psa/baseline
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git -C "$src" archive "$commit" test/testdata/baseline | tar -x -C "$tmp"
rm -rf "$out"
mkdir -p "$(dirname "$out")"
mv "$tmp/test/testdata/baseline" "$out"
echo "$out: $(find "$out" -name '*.yaml' | wc -l) fixtures from $commit"
