#!/usr/bin/env bash
# GPU check for the inference server: on a machine with an NVIDIA GPU and an ONNX Runtime
# build that has the CUDA execution provider, compares the bench model's GPU output with
# the CPU provider's (max relative error < 1e-3) and reports frames/s at batch 1, 8 and
# 24 through the real gRPC server on loopback. Anywhere else it says plainly that the GPU
# path is untested and exits 0.
#
#   bench/gpu_check.sh [BUILD_DIR]          (default: build)
#   ORT_GPU_LIBRARY=/opt/onnxruntime-gpu/lib/libonnxruntime.so.1 bench/gpu_check.sh build
#   SECONDS_PER_POINT=3 CLIENTS=1,4         (optional)
#   RUNNER="/b/lib/ld-linux-x86-64.so.2 --library-path /b/lib:/cuda/dirs"   (optional: a
#     prefix the bench runs under; bench/gpu/run_all.sh runs the bundled binaries so)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
BENCH="$BUILD_DIR/bench/inference/inference_bench"

untested() {
  echo "no NVIDIA GPU / no CUDA provider: GPU path untested ($1)"
  exit 0
}

command -v nvidia-smi >/dev/null 2>&1 || untested "nvidia-smi not found"
nvidia-smi -L 2>/dev/null | grep -q '^GPU' || untested "nvidia-smi lists no GPU"

LIB=${ORT_GPU_LIBRARY:-}
if [[ -z "$LIB" ]]; then
  for candidate in third_party/onnxruntime-gpu/lib/libonnxruntime.so.1 \
                   third_party/onnxruntime/lib/libonnxruntime.so.1; do
    if [[ -e "$(dirname "$candidate")/libonnxruntime_providers_cuda.so" ]]; then
      LIB=$candidate
      break
    fi
  done
fi
[[ -n "$LIB" ]] || untested "no ONNX Runtime with libonnxruntime_providers_cuda.so found; set ORT_GPU_LIBRARY"
[[ -x "$BENCH" ]] || { echo "missing $BENCH: cmake --build $BUILD_DIR --target inference_bench" >&2; exit 2; }

nvidia-smi -L
echo "ONNX Runtime: $LIB"
# --cuda makes no usable CUDA a startup error, so a silent CPU fallback cannot pass.
# RUNNER is a command prefix, split on spaces on purpose.
# shellcheck disable=SC2086
exec ${RUNNER:-} "$BENCH" --cuda --ort-library "$LIB" --compare-cpu --server-only \
  --batches 1,8,24 --clients "${CLIENTS:-1,4}" --seconds "${SECONDS_PER_POINT:-3}"
