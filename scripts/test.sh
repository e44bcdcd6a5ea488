#!/usr/bin/env bash
# Sets everything up (packages, ONNX Runtime, build) and runs the whole test suite.
# Benchmarks, soaks and GPU checks are separate commands (docs/PERFORMANCE.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "[test] running the suite (ctest, build/)"
ctest --test-dir build --output-on-failure -j"$(nproc)" --timeout 600 "$@"
