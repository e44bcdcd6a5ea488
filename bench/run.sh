#!/usr/bin/env bash
# The whole performance picture in one command (see docs/PERFORMANCE.md):
#
#   bash bench/run.sh [--build DIR] [--out DIR] [--models DIR] [--long]
#                     [--skip-e2e] [--skip-memory] [--skip-stages] [--memory-frames N]
#
# Builds what it needs (lipsync, the stage benchmarks) in --build (default build/),
# then measures, each compared figure side by side with its baseline in this run:
#   1. per-frame stage costs on one core (bench/compositing, bench/jpeg, bench/audio):
#      visual input, output conversion, resize+paste, JPEG full vs region, and a whole
#      frame with full frames + full JPEG vs compact backgrounds + region JPEG;
#   2. memory per tenant and avatar load time for a 523-frame 1280x720 avatar
#      (compact vs full decoded frames);
#   3. end to end through both real servers (lipsync inference + lipsync compositing on
#      loopback, temp configs, CPU provider), driven by `lipsync client`:
#      (b) bench model through both servers vs raw ORT Run (bench/inference) on the same
#          model and batch;
#      streams 1/4/8 with the demo model: frames/s, p50/p99 latency per batch;
#      (c) 8 streams of batch 1 with dynamic batching vs 1 stream of batch 8, and
#          without dynamic batching (bench model);
#      bytes per frame on each link; model load time.
# Prints a table at the end (also in OUT/summary.txt) and writes OUT/latency.png.
# Default run: about 10 minutes on a 2-vCPU box; --long: more batches / longer timings.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD="$ROOT/build"
OUT="/tmp/lipsync-bench-$(date +%Y%m%d-%H%M%S)"
MODELS="/tmp/lipsync-bench-models"
LONG=0
SKIP_E2E=0
SKIP_MEMORY=0
SKIP_STAGES=0
MEMORY_FRAMES=523

while [ $# -gt 0 ]; do
  case "$1" in
    --build) BUILD=$(realpath -m "$2"); shift 2 ;;
    --out) OUT=$(realpath -m "$2"); shift 2 ;;
    --models) MODELS=$(realpath -m "$2"); shift 2 ;;
    --long) LONG=1; shift ;;
    --skip-e2e) SKIP_E2E=1; shift ;;
    --skip-memory) SKIP_MEMORY=1; shift ;;
    --skip-stages) SKIP_STAGES=1; shift ;;
    --memory-frames) MEMORY_FRAMES="$2"; shift 2 ;;
    -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/run.sh: unknown flag $1 (see --help)" >&2; exit 2 ;;
  esac
done

mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
log() { echo "== $*" >&2; }
row() { printf '%-58s %s\n' "$1" "$2" | tee -a "$SUMMARY" >/dev/null; }

if [ "$LONG" = 1 ]; then
  MIN_TIME=2; RAW_SECONDS=30; E2E_BATCHES=10; SWEEP_BATCHES=12; DYN_BATCHES=6
else
  MIN_TIME=0.3; RAW_SECONDS=10; E2E_BATCHES=4; SWEEP_BATCHES=4; DYN_BATCHES=2
fi
E2E_BATCH=4     # bench model frames per batch for (b)
SWEEP_BATCH=8   # demo model frames per batch for the stream sweep

# ---------------------------------------------------------------------------- build
log "building in $BUILD (-j2)"
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >"$OUT/cmake.log" 2>&1
fi
TARGETS=(compositing_bench avatar_memory_bench prepared_store_bench jpeg_bench audio_bench)
[ "$SKIP_E2E" = 0 ] && TARGETS+=(lipsync inference_bench)
cmake --build "$BUILD" -j2 --target "${TARGETS[@]}" >"$OUT/build.log" 2>&1 ||
  { echo "build failed; see $OUT/build.log" >&2; tail -20 "$OUT/build.log" >&2; exit 1; }

field() { awk -v k="$1" '$1 == k { print $2 }' "$2"; }

