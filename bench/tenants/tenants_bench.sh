#!/usr/bin/env bash
# 11,000-tenant run (issue 11, "Must show"; docs/perf/tenants.md): makes TENANTS tenants
# under one model_root (hard links to one small demo tenant: each tenant is still loaded
# on its own), starts both servers as separate processes on free loopback ports with
# capacity caps far below the tenant count, times their start with every tenant
# present, then drives Zipf-popular traffic (bench/tenants/tenants_bench.cc) for a set
# time: hot/cold p50/p99, the cold-start split into avatar and model load, loads per
# second, resident memory (anonymous and file-backed) over time, ListModels over every
# tenant while traffic runs.
#
#   nice -n 5 bash bench/tenants/tenants_bench.sh [--tenants 11000] [--seconds 120]
#       [--streams 8] [--zipf 1.0] [--max-models 300] [--frames 25] [--size 640x360]
#       [--out out/tenants] [--no-build] [--prepare]
#   --prepare: build every tenant's prepared avatar file first (else each is built in the
#   background on first use, its first batch decoding only the frames it needs).
#
# Outputs in --out: report.md (also printed), requests.csv, memory.csv, startup.txt,
# inference.log, compositing.log. Exit status: the driver's (0: every request answered
# OK), 1 when a request failed, 2 for a usage error.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
TENANTS=11000
SECONDS_RUN=120
STREAMS=8
ZIPF=1.0
MAX_MODELS=300
FRAMES=25
SIZE=640x360
OUT=$ROOT/out/tenants
BUILD=1
PREPARE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --tenants) TENANTS=$2; shift 2 ;;
    --seconds) SECONDS_RUN=$2; shift 2 ;;
    --streams) STREAMS=$2; shift 2 ;;
    --zipf) ZIPF=$2; shift 2 ;;
    --max-models) MAX_MODELS=$2; shift 2 ;;
    --frames) FRAMES=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --prepare) PREPARE=1; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "tenants_bench.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
BIN=${LIPSYNC_BIN:-$ROOT/build/lipsync}
DRIVER=$ROOT/build/bench/tenants/tenants_bench
if [ "$BUILD" = 1 ]; then
  echo "[tenants] building lipsync and tenants_bench (through /tmp/lipsync-build.lock)"
  flock /tmp/lipsync-build.lock cmake --build "$ROOT/build" --target lipsync tenants_bench -j2 \
    >"$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log" >&2; exit 1; }
fi
mkdir -p "$OUT/bin"
cp "$BIN" "$OUT/bin/lipsync"
cp "$DRIVER" "$OUT/bin/tenants_bench"
BIN=$OUT/bin/lipsync
DRIVER=$OUT/bin/tenants_bench

W=${SIZE%x*}
H=${SIZE#*x}
BASE=$OUT/base
echo "[tenants] base tenant: $FRAMES frames ${W}x${H} (lipsync make-demo)"
"$BIN" make-demo --out "$BASE" --only demo --frames "$FRAMES" --width "$W" --height "$H" \
  >"$OUT/make-demo.log" 2>&1 || { cat "$OUT/make-demo.log" >&2; exit 1; }
MODELS=$OUT/models
mkdir -p "$MODELS"
"$DRIVER" populate --base "$BASE/demo" --model-root "$MODELS" --tenants "$TENANTS"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
INFER_PORT=$(free_port)
COMP_PORT=$(free_port)
while [ "$COMP_PORT" = "$INFER_PORT" ]; do COMP_PORT=$(free_port); done
mkdir -p "$OUT/store"

cat >"$OUT/inference.yaml" <<YAML
server:
  port: "127.0.0.1:$INFER_PORT"
  worker_count_per_gpu: 2
  queue_size: 64
  shutdown_grace_seconds: 10
gpus:
  enabled: true
  count: 0
onnx:
  use_cuda: false
capacity:
  max_models_per_gpu: $MAX_MODELS
  eviction_policy: "lru"
model_root: "$MODELS"
model_cache_dir: "$OUT/ortcache"
logging:
  level: "warn"
YAML
cat >"$OUT/compositing.yaml" <<YAML
server:
  port: "127.0.0.1:$COMP_PORT"
  shutdown_grace_seconds: 10
  avatar_store_dir: "$OUT/store"
inference_server:
  url: "127.0.0.1:$INFER_PORT"
  timeout_seconds: 30
capacity:
  max_models: $MAX_MODELS
  eviction_policy: "lru"
output:
  format: "jpeg"
  jpeg_quality: 75
model_root: "$MODELS"
web:
  port: 0
logging:
  level: "warn"
YAML

if [ "$PREPARE" = 1 ]; then
  echo "[tenants] preparing every avatar (lipsync prepare-avatar; progress in $OUT/prepare.log)"
  t0=$(date +%s)
  "$BIN" prepare-avatar --config "$OUT/compositing.yaml" >"$OUT/prepare.log" 2>&1 \
    || { tail -20 "$OUT/prepare.log" >&2; exit 1; }
  echo "[tenants] prepared in $(($(date +%s) - t0)) s"
fi

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# Starts `lipsync $1` and prints the seconds until its "Ready" line.
start_server() {  # name config
  local name=$1 config=$2 t0 pid
  t0=$(date +%s.%N)
  "$BIN" "$name" --config "$config" >"$OUT/$name.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  for _ in $(seq 1 1200); do
    if grep -q "Ready to accept connections" "$OUT/$name.log" 2>/dev/null; then
      echo "$pid $(echo "$(date +%s.%N) - $t0" | bc)"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || { tail -20 "$OUT/$name.log" >&2; return 1; }
    sleep 0.05
  done
  tail -20 "$OUT/$name.log" >&2
  return 1
}
# start_server runs in a process substitution: its PIDS+= is lost, so the pids are added here
# (else the servers outlive the script).
read -r INF_PID INF_START < <(start_server inference "$OUT/inference.yaml")
PIDS+=("$INF_PID")
echo "[tenants] inference server ready in ${INF_START} s with $TENANTS tenants under model_root (pid $INF_PID)"
read -r COMP_PID COMP_START < <(start_server compositing "$OUT/compositing.yaml")
PIDS+=("$COMP_PID")
echo "[tenants] compositing server ready in ${COMP_START} s (pid $COMP_PID)"
{
  echo "inference_start_s $INF_START"
  echo "compositing_start_s $COMP_START"
  echo "tenants $TENANTS"
} >"$OUT/startup.txt"

code=0
"$DRIVER" run --server "127.0.0.1:$COMP_PORT" --model-root "$MODELS" --tenants "$TENANTS" \
  --seconds "$SECONDS_RUN" --streams "$STREAMS" --zipf "$ZIPF" --store-dir "$OUT/store" \
  --compositing-pid "$COMP_PID" --inference-pid "$INF_PID" --out "$OUT" || code=$?
{
  echo
  echo "Server start with $TENANTS tenants under model_root: inference ${INF_START} s, compositing ${COMP_START} s."
  echo "Caps: $MAX_MODELS models per server (LRU); base tenant $FRAMES frames ${W}x${H}."
} | tee -a "$OUT/report.md"
echo "[tenants] files: $OUT/report.md $OUT/requests.csv $OUT/memory.csv"
exit "$code"
