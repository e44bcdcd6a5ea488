#!/usr/bin/env bash
# The GPU session's one script (device tool, under 10 minutes): reassembles the bundle
# bench/gpu/pack.sh made, finds the CUDA 13 / cuDNN 9 libraries of NVIDIA's pip wheels
# and the driver, then measures and prints a summary for docs/PERFORMANCE.md:
#   1. bench/gpu_check.sh: GPU output vs the CPU provider's (max rel. error < 1e-3)
#   2. raw ORT ms/frame at batch 1, 8, 32 under the CUDA provider options
#      (bench/gpu/ort_options_bench: exhaustive vs heuristic cuDNN search, TF32 on/off,
#      uint8 I/O binding on the wrapped graph, CUDA graphs)
#   3. raw ORT vs the inference server (inference_bench, batch 8/32, 1 and 4 clients)
#   4. end to end through both servers (`lipsync serve` + `lipsync client`, JPEG):
#      frames/s at batch 32 vs raw, then 25 fps streams at rising concurrency: the most
#      streams with p99 batch latency < 200 ms and no failure, and the CPU cores the
#      process used for it
#
#   bash bench/gpu/run_all.sh             # on the GPU machine, once the parts are there
#   bash bench/gpu/run_all.sh --dry-run   # here, no GPU: everything up to the GPU (pack
#                                         # first), the GPU steps on the CPU provider, short
#
# Getting the bundle there (the device tool carries at most 64 MiB per call; the
# machine keeps /tmp while warm, ~30 s after each call). Here:
#   LIPSYNC_CUDA=1 scripts/setup.sh && cmake --build build --target lipsync \
#     inference_bench ort_options_bench && bash bench/gpu/pack.sh
# then one call per part, back to back (N = 00, 01, ...; see `ls out/gpu-bundle`):
#   run(command="mkdir -p /tmp/lipsync-gpu-parts && cp out/gpu-bundle/part-N \
#       out/gpu-bundle/MANIFEST /tmp/lipsync-gpu-parts/", carry=["out/gpu-bundle/part-N",
#       "out/gpu-bundle/MANIFEST"], timeout_s=60)
# and last: run(command="bash bench/gpu/run_all.sh", timeout_s=600).
# Results: stdout, and $OUT/gpu_summary.md + logs under $OUT (the device tool's folder).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
RESULTS=${OUT:-$ROOT/out/gpu-run}
mkdir -p "$RESULTS"
SUMMARY="$RESULTS/gpu_summary.md"
STAGE=${STAGE:-/tmp/lipsync-gpu}
BUDGET_S=${BUDGET_S:-540}  # leaves a margin under the device tool's 600 s
START=$SECONDS
log() { printf '[gpu %3ds] %s\n' $((SECONDS - START)) "$*"; }
left() { echo $((BUDGET_S - (SECONDS - START))); }
say() { echo "$*" | tee -a "$SUMMARY"; }
: >"$SUMMARY"

# ---- 1. the bundle ----------------------------------------------------------------
if [[ $DRY == 1 && ! -f out/gpu-bundle/MANIFEST ]]; then
  log "dry run: packing first (bench/gpu/pack.sh)"
  bash bench/gpu/pack.sh
fi
manifest=""
for d in /tmp/lipsync-gpu-parts out/gpu-bundle; do
  [[ -f "$d/MANIFEST" ]] && { manifest="$d/MANIFEST"; break; }
done
[[ -n "$manifest" ]] || { echo "no MANIFEST in /tmp/lipsync-gpu-parts or out/gpu-bundle: carry the parts first (see the header)" >&2; exit 3; }
missing=()
while read -r sum name; do
  found=""
  for d in /tmp/lipsync-gpu-parts out/gpu-bundle; do
    if [[ -f "$d/$name" ]] && [[ "$(sha256sum "$d/$name" | cut -d' ' -f1)" == "$sum" ]]; then
      found="$d/$name"
      break
    fi
  done
  [[ -n "$found" ]] && parts+=("$found") || missing+=("$name")