# ---------------------------------------------------------------------------- stages
if [ "$SKIP_STAGES" = 0 ]; then
log "stage benchmarks (one core)"
taskset -c 0 "$BUILD/bench/compositing/compositing_bench" --benchmark_min_time="$MIN_TIME" \
  >"$OUT/compositing_bench.txt" 2>&1
taskset -c 0 "$BUILD/bench/jpeg/jpeg_bench" --benchmark_min_time="$MIN_TIME" \
  >"$OUT/jpeg_bench.txt" 2>&1
taskset -c 0 "$BUILD/bench/audio/audio_bench" --benchmark_min_time="$MIN_TIME" \
  >"$OUT/audio_bench.txt" 2>&1
C="$OUT/compositing_bench.txt"
{
  echo "## Per-frame CPU cost, 1280x720 demo avatar, one core (ms)"
} >>"$SUMMARY"
row "visual input build (crop->328, 6x320x320 float)" "$(field visual_input_ms "$C")"
row "visual input build, uint8 form (VISUAL_UINT8)" "$(field visual_input_u8_ms "$C")"
row "output conversion, uint8 planar BGR -> RGB" "$(field output_to_rgb_uint8_ms "$C")"
row "output conversion, float32 planar BGR -> RGB" "$(field output_to_rgb_float_ms "$C")"
row "resize + paste, synctalk328" "$(field paste_synctalk328_ms "$C")"
row "resize + paste, resize (Go original's)" "$(field paste_resize_ms "$C")"
row "JPEG full frame q75" "$(field jpeg_full_ms "$C")"
row "JPEG region (byte-identical)" "$(field jpeg_region_ms "$C")"
row "whole frame, full frames + full JPEG" "$(field frame_full_ms "$C")"
row "whole frame, compact + region JPEG" "$(field frame_region_ms "$C")"
row "  region speed-up (x)" "$(field frame_speedup "$C")"
grep -E "speed-up" "$OUT/jpeg_bench.txt" | sed 's/^/  jpeg_bench 384px rect: /' >>"$SUMMARY" || true
AUDIO_US=$(awk '/PrepareBatchAudio|BM_/ && /us/ {print; exit}' "$OUT/audio_bench.txt")
echo "  audio_bench: ${AUDIO_US:-see $OUT/audio_bench.txt}" >>"$SUMMARY"

fi

# ---------------------------------------------------------------------------- memory
if [ "$SKIP_MEMORY" = 0 ]; then
  log "memory per tenant, $MEMORY_FRAMES frames 1280x720"
  "$BUILD/bench/compositing/avatar_memory_bench" --frames "$MEMORY_FRAMES" --modes compact,full \
    >"$OUT/memory.txt" 2>&1
  echo "## Memory per tenant ($MEMORY_FRAMES frames 1280x720, preloaded)" >>"$SUMMARY"
  grep -E "^(raw|memory)" "$OUT/memory.txt" | sed 's/^/  /' >>"$SUMMARY"
  log "cold first batch: today vs the prepared avatar store, $MEMORY_FRAMES frames 1280x720"
  "$BUILD/bench/compositing/prepared_store_bench" --frames "$MEMORY_FRAMES" --rounds 3 \
    >"$OUT/prepared_store.txt" 2>&1
  echo "## Prepared avatar store ($MEMORY_FRAMES frames 1280x720, cold first batch of 8)" >>"$SUMMARY"
  sed -n '/^median/,$p' "$OUT/prepared_store.txt" | sed 's/^/  /' >>"$SUMMARY"
fi

# ---------------------------------------------------------------------------- end to end
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true
  done
  PIDS=()
}
trap cleanup EXIT

wait_listen() {  # log file -> prints the port
  local f=$1 i
  for i in $(seq 1 600); do
    if grep -q "listening on" "$f" 2>/dev/null; then
      grep -m1 "listening on" "$f" | sed -E 's/.*(port ([0-9]+)\)|:([0-9]+))$/\2\3/'
      return 0
    fi
    sleep 0.1
  done
  echo "server did not start; see $f" >&2
  tail -20 "$f" >&2
  return 1
}

