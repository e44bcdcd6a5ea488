#!/usr/bin/env bash
# Browser figures over repeated runs (issue 10 "Must show"): the real page in headless
# chromium against the real `lipsync serve` (tests/web/page_test.mjs), ROUNDS rounds of
# typed text, WAV upload and microphone + interrupt in one page session. Prints p50/p95
# of first speaking frame (per source), interrupt to idle, A/V offset (pixels vs played
# beeps; resolution one frame, 40 ms), speaking fps, and freezes; writes
# build/web-bench/figures.json. Not part of the tests.
# Usage: bench/web/page_bench.sh [ROUNDS]   (default 10; needs build/lipsync)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export PAGE_TEST_ROUNDS=${1:-${ROUNDS:-10}}
export WORK=${WORK:-$ROOT/build/web-bench}
mkdir -p "$WORK"
if [ ! -d "$WORK/node_modules" ] && [ -d "$ROOT/build/web-test/node_modules" ]; then
  ln -s "$ROOT/build/web-test/node_modules" "$WORK/node_modules"
fi
"$ROOT/tests/web/page_test.sh" "$ROOT/build" | grep -v '^demo:'
echo "figures: $WORK/figures.json"
