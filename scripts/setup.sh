#!/usr/bin/env bash
# Installs everything the build, tests and demo need on Debian 12, then configures
# and builds. Idempotent: a rerun with everything present takes seconds.
#   scripts/setup.sh            # packages + ONNX Runtime + build (Release)
#   SKIP_BUILD=1 scripts/setup.sh
#   LIPSYNC_CUDA=1 scripts/setup.sh   # also the ONNX Runtime CUDA provider (230 MB)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

log() { printf '[setup] %s\n' "$*"; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

PACKAGES=(
  build-essential cmake pkg-config git ca-certificates
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libyaml-cpp-dev nlohmann-json3-dev libjpeg62-turbo-dev libpng-dev zlib1g-dev libyuv-dev
  libonnx-dev libgtest-dev libgmock-dev libbenchmark-dev libssl-dev
  libfftw3-dev libsoxr-dev libsndfile1-dev libjwt-dev
  libx264-dev libopenh264-dev libopus-dev libavformat-dev libavcodec-dev libavutil-dev
  libboost1.81-dev prometheus-cpp-dev chromium janus coturn nginx prometheus
  espeak-ng ffmpeg imagemagick
  python3 python3-grpcio python3-numpy python3-opencv python3-protobuf python3-h2
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# npm: Debian's, unless a Node.js with npm is already there (e.g. NodeSource's).
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "Debian packages: all present"
fi

# ONNX Runtime 1.29.0 from npm. Every tarball is checked against the sha512 pinned
# here (npm's dist.integrity: `npm view PKG@VER dist.integrity`) before anything in it
# is used; a mismatch stops setup. Files are installed by rename, never overwritten in
# place (a running server keeps the library it mapped).
#   core     onnxruntime-node@1.29.0: the Linux x64 libonnxruntime.so.1, built with the
#            provider bridge (runs the CPU provider, and CUDA when the providers lie beside it)
#   headers  com.github.asus4.onnxruntime@0.4.9: the same 1.29.0 C/C++ API headers
#   CUDA     com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9, only with LIPSYNC_CUDA=1:
#            libonnxruntime_providers_{shared,cuda}.so (230 MB) beside the core. At run time
#            they need CUDA 13 (cuBLAS, cuRAND, cudart) and cuDNN 9: system paths or
#            onnx.cuda_library_dirs (docs/GPU.md).
#   LIPSYNC_CUDA=1 scripts/setup.sh    # also fetch the CUDA provider
ORT_DIR="$ROOT/third_party/onnxruntime"
ORT_MARK="$ORT_DIR/SOURCES"  # one line per installed package: "name@version integrity"
ORT_CORE="onnxruntime-node@1.29.0 sha512-WjiVVB72riILz8HbYvxvmjKyE/WmkYoSfKY++axo5jAR609HQg8MwiG/HhShpTcJfmmAdzxxmB+MMST3A+SiPA=="
ORT_HEADERS="com.github.asus4.onnxruntime@0.4.9 sha512-BkzxduSZ9IkeDP6Q8lz2TFU2ie7hSSvS7ZIfzMooExoq0CNzJnuuGaUJ7IsojBgqO4ouD1jXah8OYyJbCN29Fg=="
ORT_CUDA="com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9 sha512-FopIhNE/Ng+v2X65wVc9clPCBCvhvA53Hxo2U0Kf5fGdVsC7iCA+mZ0KLWggcQAj7TIZ6pNidR4AC10g74Xo6w=="

ort_installed() { [ -f "$ORT_MARK" ] && grep -qxF "$1" "$ORT_MARK"; }
# npm_fetch "PKG@VER sha512-..." DIR: packs the tarball into DIR, checks it against the
# pinned integrity and unpacks it to DIR/package/.
npm_fetch() {
  local pkg=${1%% *} want=${1#* } dir=$2 tgz got
  log "fetching $pkg from npm"
  (cd "$dir" && npm pack --silent "$pkg" >/dev/null)
  tgz=$(ls "$dir"/*.tgz)
  got="sha512-$(sha512sum "$tgz" | cut -d' ' -f1 | hex_to_base64)"
  if [ "$got" != "$want" ]; then
    log "ERROR: $pkg: the downloaded tarball's checksum is $got; pinned in scripts/setup.sh: $want."
    log "ERROR: refusing to install it (registry or mirror served other bytes than the pinned release)."
    rm -rf "$dir"
    exit 1
  fi
  log "$pkg: checksum matches the pinned sha512"
  tar -xzf "$tgz" -C "$dir"
  rm -f "$tgz"
}
# hex digest on stdin -> base64 (coreutils only).
hex_to_base64() { local h; h=$(cat); printf '%b' "$(printf '%s' "$h" | sed 's/../\\x&/g')" | base64 -w0; }
# Installs SRC as DEST by rename (atomic on one file system).
install_file() { cp "$1" "$2.tmp.$$" && chmod "${3:-644}" "$2.tmp.$$" && mv -f "$2.tmp.$$" "$2"; }
# Replaces the line for package NAME in the marker file with LINE.
mark_installed() {
  local name=${1%%@*}
  { [ -f "$ORT_MARK" ] && grep -v "^$name@" "$ORT_MARK" || true; echo "$1"; } >"$ORT_MARK.tmp"
  mv -f "$ORT_MARK.tmp" "$ORT_MARK"
}

mkdir -p "$ORT_DIR/lib" "$ORT_DIR/include"
if ort_installed "$ORT_HEADERS" && [ -f "$ORT_DIR/include/onnxruntime_cxx_api.h" ]; then
  log "ONNX Runtime headers: present (${ORT_HEADERS%% *})"
else
  tmp=$(mktemp -d)
  npm_fetch "$ORT_HEADERS" "$tmp"
  cp "$tmp"/package/Plugins/iOS~/onnxruntime.xcframework/ios-arm64/onnxruntime.framework/Headers/*.h "$ORT_DIR/include/"
  rm -rf "$tmp"
  mark_installed "$ORT_HEADERS"
fi
if ort_installed "$ORT_CORE" && [ -f "$ORT_DIR/lib/libonnxruntime.so.1" ]; then
  log "ONNX Runtime core: present (${ORT_CORE%% *})"
else
  tmp=$(mktemp -d)
  npm_fetch "$ORT_CORE" "$tmp"
  install_file "$tmp"/package/bin/napi-v6/linux/x64/libonnxruntime.so.1 "$ORT_DIR/lib/libonnxruntime.so.1" 755
  ln -sfn libonnxruntime.so.1 "$ORT_DIR/lib/libonnxruntime.so"
  rm -rf "$tmp"
  mark_installed "$ORT_CORE"
fi
if [ "${LIPSYNC_CUDA:-0}" = "1" ]; then
  if ort_installed "$ORT_CUDA" && [ -f "$ORT_DIR/lib/libonnxruntime_providers_cuda.so" ]; then
    log "ONNX Runtime CUDA provider: present (${ORT_CUDA%% *})"
  else
    tmp=$(mktemp -d)
    npm_fetch "$ORT_CUDA" "$tmp"
    for f in libonnxruntime_providers_shared.so libonnxruntime_providers_cuda.so; do
      install_file "$tmp/package/Plugins/Linux/x64/$f" "$ORT_DIR/lib/$f" 755
    done
    rm -rf "$tmp"
    mark_installed "$ORT_CUDA"
  fi
else
  log "ONNX Runtime CUDA provider: not requested (LIPSYNC_CUDA=1 scripts/setup.sh fetches it)"
fi

if [ "${SKIP_BUILD:-0}" != "1" ]; then
  BUILD_DIR=${BUILD_DIR:-build}
  log "configuring and building in $BUILD_DIR/ (Release)"
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release ${ONNXRUNTIME_ROOT:+-DONNXRUNTIME_ROOT=$ONNXRUNTIME_ROOT} >/dev/null
  cmake --build "$BUILD_DIR" -j"$(nproc)"
fi
log "done"
