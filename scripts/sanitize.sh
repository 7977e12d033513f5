#!/usr/bin/env bash
# Build every addon with AddressSanitizer + UndefinedBehaviorSanitizer (into build-asan/, beside the
# normal build) and run the test suite against those builds. Any sanitizer report aborts the run.
#   scripts/sanitize.sh                 # the whole suite
#   scripts/sanitize.sh --project fused # vitest arguments select a subset
#   scripts/sanitize.sh --ci            # the subset `pnpm test` runs: tensor-core and the fused
#                                       # operator (whose chain mode drives every stage's addon)
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES=(tensor-core mla-prolog indexer-prolog lightning-indexer sparse-flash-attn fused)
for pkg in "${PACKAGES[@]}"; do
  echo "building $pkg with ASan + UBSan" >&2
  (cd "packages/$pkg" && DSA_SANITIZE=1 npx cmake-js build --out build-asan --log-level warn >/dev/null)
done
for pkg in "${PACKAGES[@]}"; do
  name="dsa_${pkg//-/_}"
  var="DSA_ADDON_$(echo "${pkg//-/_}" | tr '[:lower:]' '[:upper:]')"
  export "$var=$PWD/packages/$pkg/build-asan/Release/$name.node"
done
# Node itself is not instrumented: the ASan runtime must be loaded first, and leak checking would
# report V8's own allocations at exit.
export LD_PRELOAD="$(g++ -print-file-name=libasan.so) $(g++ -print-file-name=libubsan.so)"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
if [ "${1:-}" = "--ci" ]; then
  shift
  export DSA_TEST_REPORT=.ci/results/sanitize.json
  set -- --project tensor-core --project fused "$@"
  : "${DSA_SANITIZE_TIMEOUT_S:=1200}"  # the subset takes about 3 min
fi
# A deadlock in a native call would otherwise run until CI's limit (see with-timeout.mjs).
exec node scripts/with-timeout.mjs "${DSA_SANITIZE_TIMEOUT_S:-3600}" npx vitest run "$@"
