#!/usr/bin/env bash
# Bounded soak + chaos run (issue 9): both servers as separate processes on free loopback
# ports, each under a supervisor that restarts it when it exits (as systemd would);
# 8 streams of raw-audio batches for a set time while the driver SIGKILLs the inference
# server every --kill-every seconds, sends malformed requests and requests for hostile
# tenants, and rewrites the hostile tenants' files. Reports frames requested / returned /
# failed with a clear status / lost (must be 0) and the servers' memory over the run.
#
#   nice -n 5 bash bench/soak/soak_chaos.sh [--seconds 120] [--streams 8] [--kill-every 20]
#                                           [--batch 8] [--out out/soak] [--no-build]
#   LIPSYNC_BIN=path/to/lipsync runs that server binary instead of build/lipsync.
#
# Outputs in --out: report.md, memory.csv, exits.log (server exits seen by the
# supervisors), inference.log, compositing.log, models/ (demo + hostile tenants).
# Exit status: the driver's (0 ok, 1 a request was lost, 3 a server crashed on its own),
# or 4 when a server did not stop within 40 s of SIGTERM at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SECONDS_RUN=120
STREAMS=8
KILL_EVERY=20
BATCH=8
OUT=$ROOT/out/soak
BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECONDS_RUN=$2; shift 2 ;;
    --streams) STREAMS=$2; shift 2 ;;
    --kill-every) KILL_EVERY=$2; shift 2 ;;
    --batch) BATCH=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "soak_chaos.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
BIN=${LIPSYNC_BIN:-$ROOT/build/lipsync}  # LIPSYNC_BIN: run another build of the servers
DRIVER=$ROOT/build/bench/soak/soak_chaos

if [ "$BUILD" = 1 ]; then
  echo "[soak] building lipsync and soak_chaos (through /tmp/lipsync-build.lock)"
  if ! flock /tmp/lipsync-build.lock cmake --build "$ROOT/build" --target lipsync soak_chaos -j2 \
    >"$OUT/build.log" 2>&1; then
    grep -m5 -E "error|Error" "$OUT/build.log" >&2 || tail -5 "$OUT/build.log" >&2
    if [ -x "$BIN" ] && [ -x "$DRIVER" ]; then
      echo "[soak] build FAILED (log: $OUT/build.log); running the binaries already built" >&2
    else
      exit 1
    fi
  fi
fi
for b in "$BIN" "$DRIVER"; do
  [ -x "$b" ] || { echo "[soak] $b is missing: build it (see --help)" >&2; exit 1; }
done

# Run copies, so a rebuild in the shared tree cannot swap a binary during the run.
mkdir -p "$OUT/bin"
[ "$BIN" -ef "$OUT/bin/lipsync" ] || cp "$BIN" "$OUT/bin/lipsync"
[ "$DRIVER" -ef "$OUT/bin/soak_chaos" ] || cp "$DRIVER" "$OUT/bin/soak_chaos"
BIN=$OUT/bin/lipsync
DRIVER=$OUT/bin/soak_chaos
echo "[soak] binaries: $BIN ($(git -C "$ROOT" log -1 --format='%h %cd' --date=format:%H:%M 2>/dev/null) + local edits)"

# The loss detector itself, against a fake server that loses frames in every way it counts.
"$DRIVER" selftest >"$OUT/selftest.log" 2>&1 || { cat "$OUT/selftest.log" >&2; exit 1; }
echo "[soak] $(tail -1 "$OUT/selftest.log") (log: $OUT/selftest.log)"

echo "[soak] model_root: $OUT/models (demo tenant + hostile tenants)"
"$BIN" make-demo --out "$OUT/models" --only demo >"$OUT/make-demo.log" 2>&1 \
  || { cat "$OUT/make-demo.log" >&2; exit 1; }
rm -rf "$OUT/models"/hostile_* "$OUT/outside"
"$DRIVER" make-hostile --model-root "$OUT/models" --outside "$OUT/outside"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
INFER_PORT=$(free_port)
COMP_PORT=$(free_port)
while [ "$COMP_PORT" = "$INFER_PORT" ]; do COMP_PORT=$(free_port); done

cat >"$OUT/inference.yaml" <<YAML
server:
  port: "127.0.0.1:$INFER_PORT"
  worker_count_per_gpu: 2
  queue_size: 50
  shutdown_grace_seconds: 10
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
cat >"$OUT/compositing.yaml" <<YAML
server:
  port: "127.0.0.1:$COMP_PORT"
  shutdown_grace_seconds: 10
