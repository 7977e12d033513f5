#!/usr/bin/env bash
# Put each native package's binary for one platform into prebuilds/<platform>/ (prebuildify layout,
# chosen at run time by node-gyp-build's matching in tensor-core's loader), then check them.
#   scripts/prebuild.sh x64     # the addons `pnpm build` made (build/Release), this machine is linux-x64
#   scripts/prebuild.sh arm64   # cross-compiled with Debian's g++-aarch64-linux-gnu into build-arm64/
# Both link libstdc++ statically and need glibc >= 2.28 only (see the CMake helper).
set -euo pipefail
cd "$(dirname "$0")/.."
arch="${1:?usage: scripts/prebuild.sh x64|arm64}"
PACKAGES=(tensor-core mla-prolog indexer-prolog lightning-indexer sparse-flash-attn fused)
case "$arch" in
  x64) out=build ;;
  arm64)
    out=build-arm64
    command -v aarch64-linux-gnu-g++ >/dev/null || {
      echo "prebuild: aarch64-linux-gnu-g++ missing: apt-get install -y g++-aarch64-linux-gnu" >&2; exit 1; }
    for pkg in "${PACKAGES[@]}"; do
      echo "prebuild: cross-compiling $pkg for linux-arm64" >&2
      (cd "packages/$pkg" && npx cmake-js build --out "$out" --arch arm64 --log-level warn \
        --CDCMAKE_TOOLCHAIN_FILE="$PWD/../../scripts/aarch64-linux-gnu.cmake" >/dev/null)
    done ;;
  *) echo "prebuild: unknown arch $arch (x64 or arm64)" >&2; exit 1 ;;
esac
for pkg in "${PACKAGES[@]}"; do
  dir="packages/$pkg/prebuilds/linux-$arch"
  rm -rf "$dir" && mkdir -p "$dir"
  cp "packages/$pkg/$out/Release/dsa_${pkg//-/_}.node" "$dir/@dsa+$pkg.napi.glibc.node"
done
node scripts/check-binaries.mjs --require "linux-$arch" "${PACKAGES[@]/#/packages/}"
