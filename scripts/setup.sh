#!/usr/bin/env bash
# Installs everything the build, tests and demo need on Debian 12, then configures
# and builds. Idempotent: a rerun with everything present takes seconds.
#   scripts/setup.sh            # packages + ONNX Runtime + build (Release)
#   SKIP_BUILD=1 scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

log() { printf '[setup] %s\n' "$*"; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

PACKAGES=(
  build-essential cmake pkg-config git ca-certificates
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libyaml-cpp-dev nlohmann-json3-dev libjpeg62-turbo-dev libpng-dev libyuv-dev
  libonnx-dev libgtest-dev libgmock-dev libbenchmark-dev libssl-dev
  libfftw3-dev libsoxr-dev libsndfile1-dev libjwt-dev
  libx264-dev libopenh264-dev libopus-dev libboost1.81-dev chromium
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

# ONNX Runtime 1.29.0 (official Linux x64 build) from the npm package that ships it.
ORT_PKG="com.github.asus4.onnxruntime@0.4.9"
ORT_DIR="$ROOT/third_party/onnxruntime"
if [ ! -f "$ORT_DIR/lib/libonnxruntime.so.1" ] || [ ! -f "$ORT_DIR/include/onnxruntime_cxx_api.h" ]; then
  log "fetching ONNX Runtime from npm ($ORT_PKG)"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$ORT_PKG" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp" \
    package/Plugins/Linux/x64/libonnxruntime.so \
    "package/Plugins/iOS~/onnxruntime.xcframework/ios-arm64/onnxruntime.framework/Headers"
  rm -rf "$ORT_DIR" && mkdir -p "$ORT_DIR/lib" "$ORT_DIR/include"
  cp "$tmp"/package/Plugins/Linux/x64/libonnxruntime.so "$ORT_DIR/lib/libonnxruntime.so.1"
  ln -sf libonnxruntime.so.1 "$ORT_DIR/lib/libonnxruntime.so"
  cp "$tmp"/package/Plugins/iOS~/onnxruntime.xcframework/ios-arm64/onnxruntime.framework/Headers/*.h "$ORT_DIR/include/"
  rm -rf "$tmp"
else
  log "ONNX Runtime: present in third_party/onnxruntime"
fi

if [ "${SKIP_BUILD:-0}" != "1" ]; then
  BUILD_DIR=${BUILD_DIR:-build}
  log "configuring and building in $BUILD_DIR/ (Release)"
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release ${ONNXRUNTIME_ROOT:+-DONNXRUNTIME_ROOT=$ONNXRUNTIME_ROOT} >/dev/null
  cmake --build "$BUILD_DIR" -j"$(nproc)"
fi
log "done"