inference_server:
  url: "127.0.0.1:$INFER_PORT"
  timeout_seconds: 10
  max_retries: 3
capacity:
  max_models: 100
output:
  format: "jpeg"
  jpeg_quality: 75
model_root: "$OUT/models"
logging:
  level: "info"
YAML

rm -f "$OUT/stop" "$OUT/exits.log" "$OUT"/*.pid "$OUT/memory.csv" "$OUT/report.md"
: >"$OUT/exits.log"
: >"$OUT/inference.log"
: >"$OUT/compositing.log"
START=$(date +%s)

# Runs `lipsync $1 --config $2` and restarts it whenever it exits, until $OUT/stop exists.
# Each exit is logged as "<seconds since start> <server> <pid> <exit code>" (137 = SIGKILL).
supervise() {
  local name=$1 config=$2 pid code
  while [ ! -e "$OUT/stop" ]; do
    "$BIN" "$name" --config "$config" >>"$OUT/$name.log" 2>&1 &
    pid=$!
    echo "$pid" >"$OUT/$name.pid.tmp" && mv "$OUT/$name.pid.tmp" "$OUT/$name.pid"
    code=0
    wait "$pid" || code=$?
    [ -e "$OUT/stop" ] && break
    echo "$(($(date +%s) - START)) $name $pid $code" >>"$OUT/exits.log"
    sleep 0.2
  done
}

sup_pids=()
stop_all() {
  touch "$OUT/stop"
  local name pid t
  for name in compositing inference; do
    pid=$(cat "$OUT/$name.pid" 2>/dev/null || true)
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
  done
  for t in $(seq 1 400); do
    local alive=0
    for name in compositing inference; do
      pid=$(cat "$OUT/$name.pid" 2>/dev/null || true)
      [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && alive=1
    done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  STOP_NOTE=""
  for name in compositing inference; do
    pid=$(cat "$OUT/$name.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      STOP_NOTE+="- $name server (pid $pid) did NOT exit within 40 s of SIGTERM; killed"$'\n'
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  for pid in "${sup_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap 'stop_all' EXIT

wait_ready() {  # $1 = log file, $2 = name, $3 = supervisor name
  for _ in $(seq 1 600); do
    grep -q "Ready to accept connections" "$1" 2>/dev/null && return 0
    if grep -q " $3 " "$OUT/exits.log"; then
      echo "[soak] $2 exited during startup; its log:" >&2
      tail -30 "$1" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "[soak] $2 did not start; its log:" >&2
  tail -30 "$1" >&2
  exit 1
}

echo "[soak] inference server on 127.0.0.1:$INFER_PORT (log: $OUT/inference.log)"
supervise inference "$OUT/inference.yaml" 2>>"$OUT/supervisor.log" &
sup_pids+=($!)
wait_ready "$OUT/inference.log" "inference server" inference
echo "[soak] compositing server on 127.0.0.1:$COMP_PORT (log: $OUT/compositing.log)"
supervise compositing "$OUT/compositing.yaml" 2>>"$OUT/supervisor.log" &
sup_pids+=($!)
wait_ready "$OUT/compositing.log" "compositing server" compositing

code=0
"$DRIVER" run --server "127.0.0.1:$COMP_PORT" --inference "127.0.0.1:$INFER_PORT" \
  --model-root "$OUT/models" --out "$OUT" \
  --compositing-pid-file "$OUT/compositing.pid" --inference-pid-file "$OUT/inference.pid" \
  --exits-log "$OUT/exits.log" --seconds "$SECONDS_RUN" --streams "$STREAMS" \
  --batch "$BATCH" --kill-every "$KILL_EVERY" || code=$?

echo "[soak] stopping the servers (SIGTERM)"
trap - EXIT
stop_all
{
  echo
  echo "## Shutdown"
  echo
  if [ -n "$STOP_NOTE" ]; then printf '%s' "$STOP_NOTE"; else
    echo "both servers exited on SIGTERM within 40 s"; fi
} >>"$OUT/report.md"
[ -n "$STOP_NOTE" ] && { printf '%s' "$STOP_NOTE"; [ "$code" = 0 ] && code=4; }
echo "[soak] files: $OUT/report.md $OUT/memory.csv $OUT/exits.log $OUT/inference.log $OUT/compositing.log"
echo "[soak] exit status $code"
exit "$code"