# start_servers <name> <max_queue_delay_us> <max_batch_size>: both servers, sets COMP_PORT.
start_servers() {
  local name=$1 delay=$2 max_batch=$3
  cat >"$OUT/inference-$name.yaml" <<EOF
server:
  port: "127.0.0.1:0"
  worker_count_per_gpu: 8
  queue_size: 200
  max_batch_size: $max_batch
  max_queue_delay_us: $delay
  shutdown_grace_seconds: 5
gpus:
  enabled: false
onnx:
  use_cuda: false
  require_cuda: false
  intra_op_threads: 0
  inter_op_threads: 1
model_root: $MODELS
logging:
  level: "info"
EOF
  "$BUILD/lipsync" inference --config "$OUT/inference-$name.yaml" >"$OUT/inference-$name.log" 2>&1 &
  PIDS+=($!)
  local inf_port
  inf_port=$(wait_listen "$OUT/inference-$name.log")
  cat >"$OUT/compositing-$name.yaml" <<EOF
server:
  port: "127.0.0.1:0"
  max_batch_size: 64
  compositing_threads: 0
  shutdown_grace_seconds: 5
inference_server:
  url: "127.0.0.1:$inf_port"
  timeout_seconds: 600
  max_retries: 0
output:
  format: "jpeg"
  jpeg_quality: 75
  paste_mode: "synctalk328"
  region_jpeg: true
  compact_backgrounds: true
model_root: $MODELS
logging:
  level: "debug"                 # per-batch stage times in the log
  log_compositing_times: true
EOF
  "$BUILD/lipsync" compositing --config "$OUT/compositing-$name.yaml" \
    >"$OUT/compositing-$name.log" 2>&1 &
  PIDS+=($!)
  COMP_PORT=$(wait_listen "$OUT/compositing-$name.log")
}

