#!/usr/bin/env bash
# Fuzzes every harness in tests/fuzz with libFuzzer + ASan + UBSan (clang), each for
# SECONDS (default 60) on a fresh copy of its checked-in corpus, and reports per harness
# how many inputs ran and whether anything crashed. Exits non-zero on any finding.
#
#   scripts/fuzz.sh [SECONDS]
#   FUZZ_TARGETS="crop_rects raw_audio" scripts/fuzz.sh 300   # a subset
#   JOBS=4 scripts/fuzz.sh                                     # build parallelism
#
# Build: build-fuzz/ (its own CMake configure: CC=clang CXX=clang++, -DLIPSYNC_FUZZ=ON,
# project code compiled with -fsanitize=fuzzer-no-link,address,undefined); only the
# fuzz_* targets and the libraries they use are built. Debian's libraries (libpng,
# libjpeg-turbo, yaml-cpp, nlohmann-json is header-only so it IS instrumented, protobuf,
# FFTW, soxr) and ONNX Runtime are not instrumented: a bug inside them shows only when
# it corrupts memory our code touches. Generated protobuf code is instrumented.
#
# Findings: build-fuzz/fuzz-out/<harness>/ holds crash-*/leak-*/timeout-*/oom-* inputs and
# <harness>.log the libFuzzer output. Reproduce one with
#   build-fuzz/tests/fuzz/fuzz_<harness> <file>
# or, without clang, with the replay build of the normal suite:
#   LIPSYNC_FUZZ_VERBOSE=1 build/tests/fuzz/fuzz_<harness> <file>
# Inputs worth keeping go to tests/fuzz/corpus/<harness>/ once the bug is fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_PER_HARNESS=${1:-60}
JOBS=${JOBS:-2}
BUILD=$ROOT/build-fuzz
OUT=$BUILD/fuzz-out
ALL_TARGETS="crop_rects prepared_file config_yaml decode_png decode_jpeg raw_audio infer_request composite_request"
TARGETS=${FUZZ_TARGETS:-$ALL_TARGETS}

if ! [[ $SECONDS_PER_HARNESS =~ ^[0-9]+$ ]] || [ "$SECONDS_PER_HARNESS" -lt 1 ]; then
  echo "usage: $0 [SECONDS]   (seconds per harness, a whole number >= 1)" >&2
  exit 2
fi

# --- toolchain: clang 14 and its libFuzzer runtime (Debian: clang, libclang-rt-14-dev)
have_libfuzzer() {
  command -v clang++ >/dev/null 2>&1 &&
    echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' |
      clang++ -fsanitize=fuzzer -x c++ - -o /dev/null >/dev/null 2>&1
}
if ! have_libfuzzer; then
  echo "[fuzz] installing clang and libFuzzer (apt-get install clang libclang-rt-14-dev)"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq clang libclang-rt-14-dev
fi
if [ ! -f "$ROOT/third_party/onnxruntime/include/onnxruntime_cxx_api.h" ] && [ -z "${ONNXRUNTIME_ROOT:-}" ]; then
  echo "[fuzz] ONNX Runtime headers missing: run scripts/setup.sh first" >&2
  exit 2
fi

# --- build
SAN_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g"
# Configured every run (cheap when nothing changed), so new harnesses are picked up.
mkdir -p "$BUILD"
echo "[fuzz] configuring $BUILD (clang, ASan+UBSan, libFuzzer)"
CC=clang CXX=clang++ cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_CXX_FLAGS="$SAN_FLAGS" -DCMAKE_C_FLAGS="$SAN_FLAGS" \
  -DLIPSYNC_FUZZ=ON -DLIPSYNC_BUILD_BENCH=OFF >"$BUILD/configure.log" 2>&1 ||
  { cat "$BUILD/configure.log" >&2; exit 2; }
targets=()
for t in $TARGETS; do targets+=("fuzz_$t"); done
echo "[fuzz] building ${targets[*]} (-j$JOBS)"
cmake --build "$BUILD" --target "${targets[@]}" -j"$JOBS" >"$BUILD/build.log" 2>&1 ||
  { tail -50 "$BUILD/build.log" >&2; echo "[fuzz] build failed (log: $BUILD/build.log)" >&2; exit 2; }

# --- run
SUPP=$ROOT/tests/sanitizers
export ASAN_OPTIONS="abort_on_error=1:detect_leaks=1:symbolize=1:suppressions=$SUPP/asan.supp"
export LSAN_OPTIONS="suppressions=$SUPP/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:suppressions=$SUPP/ubsan.supp"

# Longest input per harness (the APIs have no size limit of their own; a longer input
# only slows the fuzzer). Request seeds are 33-39 KB (audio features for every frame).
max_len() {
  case $1 in
    infer_request|composite_request) echo 65536 ;;
    decode_png|decode_jpeg) echo 16384 ;;
    raw_audio) echo 16384 ;;
    *) echo 8192 ;;
  esac
}

mkdir -p "$OUT"
failed=0
summary=()
for t in $TARGETS; do
  work=$OUT/$t
  rm -rf "$work"
  mkdir -p "$work/corpus"
  cp "$ROOT/tests/fuzz/corpus/$t/"* "$work/corpus/"
  seeds=$(ls "$work/corpus" | wc -l)
  echo "[fuzz] $t: ${SECONDS_PER_HARNESS}s on $seeds seeds"
  set +e
  (cd "$work" && "$BUILD/tests/fuzz/fuzz_$t" -max_total_time="$SECONDS_PER_HARNESS" \
     -max_len="$(max_len "$t")" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
     -artifact_prefix="$work/" "$work/corpus") >"$work/$t.log" 2>&1
  rc=$?
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/$t.log" | grep -o '[0-9]*$' | tail -1)
  [ -z "$execs" ] && execs=$(grep -oE '^#[0-9]+' "$work/$t.log" | tail -1 | tr -d '#')
  corpus_after=$(ls "$work/corpus" | wc -l)
  findings=$(ls "$work" | grep -E '^(crash|leak|timeout|oom|slow-unit)-' || true)
  cov=$(grep -oE 'cov: [0-9]+' "$work/$t.log" | tail -1 | grep -oE '[0-9]+' || true)
  if [ $rc -ne 0 ] || [ -n "$(echo "$findings" | grep -v '^slow-unit' || true)" ]; then
    failed=1
    result="FINDING (exit $rc): $(echo $findings)"
    grep -E 'ERROR: |SUMMARY: |FUZZ_CHECK|runtime error' "$work/$t.log" | head -5 | sed 's/^/    /'
  else
    result="clean"
  fi
  line=$(printf '%-18s %5ss %10s execs  cov %-5s corpus %4s -> %-5s %s' "$t" \
    "$SECONDS_PER_HARNESS" "${execs:-?}" "${cov:-?}" "$seeds" "$corpus_after" "$result")
  echo "[fuzz] $line"
  summary+=("$line")
done

echo
echo "[fuzz] summary (logs and findings under $OUT/<harness>/)"
for line in "${summary[@]}"; do echo "  $line"; done
if [ $failed -ne 0 ]; then
  echo "[fuzz] FAILED: reproduce with build-fuzz/tests/fuzz/fuzz_<harness> <crash file>" >&2
  exit 1
fi
echo "[fuzz] no crash, no sanitizer report"
