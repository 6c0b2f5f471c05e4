#!/usr/bin/env bash
# Regenerate the kubelet device plugin API stubs (agent/v1beta1/api_pb2*.py, .pyi) from
# agent/v1beta1/api.proto with the pinned grpcio-tools. The stubs are committed; the test
# tests/agent/test_protos.py runs this script into a temporary directory and fails on drift.
#
# usage: scripts/gen_protos.sh [OUTPUT_DIR]   (default: agent/v1beta1)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
out=${1:-agent/v1beta1}
mkdir -p "$out"
"$PYTHON" -m grpc_tools.protoc \
  --proto_path=agent/v1beta1 \
  --python_out="$out" \
  --pyi_out="$out" \
  --grpc_python_out="$out" \
  api.proto
# grpc_tools writes `import api_pb2`, which only works from inside the directory: make it
# relative to the package.
sed -i 's/^import api_pb2 as api__pb2$/from . import api_pb2 as api__pb2/' "$out/api_pb2_grpc.py"
# The generated .pyi writes bare `Mapping` in message constructors, which mypy --strict flags;
# the rest of the stub is precise, so only that check is switched off, for that file.
sed -i '1i # mypy: disable-error-code="type-arg"' "$out/api_pb2.pyi"
# api_pb2_grpc.pyi is written by hand (grpcio-tools makes none) and is not touched here.