# client <log> <args...>: runs lipsync client against the compositing server.
client() {
  local f=$1
  shift
  "$BUILD/lipsync" client --server "127.0.0.1:$COMP_PORT" --quiet --timeout 900 "$@" >"$f" 2>&1 ||
    { echo "client failed; see $f" >&2; tail -5 "$f" >&2; return 1; }
}
fps() { awk '/throughput:/ {print $2}' "$1"; }
p50() { awk '/latency\/batch:/ {print $3}' "$1"; }
p99() { awk '/latency\/batch:/ {print $6}' "$1"; }
bytes_line() { awk -F': *' '/bytes\/frame:/ {print $2}' "$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

if [ "$SKIP_E2E" = 0 ]; then
  log "models in $MODELS (lipsync make-demo; reused when up to date)"
  "$BUILD/lipsync" make-demo --out "$MODELS" --only demo,bench >"$OUT/make-demo.log" 2>&1

  # (b) bench model: raw ORT vs through both servers, same model and batch.
  log "(b) bench model, batch $E2E_BATCH: raw ORT Run"
  "$BUILD/bench/inference/inference_bench" --model "$MODELS/bench/checkpoint/model_best.onnx" \
    --batches "$E2E_BATCH" --clients 1,2 --seconds "$RAW_SECONDS" >"$OUT/raw_ort.txt" 2>&1
  RAW_FPS=$(awk -v b="$E2E_BATCH" '$1 == b && $2 == 1 {print $3}' "$OUT/raw_ort.txt")
  INF_FPS=$(awk -v b="$E2E_BATCH" '$1 == b && $2 == 1 {print $4}' "$OUT/raw_ort.txt")
  RAW2_FPS=$(awk -v b="$E2E_BATCH" '$1 == b && $2 == 2 {print $3}' "$OUT/raw_ort.txt")
  log "(b) bench model, batch $E2E_BATCH: through both servers"
  start_servers main 0 64
  # Warm-up (model load, ORT arena growth), as bench/inference warms up its clients.
  client "$OUT/warm_bench.txt" --model bench --batch-size "$E2E_BATCH" --batches 1
  client "$OUT/e2e_bench.txt" --model bench --batch-size "$E2E_BATCH" --batches "$E2E_BATCHES"
  E2E_FPS=$(fps "$OUT/e2e_bench.txt")
  # Two streams: one batch's CPU work and transfers overlap the other's inference.
  client "$OUT/e2e_bench_2.txt" --model bench --batch-size "$E2E_BATCH" --batches "$E2E_BATCHES" \
    --concurrency 2
  E2E2_FPS=$(fps "$OUT/e2e_bench_2.txt")
  LOAD_MS=$(grep -m1 "loaded model 'bench'" "$OUT/inference-main.log" | sed -E 's/.* in ([0-9.]+) ms.*/\1/')
  DEMO_LOAD_MS=""

  # Stream sweep with the demo model.
  log "streams 1/4/8, demo model, batch $SWEEP_BATCH"
  client "$OUT/warm_demo.txt" --model demo --batch-size 1 --batches 1
  DEMO_LOAD_MS=$(grep -m1 "loaded model 'demo'" "$OUT/inference-main.log" | sed -E 's/.* in ([0-9.]+) ms.*/\1/')
  for k in 1 4 8; do
    client "$OUT/streams_$k.txt" --model demo --batch-size "$SWEEP_BATCH" --batches "$SWEEP_BATCHES" \
      --concurrency "$k"
  done
  # Bytes per link: guide's mode (client sends the visual input) for contrast.
  client "$OUT/send_visual.txt" --model demo --batch-size "$SWEEP_BATCH" --batches 1 --send-visual
  # (c) with the bench model, where inference dominates as on a real deployment (with
  # the demo model the CPU pipeline of one stream is the limit, not the model).
  # Without dynamic batching first (this server pair has max_queue_delay_us 0).
  log "(c) 1 stream of batch 8 vs 8 streams of batch 1, bench model"
  client "$OUT/dyn_one_b8.txt" --model bench --batch-size 8 --batches "$DYN_BATCHES"
  client "$OUT/dyn_off_8x1.txt" --model bench --batch-size 1 --batches "$DYN_BATCHES" --concurrency 8
  cleanup
  # Dynamic batching: batches of up to 8 frames; a full batch runs at once, the 100 ms
  # window only caps the wait of a partial one. On this 2-core box the 8 streams' CPU
  # work (compositing, both RPCs) spreads their next requests over tens of ms while a
  # Run holds both cores, so a 20 ms window splits them into 6+2.
  start_servers dyn 100000 8
  client "$OUT/warm_dyn.txt" --model bench --batch-size 1 --batches 1
  # Brings the 8 streams into step (the first round straggles) before measuring.
  client "$OUT/warm_dyn_8x1.txt" --model bench --batch-size 1 --batches 1 --concurrency 8
  client "$OUT/dyn_on_8x1.txt" --model bench --batch-size 1 --batches "$DYN_BATCHES" --concurrency 8
  client "$OUT/dyn_on_one_b8.txt" --model bench --batch-size 8 --batches "$DYN_BATCHES"
  client "$OUT/warm_demo_dyn.txt" --model demo --batch-size 1 --batches 1
  AVATAR_LINE=$(grep -m1 "avatar 'demo' loaded" "$OUT/compositing-dyn.log" | sed -E 's/.*loaded: //')
  cleanup

  {
    echo "## End to end (both servers on loopback, CPU provider)"
  } >>"$SUMMARY"
  row "(b) bench model batch $E2E_BATCH: raw ORT Run frames/s" "${RAW_FPS:-n/a}"
  row "(b) bench model batch $E2E_BATCH: through both servers frames/s" "$E2E_FPS"
  row "(b)   servers / raw (goal >= 0.9)" "$(ratio "$E2E_FPS" "${RAW_FPS:-0}")"
  row "(b) inference server alone (bench/inference) frames/s" "${INF_FPS:-n/a}"
  row "(b) 2 clients: raw ORT Run frames/s" "${RAW2_FPS:-n/a}"
  row "(b) 2 streams: through both servers frames/s" "$E2E2_FPS"
  row "(b)   servers / raw, 2 and 2 (goal >= 0.9)" "$(ratio "$E2E2_FPS" "${RAW2_FPS:-0}")"
  row "(b) server time per batch: total / inference Run / composite (ms)" \
    "$(awk '/server \(mean\):/ {print $4 " / " $7 " / " $10}' "$OUT/e2e_bench.txt")"
  for k in 1 4 8; do
    row "demo model, $k stream(s) x batch $SWEEP_BATCH: FPS / p50 / p99 ms" \
      "$(fps "$OUT/streams_$k.txt") / $(p50 "$OUT/streams_$k.txt") / $(p99 "$OUT/streams_$k.txt")"
  done
  ONE=$(fps "$OUT/dyn_one_b8.txt")
  OFF=$(fps "$OUT/dyn_off_8x1.txt")
  ON=$(fps "$OUT/dyn_on_8x1.txt")
  ONE_DYN=$(fps "$OUT/dyn_on_one_b8.txt")
  row "(c) bench model, 1 stream x batch 8, no dynamic batching: FPS" "$ONE"
  row "(c) bench model, 8 streams x batch 1, no dyn. batching: FPS (ratio)" "$OFF ($(ratio "$OFF" "$ONE"))"
  row "(c) bench model, 8 streams x batch 1, dyn. batching: FPS (ratio)" "$ON ($(ratio "$ON" "$ONE"))"
  row "(c) bench model, 1 stream x batch 8, dyn. batching on: FPS" "$ONE_DYN"
  row "(c)   8 x batch 1 / 1 x batch 8, both with dyn. batching on" "$(ratio "$ON" "$ONE_DYN")"
  row "bytes/frame client<->compositing, server-side visual" "$(bytes_line "$OUT/streams_1.txt")"
  row "bytes/frame client<->compositing, guide's mode (--send-visual)" "$(bytes_line "$OUT/send_visual.txt")"
  row "bytes/frame compositing->inference (6x320x320 uint8 + 32x16x16 f32)" "614400 + 32768 B (guide: 2457600 + 32768 B)"
  row "bytes/frame inference->compositing (uint8; guide: float32)" "307200 B (guide: 1228800 B)"
  row "model load time, bench / demo (ms)" "${LOAD_MS:-n/a} / ${DEMO_LOAD_MS:-n/a}"
  row "compositing avatar 'demo' (log)" "${AVATAR_LINE:-n/a}"

  # Latency plot: p50 and p99 per batch for each end-to-end scenario.
  PLOT_DATA="$OUT/latency.tsv"
  : >"$PLOT_DATA"
  while IFS='|' read -r s label; do
    printf '%s\t%s\t%s\n' "$label" "$(p50 "$OUT/$s.txt")" "$(p99 "$OUT/$s.txt")" >>"$PLOT_DATA"
  done <<EOF
streams_1|demo, 1 stream x batch $SWEEP_BATCH
streams_4|demo, 4 streams x batch $SWEEP_BATCH
streams_8|demo, 8 streams x batch $SWEEP_BATCH
e2e_bench|bench, 1 stream x batch $E2E_BATCH
dyn_one_b8|bench, 1 stream x batch 8
dyn_off_8x1|bench, 8 x batch 1, no dyn. batching
dyn_on_8x1|bench, 8 x batch 1, dyn. batching
EOF
  bash "$ROOT/bench/plot_latency.sh" "$PLOT_DATA" "$OUT/latency.png" && row "latency plot" "$OUT/latency.png"
fi

echo
cat "$SUMMARY"
echo
echo "raw outputs: $OUT"
