#!/usr/bin/env bash
# Runs tests/web/page_test.mjs: the real page in Debian's headless chromium driven by
# playwright-core (installed on first use into build/web-test with npm), against the
# real `lipsync serve`. Exit 77 (ctest: skipped) when chromium, node or playwright-core
# cannot be had (e.g. no network for npm on first use).
# Usage: tests/web/page_test.sh [BUILD_DIR]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
WORK=${WORK:-$BUILD/web-test}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
mkdir -p "$WORK"
if ! command -v node >/dev/null || [ ! -x "$CHROMIUM" ]; then
  echo "[page-test] skipped: needs node and $CHROMIUM"
  exit 77
fi
# Both page tests share one install and run side by side under ctest -j: the first
# installs under the lock, the other waits for it (else it finds a half install).
exec 9>"$WORK/.install.lock"
flock 9
if [ ! -d "$WORK/node_modules/playwright-core" ]; then
  echo "[page-test] installing playwright-core into $WORK"
  if ! npm install --silent --no-audit --no-fund --prefix "$WORK" playwright-core@1 >"$WORK/npm.log" 2>&1; then
    cat "$WORK/npm.log"
    echo "[page-test] skipped: npm could not install playwright-core"
    exit 77
  fi
fi
flock -u 9
export LIPSYNC_BIN=${LIPSYNC_BIN:-$BUILD/lipsync} WORK PLAYWRIGHT_DIR=$WORK CHROMIUM
exec node "$ROOT/tests/web/page_test.mjs"
