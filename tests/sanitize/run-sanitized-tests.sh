#!/usr/bin/env bash
# The sanitizer job: builds moegen with AddressSanitizer and
# UndefinedBehaviorSanitizer in build-asan/ (incrementally) and runs every
# GoogleTest and lit test there (check-moegen). Any finding fails a test,
# and with it this script. The sanitizers' options for the tests come from
# tests/lit/lit.cfg.py and tests/unit/lit.cfg.py (docs/development.md,
# "Sanitizers").
#
# Environment: MOEGEN_SANITIZE_BUILD_DIR (default build-asan).
set -euo pipefail
cd "$(dirname "$0")/../.."
build_dir="${MOEGEN_SANITIZE_BUILD_DIR:-build-asan}"
if [ ! -f "$build_dir/build.ninja" ]; then
  # -O1: the sanitizers' usual level, and about half the compile time of
  # -O3 on the 2-core CI machine.
  cmake -S . -B "$build_dir" -G Ninja -DLLVM_USE_LINKER=lld \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O1 -DNDEBUG" \
    -DCMAKE_C_FLAGS_RELEASE="-O1 -DNDEBUG" -DMOEGEN_SANITIZE=address,undefined
fi
cmake --build "$build_dir" --target check-moegen
