#!/usr/bin/env bash
# Runs tests/deploy/k8s_schema_test.mjs on deploy/k8s/*.yaml with the npm validators
# kubernetes-models and @kubernetes/client-node (installed on first use into
# BUILD_DIR/deploy-test with npm, pinned versions). Exit 77 (ctest: skipped) when node
# or the packages cannot be had (e.g. no network for npm on first use).
# Usage: tests/deploy/k8s_schema_test.sh [BUILD_DIR]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
WORK=${WORK:-$BUILD/deploy-test}
mkdir -p "$WORK"
PACKAGES=(kubernetes-models@5.1.0 @kubernetes/client-node@1.4.0 yaml@2.9.1)
if ! command -v node >/dev/null; then
  echo "[k8s] skipped: needs node"
  exit 77
fi
if [ ! -f "$WORK/installed" ] || [ "$(cat "$WORK/installed")" != "${PACKAGES[*]}" ]; then
  echo "[k8s] installing ${PACKAGES[*]} into $WORK"
  if ! npm install --silent --no-audit --no-fund --prefix "$WORK" "${PACKAGES[@]}" >"$WORK/npm.log" 2>&1; then
    cat "$WORK/npm.log"
    echo "[k8s] skipped: npm could not install the validators"
    exit 77
  fi
  echo "${PACKAGES[*]}" >"$WORK/installed"
fi
K8S_NODE_MODULES="$WORK/node_modules" exec node "$ROOT/tests/deploy/k8s_schema_test.mjs" "$ROOT/deploy/k8s"
