#!/usr/bin/env bash
# Draws a p50/p99 latency-per-batch bar chart (PNG) with ImageMagick (a Debian package
# in scripts/setup.sh) from a TSV of: label <TAB> p50_ms <TAB> p99_ms.
#   bash bench/plot_latency.sh latency.tsv latency.png
set -euo pipefail
in=$1
out=$2
command -v convert >/dev/null || { echo "plot_latency: ImageMagick 'convert' not found" >&2; exit 1; }
W=1100
H=460
LEFT=300
TOP=50
BAR=14
GAP=16
max=$(awk -F'\t' '{ if ($3 + 0 > m) m = $3 + 0 } END { print (m > 0 ? m : 1) }' "$in")
args=(-size "${W}x${H}" xc:white -font DejaVu-Sans -pointsize 13 -fill black
  -annotate +20+28 "End-to-end latency per batch (ms): p50 (blue), p99 (orange); max ${max} ms")
y=$TOP
while IFS=$'\t' read -r name p50 p99; do
  [ -n "$name" ] || continue
  p50=${p50:-0}
  p99=${p99:-0}
  w50=$(awk -v v="$p50" -v m="$max" -v s=$((W - LEFT - 140)) 'BEGIN { printf "%d", v / m * s }')
  w99=$(awk -v v="$p99" -v m="$max" -v s=$((W - LEFT - 140)) 'BEGIN { printf "%d", v / m * s }')
  args+=(-fill black -annotate +20+$((y + BAR + 4)) "$name"
    -fill '#3b6fb6' -draw "rectangle $LEFT,$y $((LEFT + w50)),$((y + BAR - 1))"
    -fill '#e08a2c' -draw "rectangle $LEFT,$((y + BAR)) $((LEFT + w99)),$((y + 2 * BAR - 1))"
    -fill black -annotate +$((LEFT + w99 + 6))+$((y + BAR + 4)) "${p50} / ${p99}")
  y=$((y + 2 * BAR + GAP))
done <"$in"
convert "${args[@]}" "$out"
