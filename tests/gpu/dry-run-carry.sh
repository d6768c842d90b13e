#!/usr/bin/env bash
# Runs a prepared gpu-carry/ (tests/gpu/prepare-device-carry.sh) through
# run-on-device.sh where no GPU is, against the runtime tests' stand-in
# libcuda, which checks every launch's arguments and runs nothing: every
# comparison fails, and says so, but the carry's layout, the binaries'
# loading and binding, the runner's steps, limits and out files, and any
# crash on the host side show before a GPU machine's time is spent.
#
#   tests/gpu/dry-run-carry.sh [OUT] [STEP...]     # default OUT: /tmp/moegen-dry-run
#
# Works on a copy (the carry's cubins become the stand-in's images there).
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-/tmp/moegen-dry-run}"
shift || true
fake="$(ls build/tests/unit/fake-cuda/*.so 2>/dev/null | head -1)"
if [[ ! -d gpu-carry || -z "$fake" ]]; then
  echo "dry-run-carry.sh: error: needs gpu-carry/ (tests/gpu/prepare-device-carry.sh) and build/tests/unit/fake-cuda/ (a build with the CUDA runtime)" >&2
  exit 2
fi
rm -rf "$out" && mkdir -p "$out/fakecuda" "$out/candidates"
cp -r gpu-carry "$out/gpu-carry"
ln -s "$PWD/$fake" "$out/fakecuda/libcuda.so.1"
if [[ -f "$out/gpu-carry/suite.tar.xz" ]]; then
  mkdir -p "$out/suite" && tar -xJf "$out/gpu-carry/suite.tar.xz" -C "$out/suite"
  python3 tests/lit/GPU/Inputs/fake_cubins.py "$out/suite/suite"
  tar -cJf "$out/gpu-carry/suite.tar.xz" -C "$out/suite" suite
else
  python3 tests/lit/GPU/Inputs/fake_cubins.py "$out/gpu-carry/suite"
fi
python3 tests/lit/GPU/Inputs/fake_cubins.py \
  "$out"/gpu-carry/{deepseek-v3,kimi-k2,deepseek-v3-moe} "$out"/gpu-carry/bench/*
tar -xJf "$out/gpu-carry/tune-candidates.tar.xz" -C "$out/candidates"
python3 tests/lit/GPU/Inputs/fake_cubins.py "$out/candidates/gpu-tune-candidates"
tar -cJf "$out/gpu-carry/tune-candidates.tar.xz" -C "$out/candidates" gpu-tune-candidates
LD_LIBRARY_PATH="$out/fakecuda" tests/gpu/run-on-device.sh \
  --carry "$out/gpu-carry" --out "$out/out" "$@"
