#!/usr/bin/env bash
# The test run of `make test`: the unit tests, then the integration tests, of BUILD_DIR. With
# ASAN_DIR (`make test-all`), then the unit tests once more under AddressSanitizer +
# UndefinedBehaviorSanitizer from ASAN_DIR (docs/fuzzing.md): that build starts at once at the
# lowest CPU and I/O priority, so it runs on what the first two leave idle (the integration
# tests mostly wait on real processes) and slows them down by little; it must be done before
# its own run can start.
#
#   scripts/run-tests.sh BUILD_DIR [ASAN_DIR [JOBS]]
# Stops at the first failing step (like make), after stopping the background build.
set -euo pipefail
build=${1:?usage: run-tests.sh BUILD_DIR [ASAN_DIR [JOBS]]}
asan=${2:-}
jobs=${3:-2}

start=$(date +%s)
step() { echo "== run-tests: $* ($(( $(date +%s) - start )) s)"; }
main_tests() {
  step "unit tests ($build)"
  (cd "$build" && ctest --output-on-failure --timeout 600 -j 2 -LE integration)
  step "integration tests ($build)"
  (cd "$build" && ctest --output-on-failure --timeout 600 -L integration)
}
if [ -z "$asan" ]; then
  main_tests
  step "all passed"
  exit 0
fi

asan_log="$asan/background-build.log"
setsid nice -n 19 ionice -c 3 cmake --build "$asan" -j "$jobs" --target dwcp_unit_tests \
  > "$asan_log" 2>&1 &
asan_build=$!
stop_background() {
  if kill -0 "$asan_build" 2>/dev/null; then
    kill -- "-$asan_build" 2>/dev/null || true  # its own process group: ninja and compilers
  fi
}
trap stop_background EXIT

main_tests

step "waiting for the sanitizer build ($asan_log)"
if ! wait "$asan_build"; then
  tail -n 60 "$asan_log"
  echo "run-tests: the sanitizer build of $asan failed (whole log: $asan_log)" >&2
  exit 1
fi
step "unit tests under ASan + UBSan ($asan)"
(cd "$asan" && ctest --output-on-failure --timeout 900 -j 2 -L unit)
step "all passed"
