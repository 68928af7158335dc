#!/usr/bin/env bash
# Runs every libFuzzer target of a fuzz build for a bounded time (docs/fuzzing.md) and fails
# on the first target that finds a crash, hang, out-of-memory or sanitizer report.
#
#   fuzz/run_fuzzers.sh BUILD_DIR [TARGET...]
#   FUZZ_SECONDS   seconds per target (default 60)
#   FUZZ_JOBS      parallel fuzzing processes per target (default 1)
# Each target starts from its seeds in fuzz/corpus/<target>/ and keeps what it finds in
# BUILD_DIR/corpus/<target>/ (the repository's seeds stay small); a crashing input lands in
# BUILD_DIR/artifacts/ and is printed with the command that reproduces it.
set -euo pipefail

build_dir=${1:?usage: run_fuzzers.sh BUILD_DIR [TARGET...]}
shift
src_dir=$(cd "$(dirname "$0")/.." && pwd)
seconds=${FUZZ_SECONDS:-60}
jobs=${FUZZ_JOBS:-1}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(frame_fuzzer control_fuzzer hde_batch_fuzzer page_batch_v1_fuzzer
           node_config_fuzzer rollout_config_fuzzer api_body_fuzzer qmp_fuzzer)
fi

mkdir -p "$build_dir/artifacts" "$build_dir/logs"
total=0
failed=()
for t in "${targets[@]}"; do
  bin="$build_dir/fuzz/$t"
  [ -x "$bin" ] || { echo "run_fuzzers: $bin is not built (make fuzz builds it)" >&2; exit 2; }
  corpus="$build_dir/corpus/$t"
  mkdir -p "$corpus"
  parallel=()
  [ "$jobs" -gt 1 ] && parallel=(-jobs="$jobs" -workers="$jobs")
  dict=()
  [ -f "$src_dir/fuzz/dict/$t.dict" ] && dict=(-dict="$src_dir/fuzz/dict/$t.dict")
  log="$build_dir/logs/$t.log"
  echo "== $t: ${seconds}s"
  # -timeout: an input that runs 10 s is a hang; -rss_limit_mb: 2 GiB is an out-of-memory;
  # -malloc_limit_mb: so is a single allocation above 512 MiB (a size taken off the wire).
  set +e
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
  UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} \
    "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 \
    "${parallel[@]}" -print_final_stats=1 "${dict[@]}" \
    -artifact_prefix="$build_dir/artifacts/$t-" "$corpus" "$src_dir/fuzz/corpus/$t" \
    >"$log" 2>&1
  rc=$?
  set -e
  if [ "$jobs" -gt 1 ]; then cat fuzz-*.log >>"$log" 2>/dev/null && rm -f fuzz-*.log; fi
  execs=$(grep -h 'stat::number_of_executed_units' "$log" | awk '{s += $2} END {print s + 0}')
  total=$((total + execs))
  if [ $rc -ne 0 ]; then
    failed+=("$t")
    echo "   FAILED (exit $rc) after $execs executions; log: $log"
    grep -E 'ERROR: |runtime error|Test unit written to' "$log" | head -5 | sed 's/^/   /'
    artifact=$(grep -ho 'Test unit written to [^ ]*' "$log" | head -1 | awk '{print $5}')
    [ -n "$artifact" ] && echo "   reproduce: $bin $artifact"
  else
    echo "   ok: $execs executions, corpus $(ls "$corpus" | wc -l) inputs"
  fi
done
echo "run_fuzzers: $total executions in all"
if [ ${#failed[@]} -gt 0 ]; then
  echo "run_fuzzers: FAILED: ${failed[*]}" >&2
  exit 1
fi