done <"$manifest"
if ((${#missing[@]})); then
  echo "parts missing or damaged (sha256 differs from MANIFEST): ${missing[*]}; carry them again" >&2
  exit 3
fi
rm -rf "$STAGE" && mkdir -p "$STAGE"
cat "${parts[@]}" | gzip -dc | tar -x -C "$STAGE"
B="$STAGE/bundle"
log "bundle: ${#parts[@]} parts joined into $B ($(du -sm "$B" | cut -f1) MB)"

# ---- 2. CUDA libraries, driver, how to run our binaries -----------------------------
cuda_dirs=()
for py in python3 python; do
  command -v "$py" >/dev/null 2>&1 || continue
  while read -r sp; do
    [[ -d "$sp/nvidia" ]] || continue
    for lib in "$sp"/nvidia/*/lib "$sp"/nvidia/*/lib64; do
      compgen -G "$lib/*.so*" >/dev/null && cuda_dirs+=("$lib")
    done
  done < <("$py" -c 'import site, sys; print("\n".join(site.getsitepackages() + [site.getusersitepackages()] + sys.path))' 2>/dev/null | sort -u)
  break
done
for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda-13*/lib*; do
  [[ -d "$d" ]] && cuda_dirs+=("$d")
done
driver=$(ldconfig -p 2>/dev/null | awk '/libcuda\.so\.1 / {print $NF; exit}')
if [[ -z "$driver" ]]; then
  for d in /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/local/nvidia/lib64 /usr/lib/wsl/lib; do
    [[ -e "$d/libcuda.so.1" ]] && { driver="$d/libcuda.so.1"; break; }
  done
fi
driver_dir=$(dirname "${driver:-/nonexistent/x}")
CUDA_DIRS=$(IFS=:; echo "${cuda_dirs[*]:-}")
log "CUDA library dirs: ${CUDA_DIRS:-none}"
log "NVIDIA driver: ${driver:-not found}"
for lib in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libcudnn.so.9; do
  where=""
  for d in "${cuda_dirs[@]}"; do [[ -e "$d/$lib" ]] && { where="$d"; break; }; done
  log "  $lib: ${where:-NOT FOUND in the dirs above (the server also tries the system path)}"
done
# Our binaries run on the glibc they were built with: the bundled loader and libraries
# first, then the CUDA dirs and the driver's directory.
LIBPATH="$B/lib:$CUDA_DIRS${driver:+:$driver_dir}"
RUNNER="$B/lib/ld-linux-x86-64.so.2 --library-path $LIBPATH"
ORT="$B/ort/libonnxruntime.so.1"
$RUNNER "$B/build/lipsync" --help >/dev/null 2>&1 || { echo "the bundled lipsync does not start under $RUNNER" >&2; $RUNNER "$B/build/lipsync" --help | head -5; exit 4; }
log "bundled binaries start"
GPU_NAME=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1 || true)
say "## GPU run $(date -u +%Y-%m-%d) on ${GPU_NAME:-no GPU (dry run)}"
say ""
say "ONNX Runtime 1.29.0 (core: onnxruntime-node; CUDA provider: asus4 linux-x64-gpu 0.4.9); CUDA dirs: ${CUDA_DIRS:-none}; driver: ${driver:-none}"
say ""

CPUFLAG=()
SECS=${SECONDS_PER_POINT:-3}
BATCHES=1,8,32
if [[ $DRY == 1 ]]; then CPUFLAG=(--cpu); SECS=0.2; BATCHES=1; fi

# ---- 3. gpu_check.sh ------------------------------------------------------------------
log "gpu_check.sh"
RUNNER="$RUNNER" ORT_GPU_LIBRARY="$ORT" CUDA_LIBRARY_DIRS="$CUDA_DIRS" SECONDS_PER_POINT=2 \
  bash bench/gpu_check.sh "$B/build" 2>&1 | tee "$RESULTS/gpu_check.log" || true
say '### gpu_check.sh'
say '```'
tail -8 "$RESULTS/gpu_check.log" >>"$SUMMARY"
say '```'
if [[ $DRY == 1 ]]; then
  # The CUDA path as far as this machine goes: provider beside the core, libraries,
  # driver; it must stop with a message naming what is missing, not crash.
  log "dry run: the CUDA provider path up to the GPU (expected to stop cleanly)"
  if $RUNNER "$B/build/bench/gpu/ort_options_bench" --ort-library "$ORT" --batches 1 \
    --seconds 0.1 --gpu-count 1 --cuda-library-dirs "$CUDA_DIRS" >"$RESULTS/cuda_path.log" 2>&1; then
    say "CUDA path: usable (unexpected on a machine without a GPU)"
  else
    rc=$?
    ((rc == 1)) || { say "CUDA path: exit $rc (expected 1: a clean error)"; exit 6; }
    say "CUDA path stops cleanly: $(head -c 600 "$RESULTS/cuda_path.log")"
  fi
fi

# ---- 4. raw ORT under the provider options --------------------------------------------
if (($(left) > 200)); then
  log "raw ORT, CUDA provider options (ort_options_bench)"
  say '### Raw ORT, bench model (unet_328-sized), CUDA provider options'
  $RUNNER "$B/build/bench/gpu/ort_options_bench" --ort-library "$ORT" --batches "$BATCHES" \
    --seconds "$SECS" --cuda-library-dirs "$CUDA_DIRS" "${CPUFLAG[@]}" 2>&1 |
    tee "$RESULTS/ort_options.log" | grep -E '^\||^ORT' | tee -a "$SUMMARY" || true
  say ""
else
  log "skipped ort_options_bench: $(left) s left"
fi

# ---- 5. raw ORT vs the inference server ---------------------------------------------------
if [[ $DRY == 0 ]] && (($(left) > 150)); then
  log "raw ORT vs inference server (inference_bench)"
  say '### Raw ORT vs the inference server (frames/s)'
  say '```'
  $RUNNER "$B/build/bench/inference/inference_bench" --cuda --ort-library "$ORT" \
    --batches 8,32 --clients 1,4 --seconds 3 --workers 4 2>&1 |
    tee "$RESULTS/inference_bench.log" | tail -6 | tee -a "$SUMMARY" || true
  say '```'
fi

# ---- 6. end to end through both servers ---------------------------------------------------
work=$(mktemp -d)
serve_pid=""
cleanup() {
  [[ -n "$serve_pid" ]] && kill -TERM "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
if (($(left) > 90)); then
  log "end to end: make-demo (bench avatar + model), lipsync serve, lipsync client"
  $RUNNER "$B/build/lipsync" make-demo --out "$work/models" --only bench >"$RESULTS/make_demo.log" 2>&1
  use_cuda=true
  [[ $DRY == 1 ]] && use_cuda=false
  dirs_yaml=""
  for d in "${cuda_dirs[@]}"; do dirs_yaml+="    - \"$d\""$'\n'; done
  cat >"$work/inference.yaml" <<YAML
server:
  port: "127.0.0.1:${INFER_PORT:-50151}"
  worker_count_per_gpu: 4
  max_batch_size: 64
  queue_size: 512
  max_message_size_mb: 512
gpus:
  enabled: $use_cuda
onnx:
  library_path: "$ORT"
  use_cuda: $use_cuda
  require_cuda: $use_cuda
  cuda_library_dirs:
${dirs_yaml:-    []}
capacity:
  idle_timeout_minutes: 0
model_root: "$work/models"
logging:
  level: "info"
YAML
  [[ -z "$dirs_yaml" ]] && sed -i 's/^  cuda_library_dirs:$/  cuda_library_dirs: []/; /^    \[\]$/d' "$work/inference.yaml"
  cat >"$work/compositing.yaml" <<YAML
server:
  port: "127.0.0.1:${COMP_PORT:-50152}"
  max_batch_size: 64
  max_message_size_mb: 512
inference_server:
  url: "127.0.0.1:1"
  timeout_seconds: 30
output:
  format: "jpeg"
  jpeg_quality: 85
model_root: "$work/models"
logging:
  level: "info"
YAML
  $RUNNER "$B/build/lipsync" serve --inference-config "$work/inference.yaml" \
    --compositing-config "$work/compositing.yaml" >"$RESULTS/serve.log" 2>&1 &
  serve_pid=$!
  for _ in $(seq 1 600); do
    [[ $(grep -c "Ready to accept connections" "$RESULTS/serve.log" 2>/dev/null) -ge 1 ]] && break
    kill -0 "$serve_pid" 2>/dev/null || break
    sleep 0.1
  done
  if ! kill -0 "$serve_pid" 2>/dev/null; then
    say "serve did not start:"; tail -20 "$RESULTS/serve.log" | tee -a "$SUMMARY"; exit 5
  fi
  grep -m1 "execution provider" "$RESULTS/serve.log" | tee -a "$SUMMARY" || true
  client() { $RUNNER "$B/build/lipsync" client --server "127.0.0.1:${COMP_PORT:-50152}" --model bench --quiet "$@"; }
  cpu_ticks() { awk '{print $14 + $15}' "/proc/$serve_pid/stat"; }
  say '### End to end (lipsync serve + lipsync client, JPEG out)'
  if [[ $DRY == 1 ]]; then
    client --batches 1 --batch-size 2 2>&1 | tee "$RESULTS/e2e.log" | grep -E 'throughput|latency|batches' | tee -a "$SUMMARY"
  else
    client --batches 2 --batch-size 32 --concurrency 4 >/dev/null 2>&1 || true  # warm-up
    client --batches 12 --batch-size 32 --concurrency 4 2>&1 | tee "$RESULTS/e2e.log" |
      grep -E 'throughput|latency|batches' | tee -a "$SUMMARY"
    say ""
    say "| streams (25 fps, batch 25) | p99 batch ms | p50 | failed | FPS | serve CPU cores |"
    say "| --- | --- | --- | --- | --- | --- |"
    best=0
    for k in ${STREAMS:-20 40 80 120 160 240}; do
      (($(left) > 25)) || { log "streams: stopping at $k, $(left) s left"; break; }
      t0=$(cpu_ticks); w0=$SECONDS
      out=$(client --realtime --concurrency "$k" --batch-size 25 --batches 6 2>&1 || true)
      cores=$(awk -v a="$t0" -v b="$(cpu_ticks)" -v w=$((SECONDS - w0)) -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.1f", (b - a) / hz / (w > 0 ? w : 1)}')
      p99=$(sed -n 's/.*p99 \([0-9.]*\) ms.*/\1/p' <<<"$out" | head -1)
      p50=$(sed -n 's/.*p50 \([0-9.]*\) ms.*/\1/p' <<<"$out" | head -1)
      failed=$(sed -n 's/.*batches: *[0-9]* (\([0-9]*\) failed).*/\1/p' <<<"$out" | head -1)
      fps=$(sed -n 's/.*throughput: *\([0-9.]*\) FPS.*/\1/p' <<<"$out" | head -1)
      say "| $k | ${p99:-?} | ${p50:-?} | ${failed:-?} | ${fps:-?} | $cores |"
      if [[ -n "$p99" && "${failed:-1}" == 0 ]] && awk -v p="$p99" 'BEGIN{exit !(p < 200)}'; then
        best=$k
      else
        break
      fi
    done
    say ""
    say "streams sustained with p99 < 200 ms: $best"
  fi
fi
say ""
say "total $((SECONDS - START)) s"
log "summary in $SUMMARY"
