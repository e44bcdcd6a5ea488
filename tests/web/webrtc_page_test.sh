#!/usr/bin/env bash
# Runs tests/web/webrtc_page_test.mjs: Debian's janus (shipped deploy/janus config), the
# real `lipsync serve` with a webrtc section, Debian's coturn when installed (relay-only
# phase), and the page with the WebRTC transport in
# Debian's headless chromium (playwright-core, installed on first use like page_test.sh).
# Exit 77 (ctest: skipped) when janus, chromium, node or playwright-core are missing.
# Usage: tests/web/webrtc_page_test.sh [BUILD_DIR]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
PLAYWRIGHT_DIR=${PLAYWRIGHT_DIR:-$BUILD/web-test}
WORK=${WORK:-$BUILD/webrtc-test}
mkdir -p "$WORK" "$PLAYWRIGHT_DIR"
WORK=$(cd "$WORK" && pwd)
PLAYWRIGHT_DIR=$(cd "$PLAYWRIGHT_DIR" && pwd)
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if ! command -v node >/dev/null || [ ! -x "$CHROMIUM" ] || [ ! -x /usr/bin/janus ]; then
  echo "[webrtc-page-test] skipped: needs node, $CHROMIUM and /usr/bin/janus"
  exit 77
fi
# Both page tests share one install and run side by side under ctest -j: the first
# installs under the lock, the other waits for it (else it finds a half install).
exec 9>"$PLAYWRIGHT_DIR/.install.lock"
flock 9
if [ ! -d "$PLAYWRIGHT_DIR/node_modules/playwright-core" ]; then
  echo "[webrtc-page-test] installing playwright-core into $PLAYWRIGHT_DIR"
  if ! npm install --silent --no-audit --no-fund --prefix "$PLAYWRIGHT_DIR" playwright-core@1 >"$WORK/npm.log" 2>&1; then
    cat "$WORK/npm.log"
    echo "[webrtc-page-test] skipped: npm could not install playwright-core"
    exit 77
  fi
fi
flock -u 9
export LIPSYNC_BIN=${LIPSYNC_BIN:-$BUILD/lipsync} WORK PLAYWRIGHT_DIR CHROMIUM ROOT
exec node "$ROOT/tests/web/webrtc_page_test.mjs"
