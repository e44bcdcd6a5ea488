#!/usr/bin/env bash
# Cold-tenant first batch, idle-tenant memory and the hot path side by side (issue 11
# "Numbers to reach"; docs/perf/tenants.md). Makes the demo and bench tenants (523-frame
# 1280x720 avatar; demo model and the unet_328-sized bench model) plus MEM_TENANTS hard-
# linked copies of demo, prepares every avatar file, starts both servers as separate
# processes on free loopback ports (prepared avatar store + optimized-graph cache in the
# run folder), then runs bench/tenants/coldstart_bench.cc:
#   cold:   ROUNDS interleaved rounds per tenant of a hot batch of 8, then UnloadModel +
#           its files, prepared file and graph-cache entries dropped from the page cache,
#           and one batch of 8 timed at the client (with the server's split);
#   memory: resident memory of both servers per tenant loaded and left idle (m0 loaded
#           first to take the one-time costs, m1.. counted; run before the cold rounds);
#   hot:    only with --base BIN (the lipsync binary of an older commit): that build's
#           two servers beside this build's, HOT_ROUNDS rounds of 8 batches each,
#           alternating, on the demo tenant.
#
#   nice -n 5 bash bench/tenants/coldstart_bench.sh [--rounds 5] [--mem-tenants 9]
#       [--base /tmp/lipsync-base/build/lipsync] [--hot-rounds 10] [--out out/coldstart]
#       [--no-build] [--skip-cold] [--skip-memory] [--tenants demo,bench]
#       [--keep-graph-cache]
#   --keep-graph-cache: the optimized-graph cache entries stay in the page cache (only the
#   tenant's own files and prepared file are dropped): splits the disk read of the entry
#   from the rest of the model load.
#
# LIPSYNC_BIN / COLDSTART_BIN: other binaries than build/'s (copied into --out/bin first).
# Outputs in --out: cold.md, memory.md, hot.md (each also printed), *.log.
# Exit status: 0 when every step passed, 1 otherwise, 2 for a usage error.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
ROUNDS=5
MEM_TENANTS=9
BASE_BIN=
HOT_ROUNDS=10
OUT=$ROOT/out/coldstart
BUILD=1
COLD=1
MEMORY=1
COLD_TENANTS=demo,bench
DROP_GRAPH=1
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --mem-tenants) MEM_TENANTS=$2; shift 2 ;;
    --base) BASE_BIN=$2; shift 2 ;;
    --hot-rounds) HOT_ROUNDS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --skip-cold) COLD=0; shift ;;
    --skip-memory) MEMORY=0; shift ;;
    --tenants) COLD_TENANTS=$2; shift 2 ;;
    --keep-graph-cache) DROP_GRAPH=0; shift ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "coldstart_bench.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
if [ "$BUILD" = 1 ]; then
  echo "[coldstart] building lipsync and coldstart_bench (through /tmp/lipsync-build.lock)"
  flock /tmp/lipsync-build.lock cmake --build "$ROOT/build" --target lipsync coldstart_bench -j2 \
    >"$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log" >&2; exit 1; }
fi
mkdir -p "$OUT/bin"
cp "${LIPSYNC_BIN:-$ROOT/build/lipsync}" "$OUT/bin/lipsync.new"
mv "$OUT/bin/lipsync.new" "$OUT/bin/lipsync"
cp "${COLDSTART_BIN:-$ROOT/build/bench/tenants/coldstart_bench}" "$OUT/bin/coldstart_bench.new"
mv "$OUT/bin/coldstart_bench.new" "$OUT/bin/coldstart_bench"
BIN=$OUT/bin/lipsync
DRIVER=$OUT/bin/coldstart_bench

MODELS=$OUT/models
echo "[coldstart] tenants demo and bench: 523 frames 1280x720 (lipsync make-demo; kept if present)"
"$BIN" make-demo --out "$MODELS" --frames 523 --only demo,bench >"$OUT/make-demo.log" 2>&1 \
  || { tail -20 "$OUT/make-demo.log" >&2; exit 1; }
MEM_IDS=()
for i in $(seq 0 $((MEM_TENANTS - 1))); do
  MEM_IDS+=("m$i")
  [ -d "$MODELS/m$i" ] || cp -al "$MODELS/demo" "$MODELS/m$i"
done

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
# write_configs DIR INFER_PORT COMP_PORT NEW(1: prepared store + graph cache keys)
write_configs() {
  local dir=$1 infer=$2 comp=$3 new=$4
  mkdir -p "$dir"
  {
    echo "server:"
    echo "  port: \"127.0.0.1:$infer\""
    echo "  worker_count_per_gpu: 2"
    echo "  queue_size: 64"
    echo "  shutdown_grace_seconds: 10"
    echo "gpus:"
    echo "  enabled: true"
    echo "  count: 0"
    echo "onnx:"
    echo "  use_cuda: false"
    echo "model_root: \"$MODELS\""
    [ "$new" = 1 ] && echo "model_cache_dir: \"$dir/ortcache\""
    echo "logging:"
    echo "  level: \"warn\""
  } >"$dir/inference.yaml"
  {
    echo "server:"
    echo "  port: \"127.0.0.1:$comp\""
    echo "  shutdown_grace_seconds: 10"
    [ "$new" = 1 ] && echo "  avatar_store_dir: \"$OUT/store\""
    echo "inference_server:"
    echo "  url: \"127.0.0.1:$infer\""
    echo "  timeout_seconds: 120"
    echo "output:"
    echo "  format: \"jpeg\""
    echo "  jpeg_quality: 75"
    echo "model_root: \"$MODELS\""
    echo "web:"
    echo "  port: 0"
    echo "logging:"
    if [ "$new" = 1 ]; then  # one line per batch: visual input, inference, composite
      echo "  level: \"info\""
      echo "  log_compositing_times: true"
    else
      echo "  level: \"warn\""
    fi
  } >"$dir/compositing.yaml"
}

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# start_server BIN NAME DIR: starts `BIN NAME --config DIR/NAME.yaml`, prints its pid once
# its "Ready" line is logged.
start_server() {
  local bin=$1 name=$2 dir=$3 pid
  "$bin" "$name" --config "$dir/$name.yaml" >"$dir/$name.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 1200); do
    if grep -q "Ready to accept connections" "$dir/$name.log" 2>/dev/null; then
      echo "$pid"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || { tail -20 "$dir/$name.log" >&2; return 1; }
    sleep 0.05
  done
  tail -20 "$dir/$name.log" >&2
  return 1
}

