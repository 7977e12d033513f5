#!/usr/bin/env bash
# The packages as a user gets them: prebuilds, pack, plain `npm install` of the tarballs in temporary
# projects outside the workspace, smoke tests against the float64 references, then the source build.
# Runs after `turbo run build` (part of `pnpm test`); writes .ci/results/dist.json (vitest's counters,
# one test per check). Needs the npm registry (cmake-js, node-addon-api, node-gyp-build).
#   scripts/dist-check.sh                   # linux-x64
#   DSA_DIST_ARM64=1 scripts/dist-check.sh  # also linux-arm64: cross build + smoke under qemu (pnpm dist:arm64;
#                                           # ~10 min on 2 busy cores, so not part of pnpm test)
# Without arm64, stale prebuilds/linux-arm64 folders are removed so that nothing old gets packed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PACKAGES=(tensor-core mla-prolog indexer-prolog lightning-indexer sparse-flash-attn fused)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dsa-dist.XXXXXX")
TARBALLS=$WORK/tarballs
RESULT=$ROOT/.ci/results/dist.json
passed=0
failed=0
write_result() {
  mkdir -p "$(dirname "$RESULT")"
  printf '{"numPassedTests":%d,"numFailedTests":%d,"numFailedTestSuites":0,"numPendingTests":0,"numTodoTests":0}\n' \
    "$passed" "$failed" >"$RESULT"
}
trap write_result EXIT
# check NAME COMMAND...: one counted test; its output goes to the log, shown on failure.
check() {
  local name=$1 log=$WORK/log.txt start=$SECONDS
  shift
  if ("$@") >"$log" 2>&1; then
    passed=$((passed + 1))
    echo "dist: ok   $name ($((SECONDS - start)) s)"
  else
    failed=$((failed + 1))
    echo "dist: FAIL $name ($((SECONDS - start)) s)"
    sed 's/^/      /' "$log"
  fi
  [ -n "${DSA_DIST_VERBOSE:-}" ] && sed 's/^/      /' "$log"
  return 0
}
tarball() { ls "$TARBALLS"/dsa-"$1"-*.tgz; }
quiet_npm() { npm --no-audit --no-fund --loglevel=error "$@"; }

