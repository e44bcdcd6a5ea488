#!/usr/bin/env bash
# A long WebRTC viewing (issue 13 "Must show": the A/V offset after 10 minutes): Debian's
# janus, the real `lipsync serve` and one headless-chromium viewer of a session over
# WebRTC (tests/web/webrtc_page_test.mjs with WEBRTC_BENCH_MINUTES) for MINUTES, with a
# 4-beep WAV spoken every 20 s. Prints the A/V offset where the viewer sees and hears it
# (web/app.js "rtcSync": burned frame index of each presented frame vs beeps in the
# received sound; resolution one frame, 40 ms) for the first and the last minute and for
# the whole run, getStats fps, freezes, dropped frames, concealed samples and jitter
# buffer delays, and the load average; writes build/webrtc-bench/figures.json.
# `start [ROUNDS] [VARIANTS]` compares instead the first 25 s after subscribing, side by
# side in one run: ROUNDS (default 4) x each variant (page query strings, comma separated;
# default "rtcDelay=0," = the browser's own receiver delays vs the page's matched
# jitterBufferTarget), alternating, each a fresh page and session playing the WAV at once,
# ~10 s and ~20 s after its frames are matched; prints the offsets of each WAV per variant.
# Not part of the tests.
# Usage: bench/web/webrtc_bench.sh [MINUTES]   (default 10; needs build/lipsync, janus,
#        chromium, node; playwright-core from build/web-test, see tests/web/page_test.sh)
#        bench/web/webrtc_bench.sh start [ROUNDS] [VARIANTS]
#        WEBRTC_BENCH_QUERY=rtcDelay=0 bench/web/webrtc_bench.sh 2   (the long viewing's page
#        query; each reading prints the page's jitterBufferTarget)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if [ "${1:-}" = start ]; then
  export WEBRTC_BENCH_START=${2:-4} WEBRTC_BENCH_VARIANTS=${3:-rtcDelay=0,}
  what="first 25 s after subscribing, $WEBRTC_BENCH_START rounds of '$WEBRTC_BENCH_VARIANTS'"
else
  export WEBRTC_BENCH_MINUTES=${1:-${MINUTES:-10}}
  what="$WEBRTC_BENCH_MINUTES min"
fi
export WORK=${WORK:-$ROOT/build/webrtc-bench}
export PLAYWRIGHT_DIR=${PLAYWRIGHT_DIR:-$ROOT/build/web-test}
mkdir -p "$WORK"
echo "[webrtc-bench] $what; load at start: $(cat /proc/loadavg)"
"$ROOT/tests/web/webrtc_page_test.sh" "$ROOT/build" | grep --line-buffered -v '^demo:\|^model_root'
echo "[webrtc-bench] load at end: $(cat /proc/loadavg)"
echo "figures: $WORK/figures.json"