NEW_INF=$(free_port)
NEW_COMP=$(free_port)
while [ "$NEW_COMP" = "$NEW_INF" ]; do NEW_COMP=$(free_port); done
write_configs "$OUT/new" "$NEW_INF" "$NEW_COMP" 1
mkdir -p "$OUT/store"
echo "[coldstart] preparing every avatar (lipsync prepare-avatar; kept when current)"
t0=$(date +%s)
"$BIN" prepare-avatar --config "$OUT/new/compositing.yaml" >"$OUT/prepare.log" 2>&1 \
  || { tail -20 "$OUT/prepare.log" >&2; exit 1; }
echo "[coldstart] prepared in $(($(date +%s) - t0)) s"

INF_PID=$(start_server "$BIN" inference "$OUT/new")
PIDS+=("$INF_PID")
COMP_PID=$(start_server "$BIN" compositing "$OUT/new")
PIDS+=("$COMP_PID")
echo "[coldstart] servers up: inference $NEW_INF (pid $INF_PID), compositing $NEW_COMP (pid $COMP_PID)"

code=0
if [ "$MEMORY" = 1 ] && [ "$MEM_TENANTS" -gt 0 ]; then
  echo "[coldstart] memory: ${MEM_IDS[*]} loaded and left idle"
  "$DRIVER" memory --server "127.0.0.1:$NEW_COMP" --tenants "$(IFS=,; echo "${MEM_IDS[*]}")" \
    --compositing-pid "$COMP_PID" --inference-pid "$INF_PID" --out "$OUT/memory.md" || code=1
fi
if [ "$COLD" = 1 ]; then
  echo "[coldstart] cold: $ROUNDS rounds, tenants $COLD_TENANTS (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  GRAPH_CACHE=$OUT/new/ortcache
  [ "$DROP_GRAPH" = 1 ] || GRAPH_CACHE=
  "$DRIVER" cold --server "127.0.0.1:$NEW_COMP" --tenants "$COLD_TENANTS" --rounds "$ROUNDS" \
    --model-root "$MODELS" --store-dir "$OUT/store" --cache-dir "$GRAPH_CACHE" \
    --out "$OUT/cold.md" || code=1
  {
    echo
    echo "Compositing server's per-batch lines (warm-up, then hot and cold in turn):"
    echo
    grep -E "'[a-z0-9]+' batch" "$OUT/new/compositing.log" | sed 's/^/    /'
    echo
    # The server's time outside visual input, inference call and compositing: on a cold
    # batch the avatar's load (Plan + Open), which avatar_load_time_ms does not cover whole.
    echo "Compositing server total - visual - inference call - composite, ms (p50 min max):"
    echo
    for t in ${COLD_TENANTS//,/ }; do
      grep "'$t' batch" "$OUT/new/compositing.log" | tail -n +2 |
        sed -E 's/.*visual ([0-9.]+) ms, inference [0-9.]+ ms \(call ([0-9.]+)\), composite ([0-9.]+) ms, total ([0-9.]+) ms.*/\1 \2 \3 \4/' |
        awk -v t="$t" '{ r = $4 - $1 - $2 - $3; if (NR % 2) h[++nh] = r; else c[++nc] = r }
          function med(a, n,   i, j, x) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++)
            if (a[j] < a[i]) { x = a[i]; a[i] = a[j]; a[j] = x }; return a[int((n + 1) / 2)] }
          END { printf "    %s hot: %.1f (%.1f..%.1f); cold: %.1f (%.1f..%.1f)\n", t,
            med(h, nh), h[1], h[nh], med(c, nc), c[1], c[nc] }'
    done
  } | tee -a "$OUT/cold.md"
fi
if [ -n "$BASE_BIN" ]; then
  OLD_INF=$(free_port)
  OLD_COMP=$(free_port)
  while [ "$OLD_COMP" = "$OLD_INF" ]; do OLD_COMP=$(free_port); done
  write_configs "$OUT/old" "$OLD_INF" "$OLD_COMP" 0
  cp "$BASE_BIN" "$OUT/bin/lipsync-base"
  PID=$(start_server "$OUT/bin/lipsync-base" inference "$OUT/old")
  PIDS+=("$PID")
  PID=$(start_server "$OUT/bin/lipsync-base" compositing "$OUT/old")
  PIDS+=("$PID")
  echo "[coldstart] hot side by side: base ($OLD_COMP) and this build ($NEW_COMP), $HOT_ROUNDS rounds"
  "$DRIVER" hot --server "127.0.0.1:$OLD_COMP,127.0.0.1:$NEW_COMP" --labels base,new \
    --tenant demo --rounds "$HOT_ROUNDS" --per-round 8 --out "$OUT/hot.md" || code=1
fi
echo "[coldstart] files: $OUT/*.md"
exit "$code"
