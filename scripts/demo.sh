#!/usr/bin/env bash
# The whole system, end to end, on this machine:
#   setup + build, generate the demo avatar and models, speak a sentence (espeak-ng),
#   start the inference (:50051) and compositing (:50052) servers as two processes on
#   loopback, stream the sentence through them with the client, save the frames, an MP4
#   with sound and a contact sheet, print the summary, stop the servers, and print the
#   browser page's URL. `scripts/demo.sh --live` keeps the servers up for the browser
#   (the compositing server serves the page on :$WEB_PORT, default 8080) until Ctrl-C.
# Outputs go to $OUT (default: out/).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/out}
INFER_PORT=${INFER_PORT:-50051}
COMP_PORT=${COMP_PORT:-50052}
WEB_PORT=${WEB_PORT:-8080}
LIVE=0
for arg in "$@"; do
  case "$arg" in
    --live) LIVE=1 ;;
    *) echo "usage: scripts/demo.sh [--live]" >&2; exit 2 ;;
  esac
done

bash scripts/setup.sh
BIN=$ROOT/build/lipsync
mkdir -p "$OUT"

echo "[demo] generating the demo avatar and models in $OUT/models"
"$BIN" make-demo --out "$OUT/models"

echo "[demo] speaking a sentence with espeak-ng -> $OUT/speech.wav"
espeak-ng -s 150 -w "$OUT/speech.wav" \
  "Hello! This avatar is generated in real time. Watch the mouth open on every syllable, and close in the pauses." 

cat > "$OUT/inference.yaml" <<YAML
server:
  port: "127.0.0.1:$INFER_PORT"
  worker_count_per_gpu: 2
  queue_size: 50
gpus:
  enabled: true
  count: 0
onnx:
  use_cuda: true
capacity:
  max_models_per_gpu: 100
  eviction_policy: "lru"
model_root: "$OUT/models"
logging:
  level: "info"
YAML
cat > "$OUT/compositing.yaml" <<YAML
server:
  port: "127.0.0.1:$COMP_PORT"
inference_server:
  url: "127.0.0.1:$INFER_PORT"
  timeout_seconds: 30
  max_retries: 3
capacity:
  max_models: 100
output:
  format: "jpeg"
  jpeg_quality: 85
  feather_px: 6
model_root: "$OUT/models"
logging:
  level: "info"
web:
  host: "127.0.0.1"
  port: $WEB_PORT
YAML

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

wait_ready() {  # $1 = log file, $2 = name
  for _ in $(seq 1 600); do
    grep -q "Ready to accept connections" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "[demo] $2 did not start; its log:" >&2
  cat "$1" >&2
  exit 1
}

echo "[demo] starting the inference server on :$INFER_PORT (log: $OUT/inference.log)"
"$BIN" inference --config "$OUT/inference.yaml" >"$OUT/inference.log" 2>&1 &
pids+=($!)
wait_ready "$OUT/inference.log" "inference server"
echo "[demo] starting the compositing server on :$COMP_PORT (log: $OUT/compositing.log)"
"$BIN" compositing --config "$OUT/compositing.yaml" >"$OUT/compositing.log" 2>&1 &
pids+=($!)
wait_ready "$OUT/compositing.log" "compositing server"

echo "[demo] streaming the sentence through both servers"
"$BIN" client --server "127.0.0.1:$COMP_PORT" --model demo --audio "$OUT/speech.wav" \
  --batch-size 25 --save "$OUT/run"

PAGE_URL="http://127.0.0.1:$WEB_PORT/?avatar=demo"
if [ "$LIVE" = 1 ]; then
  echo
  echo "[demo] live: open $PAGE_URL in a browser (Chrome/Chromium: WebCodecs; the microphone"
  echo "       needs http://localhost or HTTPS). Type a sentence, upload a WAV or speak. Ctrl-C stops."
  wait
fi
cleanup
trap - EXIT
echo
echo "[demo] done. Outputs:"
echo "  video with sound : $OUT/run/demo.mp4"
echo "  contact sheet    : $OUT/run/contact_sheet.png"
echo "  frames           : $OUT/run/frames/"
echo "  server logs      : $OUT/inference.log, $OUT/compositing.log"
echo
echo "[demo] the browser page (live sessions): $PAGE_URL"
echo "       run 'scripts/demo.sh --live' to keep the servers up for it"
