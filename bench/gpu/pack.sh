#!/usr/bin/env bash
# Packs what the GPU machine needs into parts small enough for the device tool (one
# call carries at most 64 MiB of the tree): the binaries, every shared library they
# load (glibc and the loader included: that machine has no Debian packages and maybe
# an older glibc), the ONNX Runtime core and its CUDA provider (230 MB).
#
#   LIPSYNC_CUDA=1 scripts/setup.sh        # once: the CUDA provider beside the core
#   bash bench/gpu/pack.sh [BUILD_DIR]     # -> out/gpu-bundle/part-00.. + MANIFEST
#   ORT_LIB_DIR=/elsewhere/lib bash bench/gpu/pack.sh    # core + providers from there
#   PART_MB=58 (default: a part plus the tree stays under 64 MiB)
#
# How the parts travel (bench/gpu/run_all.sh documents the calls): one `run` call per
# part, back to back while the machine stays warm, each carrying one part
# (carry: ["out/gpu-bundle/part-NN", "out/gpu-bundle/MANIFEST"]) and copying it to
# /tmp/lipsync-gpu-parts/ there; the last call runs bench/gpu/run_all.sh, which checks
# every part against MANIFEST (sha256), joins and unpacks them.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR=${1:-build}
ORT_LIB_DIR=${ORT_LIB_DIR:-third_party/onnxruntime/lib}
PART_MB=${PART_MB:-58}
OUT=out/gpu-bundle
BINS=("$BUILD_DIR/lipsync" "$BUILD_DIR/bench/inference/inference_bench"
      "$BUILD_DIR/bench/gpu/ort_options_bench")
for f in "${BINS[@]}" "$ORT_LIB_DIR/libonnxruntime.so.1" \
         "$ORT_LIB_DIR/libonnxruntime_providers_shared.so" \
         "$ORT_LIB_DIR/libonnxruntime_providers_cuda.so"; do
  [[ -e "$f" ]] || { echo "[pack] missing $f (build the targets; LIPSYNC_CUDA=1 scripts/setup.sh)" >&2; exit 2; }
done

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bundle/build/bench/inference" "$stage/bundle/build/bench/gpu" \
         "$stage/bundle/lib" "$stage/bundle/ort"
cp "$BUILD_DIR/lipsync" "$stage/bundle/build/"
cp "$BUILD_DIR/bench/inference/inference_bench" "$stage/bundle/build/bench/inference/"
cp "$BUILD_DIR/bench/gpu/ort_options_bench" "$stage/bundle/build/bench/gpu/"
# The shared-library closure of the binaries and of the ORT core (ldd resolves it).
for f in "${BINS[@]}" "$ORT_LIB_DIR/libonnxruntime.so.1"; do
  ldd "$f" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\/.*ld-linux/ {print $1}'
done | sort -u | while read -r lib; do
  cp -L "$lib" "$stage/bundle/lib/"
done
cp -L "$ORT_LIB_DIR"/libonnxruntime.so.1 "$ORT_LIB_DIR"/libonnxruntime_providers_shared.so \
      "$ORT_LIB_DIR"/libonnxruntime_providers_cuda.so "$stage/bundle/ort/"
echo "[pack] $(find "$stage/bundle" -type f | wc -l) files, $(du -sm "$stage/bundle" | cut -f1) MB before compression"

rm -rf "$OUT" && mkdir -p "$OUT"
# gzip: every machine (and Python) can undo it.
tar -C "$stage" -cf - bundle | gzip -6 | split -b "${PART_MB}m" -d -a 2 - "$OUT/part-"
(cd "$OUT" && sha256sum part-* >MANIFEST)
echo "[pack] $(ls "$OUT"/part-* | wc -l) parts in $OUT (each <= $PART_MB MiB):"
ls -l "$OUT"