prebuild_x64() { bash scripts/prebuild.sh x64; }
prebuild_arm64() { bash scripts/dist-arm64.sh --prebuild; }
ARM64=${DSA_DIST_ARM64:-0}
[ "${ARM64:-0}" = 1 ] || rm -rf packages/*/prebuilds/linux-arm64
pack_all() {
  mkdir -p "$TARBALLS"
  for pkg in "${PACKAGES[@]}"; do
    (cd "packages/$pkg" && pnpm pack --pack-destination "$TARBALLS" >/dev/null) || return 1
  done
  ls -l "$TARBALLS"
}
# What is inside: prebuilds, no build junk, and @dsa/fused pinning its stages to exact versions.
tarball_contents() {
  local bad=0
  for pkg in "${PACKAGES[@]}"; do
    local list
    list=$(tar -tzf "$(tarball "$pkg")")
    echo "$list" | grep -q "package/prebuilds/linux-x64/@dsa+$pkg.napi.glibc.node" || { echo "$pkg: no linux-x64 prebuild"; bad=1; }
    if echo "$list" | grep -E '\.tsbuildinfo$|\.map$|CMakeFiles|package/build/|/src/'; then echo "$pkg: build junk above"; bad=1; fi
  done
  tar -xzOf "$(tarball fused)" package/package.json | node -e '
    const deps = JSON.parse(require("fs").readFileSync(0, "utf8")).dependencies;
    for (const s of ["mla-prolog", "indexer-prolog", "lightning-indexer", "sparse-flash-attn"]) {
      const want = require(`./packages/${s}/package.json`).version;
      if (deps[`@dsa/${s}`] !== want) { console.log(`fused pins @dsa/${s} "${deps[`@dsa/${s}`]}", want exactly ${want}`); process.exit(1); }
    }
    console.log("fused pins", JSON.stringify(deps));' || bad=1
  return $bad
}
# The binary check can fail: a version other than package.json's, and (when the sanitizer build is
# there) a binary linked against the shared libstdc++, are both rejected.
check_binaries_rejects() {
  local fake=$WORK/fake
  mkdir -p "$fake/prebuilds/linux-x64"
  cp packages/lightning-indexer/prebuilds/linux-x64/*.node "$fake/prebuilds/linux-x64/"
  echo '{"name":"@dsa/fake","version":"9.9.9"}' >"$fake/package.json"
  node scripts/check-binaries.mjs "$fake" 2>"$fake/err.txt" && return 1
  cat "$fake/err.txt" && grep -q 'package.json says 9.9.9' "$fake/err.txt" || return 1
  local asan=packages/tensor-core/build-asan/Release/dsa_tensor_core.node
  [ -f "$asan" ] || return 0
  rm "$fake"/prebuilds/linux-x64/* && cp "$asan" "$fake/prebuilds/linux-x64/"
  node scripts/check-binaries.mjs "$fake" 2>"$fake/err.txt" && return 1
  cat "$fake/err.txt" && grep -q 'needs .*GLIBCXX' "$fake/err.txt"
}
new_project() {
  mkdir -p "$1" && cp scripts/smoke.mjs "$1/" && (cd "$1" && echo '{"name":"dsa-smoke","private":true,"type":"module"}' >package.json)
}
install_indexer_alone() {
  new_project "$WORK/indexer" && cd "$WORK/indexer" &&
    quiet_npm install "$(tarball tensor-core)" "$(tarball lightning-indexer)" &&
    ls node_modules/@dsa
}
install_all() {
  new_project "$WORK/all" && cd "$WORK/all" && quiet_npm install "$TARBALLS"/*.tgz && ls node_modules/@dsa
}
smoke() { cd "$1" && node smoke.mjs "$2"; }
dsa_version() { cd "$WORK/all" && npx dsa --version; }
# Without prebuilds or a build, the error says how to fix it in a user's project.
missing_binary_message() {
  cd "$WORK/indexer" && rm -rf node_modules/@dsa/*/prebuilds &&
    node -e 'import("@dsa/lightning-indexer").then((m) => m.nativeAddon()).catch((e) => { console.log(e.code, e.message); })' >msg.txt 2>&1
  cat msg.txt
  grep -q 'npm rebuild @dsa/lightning-indexer --build-from-source' msg.txt && grep -q DSA_ADDON_LIGHTNING_INDEXER msg.txt
}
rebuild_from_source() {
  cd "$WORK/indexer" && local start=$SECONDS &&
    npm rebuild @dsa/tensor-core @dsa/lightning-indexer --build-from-source --foreground-scripts &&
    ls -l node_modules/@dsa/*/build/Release/*.node && echo "source build: $((SECONDS - start)) s"
}
arm64_smoke() { bash "$ROOT/scripts/dist-arm64.sh" --smoke-only "$WORK/all"; }

check "prebuilds linux-x64 (glibc <= 2.28, no GLIBCXX, versions)" prebuild_x64
if [ "${ARM64:-0}" = 1 ]; then
  before=$failed
  check "prebuilds linux-arm64 (cross build; glibc <= 2.28, no GLIBCXX, versions)" prebuild_arm64
  # A failed arm64 build is counted; the x64 checks still run, without arm64 binaries.
  [ "$failed" -eq "$before" ] || { ARM64=0; rm -rf packages/*/prebuilds/linux-arm64; }
fi
check "the binary check rejects a wrong version and a GLIBCXX dependency" check_binaries_rejects
before=$failed
check "pnpm pack every package (prepack checks the binaries)" pack_all
if [ "$failed" -eq "$before" ]; then
  check "tarballs: prebuilds in, build junk out, fused pins exact stage versions" tarball_contents
  check "npm install @dsa/lightning-indexer alone (with @dsa/tensor-core)" install_indexer_alone
  check "smoke: lightning-indexer alone vs /reference (prebuild)" smoke "$WORK/indexer" indexer
  check "npm install every package" install_all
  check "smoke: every stage and the operator in both modes vs references (prebuild)" smoke "$WORK/all" all
  check "dsa --version lists the kernel versions" dsa_version
  if [ "${ARM64:-0}" = 1 ]; then
    check "smoke on linux-arm64 Node under qemu (prebuilds from the tarballs)" arm64_smoke
  fi
  check "without prebuilds: the error gives the npm rebuild command" missing_binary_message
  check "npm rebuild --build-from-source (no prebuilds)" rebuild_from_source
  check "smoke: lightning-indexer alone vs /reference (source build)" smoke "$WORK/indexer" indexer
fi
sizes=$(cd "$TARBALLS" 2>/dev/null && du -k ./*.tgz | awk '{printf "%s %d KiB; ", $2, $1}')
echo "dist: $passed passed, $failed failed; tarballs: ${sizes:-none}; work dir $WORK"
[ "$failed" -eq 0 ] && rm -rf "$WORK"
[ "$failed" -eq 0 ]
