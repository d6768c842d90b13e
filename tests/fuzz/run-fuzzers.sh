#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz/ with clang into build-fuzz/
# (incrementally) and runs them.
#
#   tests/fuzz/run-fuzzers.sh            CI: each CI target, seeded
#                                        (-seed=1, a fixed number of runs)
#   tests/fuzz/run-fuzzers.sh SECONDS    campaign: every target for SECONDS
#                                        each, random seed
#
# Each target starts from a copy of tests/fuzz/corpus/<target>/ in a
# temporary directory; the checked-in corpus is never modified. Exits
# non-zero on any finding (crash, leak, undefined behaviour, timeout, out of
# memory) after printing the reproducer's path and the command that replays
# it. Findings are kept in build-fuzz/findings/<target>/.
#
# Environment: MOEGEN_FUZZ_BUILD_DIR (default build-fuzz),
# MOEGEN_FUZZ_TARGETS (default: CI targets, or all in campaign mode),
# MOEGEN_FUZZ_KEEP_CORPUS=1 keeps the grown corpora of a campaign.
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds="${1:-}"
if [ -n "$seconds" ] && ! [[ "$seconds" =~ ^[1-9][0-9]{0,6}$ ]]; then
  echo "run-fuzzers.sh: error: SECONDS must be a positive integer, got '$seconds'" >&2
  exit 2
fi

build_dir="${MOEGEN_FUZZ_BUILD_DIR:-build-fuzz}"
# Seeded CI runs: executions per target, each about 15 s on the 2-core CI
# machine (the CI run must stay under 30 minutes), and a cap in case the
# machine is much slower. Campaigns (SECONDS) are where coverage grows.
declare -A ci_runs=([npy_fuzzer]=250000 [manifest_fuzzer]=75000
  [spec_fuzzer]=250000 [moe_dialect_fuzzer]=250000)
ci_targets="npy_fuzzer manifest_fuzzer spec_fuzzer moe_dialect_fuzzer"
ci_cap_s=60
all_targets="npy_fuzzer manifest_fuzzer spec_fuzzer moe_dialect_fuzzer"

# The spec and dialect targets need the main build's generated headers.
mlir=ON
if [ ! -f build/dialects/moe/IR/MoEOps.h.inc ]; then
  if [ -f build/build.ninja ]; then
    ninja -C build MoEOpsIncGen >/dev/null
  else
    mlir=OFF
  fi
fi

if [ -n "$seconds" ]; then
  targets="${MOEGEN_FUZZ_TARGETS:-$all_targets}"
else
  targets="${MOEGEN_FUZZ_TARGETS:-$ci_targets}"
fi
if [ "$mlir" = OFF ]; then
  for t in spec_fuzzer moe_dialect_fuzzer; do
    if [[ " $targets " == *" $t "* ]]; then
      echo "run-fuzzers.sh: skipping $t: no build/ to take the dialect's headers from (run .ci/setup)"
      targets="${targets//$t/}"
    fi
  done
fi

if [ ! -f "$build_dir/build.ninja" ]; then
  cmake -S tests/fuzz -B "$build_dir" -G Ninja -DCMAKE_CXX_COMPILER=clang++ \
    -DMOEGEN_FUZZ_MLIR="$mlir" >/dev/null
else
  cmake -S tests/fuzz -B "$build_dir" -DMOEGEN_FUZZ_MLIR="$mlir" >/dev/null
fi
# shellcheck disable=SC2086
cmake --build "$build_dir" --target $targets

work="$(mktemp -d "${TMPDIR:-/tmp}/moegen-fuzz.XXXXXX")"
if [ "${MOEGEN_FUZZ_KEEP_CORPUS:-0}" = 1 ]; then
  echo "run-fuzzers.sh: grown corpora are kept in $work"
else
  trap 'rm -rf "$work"' EXIT
fi

failed=0
for target in $targets; do
  name="${target%_fuzzer}"
  corpus="$work/$name"
  findings="$build_dir/findings/$name"
  mkdir -p "$corpus" "$findings"
  cp tests/fuzz/corpus/"$name"/* "$corpus"/
  if [ -n "$seconds" ]; then
    args=(-max_total_time="$seconds")
  else
    args=(-seed=1 -runs="${ci_runs[$target]:-50000}" -max_total_time="$ci_cap_s")
  fi
  log="$work/$name.log"
  echo "== $target ${args[*]}"
  start=$(date +%s)
  rc=0
  "$build_dir/$target" "${args[@]}" -timeout=25 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$findings/" "$corpus" >"$log" 2>&1 || rc=$?
  elapsed=$(($(date +%s) - start))
  stats="$(grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -1 || true)"
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
  echo "   ${elapsed}s, ${execs:-?} executions; last: ${stats:-none}"
  if [ "$rc" -ne 0 ]; then
    failed=1
    echo "run-fuzzers.sh: error: $target found a problem (exit $rc); its log:" >&2
    grep -v -E '^#[0-9]+[[:space:]]' "$log" | tail -60 >&2
    # libFuzzer prints "Test unit written to PATH" for each reproducer.
    sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | while read -r repro; do
      echo "run-fuzzers.sh: reproducer: $repro" >&2
      echo "run-fuzzers.sh: replay with: $build_dir/$target $repro" >&2
      if [ "$(stat -c %s "$repro")" -le 4096 ]; then
        echo "run-fuzzers.sh: reproducer (base64): $(base64 -w0 "$repro")" >&2
      fi
    done
  fi
done
exit "$failed"
