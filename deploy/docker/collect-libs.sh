#!/usr/bin/env bash
# Copies the shared libraries a binary links (as `ldd` resolves them on the build
# machine, Debian 12) into DEST, so a container image can run it without the -dev
# packages: the runtime stage sets LD_LIBRARY_PATH=DEST. The C and C++ runtime (glibc,
# libstdc++, libgcc_s) is left to the image's own, which must be as new or newer.
# Usage: deploy/docker/collect-libs.sh BINARY DEST
set -euo pipefail
if [ $# -ne 2 ] || [ ! -x "$1" ]; then
  echo "usage: $0 BINARY DEST (BINARY: an executable, e.g. build/lipsync)" >&2
  exit 2
fi
BINARY=$1 DEST=$2
mkdir -p "$DEST"
missing=$(ldd "$BINARY" | awk '/not found/{print $1}')
if [ -n "$missing" ]; then
  echo "collect-libs: $BINARY needs libraries ldd cannot find: $missing" >&2
  exit 1
fi
count=0
while read -r name path; do
  case "$name" in
    linux-vdso.so.*|ld-linux*|libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|librt.so.*) continue ;;
    libstdc++.so.*|libgcc_s.so.*) continue ;;
  esac
  cp -L "$path" "$DEST/$name"
  count=$((count + 1))
done < <(ldd "$BINARY" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}')
echo "collect-libs: $count libraries of $BINARY copied to $DEST"
