#!/usr/bin/env bash
# A long WebRTC viewing (issue 13 "Must show": the A/V offset after 10 minutes): Debian's
# janus, the real `lipsync serve` and one headless-chromium viewer of a session over
# WebRTC (tests/web/webrtc_page_test.mjs with WEBRTC_BENCH_MINUTES) for MINUTES, with a
# 4-beep WAV spoken every 20 s. Prints the A/V offset where the viewer sees and hears it
# (web/app.js "rtcSync": burned frame index of each presented frame vs beeps in the
# received sound; resolution one frame, 40 ms) for the first and the last minute and for
# the whole run, getStats fps, freezes, dropped frames, concealed samples and jitter
# buffer delays, and the load average; writes build/webrtc-bench/figures.json.
# Not part of the tests.
# Usage: bench/web/webrtc_bench.sh [MINUTES]   (default 10; needs build/lipsync, janus,
#        chromium, node; playwright-core from build/web-test, see tests/web/page_test.sh)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export WEBRTC_BENCH_MINUTES=${1:-${MINUTES:-10}}
export WORK=${WORK:-$ROOT/build/webrtc-bench}
export PLAYWRIGHT_DIR=${PLAYWRIGHT_DIR:-$ROOT/build/web-test}
mkdir -p "$WORK"
echo "[webrtc-bench] $WEBRTC_BENCH_MINUTES min; load at start: $(cat /proc/loadavg)"
"$ROOT/tests/web/webrtc_page_test.sh" "$ROOT/build" | grep -v '^demo:\|^model_root'
echo "[webrtc-bench] load at end: $(cat /proc/loadavg)"
echo "figures: $WORK/figures.json"
