#!/usr/bin/env bash
# CPU provider: the bench model's raw ONNX Runtime ms/frame with two core libraries,
# side by side in one run (alternating rounds, so machine noise hits both alike).
# Used to choose which 1.29.0 core scripts/setup.sh installs (docs/PERFORMANCE.md).
#
#   bench/gpu/ort_core_compare.sh LIB_A LIB_B [BUILD_DIR]
#   ROUNDS=3 BATCHES=1,8 SECONDS_PER_POINT=4 THREADS=1   (defaults)
set -euo pipefail
cd "$(dirname "$0")/../.."
A=${1:?usage: $0 LIB_A LIB_B [BUILD_DIR]}
B=${2:?usage: $0 LIB_A LIB_B [BUILD_DIR]}
BUILD_DIR=${3:-build}
BENCH="$BUILD_DIR/bench/inference/inference_bench"
LIPSYNC="$BUILD_DIR/lipsync"
ROUNDS=${ROUNDS:-3}
BATCHES=${BATCHES:-1,8}
SECS=${SECONDS_PER_POINT:-4}
THREADS=${THREADS:-1}
for f in "$A" "$B" "$BENCH" "$LIPSYNC"; do
  [[ -e "$f" ]] || { echo "missing $f" >&2; exit 2; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "[compare] writing the bench model (unet_328-sized)"
"$LIPSYNC" make-demo --out "$work/root" --only bench >/dev/null
MODEL=$(find "$work/root/bench" -name '*.onnx' ! -name 'audio_encoder*' | head -1)
[[ -n "$MODEL" ]] || { echo "no bench model written under $work/root/bench" >&2; exit 1; }

declare -A sum cnt
for ((r = 1; r <= ROUNDS; r++)); do
  for lib in "$A" "$B"; do
    echo "[compare] round $r/$ROUNDS: $lib"
    # Raw ORT column only matters; 1 client, THREADS intra-op threads.
    "$BENCH" --model "$MODEL" --ort-library "$lib" --batches "$BATCHES" --clients 1 \
      --seconds "$SECS" --intra-op-threads "$THREADS" --workers 1 >"$work/out.txt" 2>&1 || {
      cat "$work/out.txt" >&2; exit 1; }
    while read -r batch clients raw _; do
      [[ "$batch" =~ ^[0-9]+$ ]] || continue
      key="$lib|$batch"
      sum[$key]=$(awk -v s="${sum[$key]:-0}" -v r="$raw" 'BEGIN{print s + 1000 / r}')
      cnt[$key]=$(( ${cnt[$key]:-0} + 1 ))
      printf '  batch %-3s %8.1f ms/frame\n' "$batch" "$(awk -v r="$raw" 'BEGIN{print 1000 / r}')"
    done <"$work/out.txt"
  done
done
echo
echo "| core | batch | raw ORT ms/frame (mean of $ROUNDS, $THREADS intra-op thread(s)) |"
echo "| --- | --- | --- |"
IFS=, read -ra bs <<<"$BATCHES"
for lib in "$A" "$B"; do
  for b in "${bs[@]}"; do
    key="$lib|$b"
    printf '| %s | %s | %.1f |\n' "$lib" "$b" "$(awk -v s="${sum[$key]}" -v n="${cnt[$key]}" 'BEGIN{print s / n}')"
  done
done
