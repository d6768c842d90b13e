#!/usr/bin/env bash
# Prepares what a GPU machine without LLVM/MLIR needs to run moegen's GPU
# checks, in gpu-carry/ (ignored by git): the runtime-only checker and
# runtime tests and the runtime-only sample (stripped), the suite of kernels + inputs + CPU outputs,
# DeepSeek-V3's kernels for the runtime's and the Python package's GPU tests
# and the benchmark, and nlohmann-json's headers for the Python package.
# Then copy gpu-carry/ to the root of a checkout of the same commit on the
# GPU machine and run tests/gpu/run-on-device.sh there (docs/development.md,
# "On a GPU machine").
#
#   tests/gpu/prepare-device-carry.sh [ARCH]     # default sm_90 (H100/H200)
set -euo pipefail
cd "$(dirname "$0")/../.."
arch="${1:-sm_90}"
cmake --build build --target moegen moegen-gpu-check MoEGenRuntimeTests \
  moegen-sample-capture-replay-rt
rm -rf gpu-carry && mkdir -p gpu-carry
python3 tests/gpu/make_gpu_suite.py --bin build/bin --out gpu-carry/suite \
  --arch "$arch"
# Packed (52 MB of cubins and .npy files in about half): what travels to a
# GPU machine is limited, and the suite is most of it. run-on-device.sh
# unpacks it.
tar -cf - -C gpu-carry suite | xz -T0 -6 > gpu-carry/suite.tar.xz
rm -rf gpu-carry/suite
build/bin/moegen compile templates/deepseek-v3.yaml --emit=cubin \
  --arch "$arch" -o gpu-carry/deepseek-v3
build/bin/moegen compile templates/kimi-k2.yaml --emit=cubin \
  --arch "$arch" -o gpu-carry/kimi-k2
# The peer benchmark's kernels (tests/gpu/bench_routing.py): fp32 logits,
# routing and dispatch only, as the peers compute them (and the expert-choice
# route, a cooperative grid, against its stable-sort peer).
for t in deepseek-v3 qwen3-30b-a3b kimi-k2 deepseek-v4-flash deepseek-v4-flash-hash \
    expert-choice-64; do
  mkdir -p gpu-carry/bench-specs
  sed -e 's/^logits_dtype:.*/logits_dtype: f32/' -e '/^capture:/d' \
    -e '/^replay:/d' "templates/$t.yaml" > "gpu-carry/bench-specs/$t.yaml"
  grep -q '^logits_dtype:' "gpu-carry/bench-specs/$t.yaml" ||
    echo 'logits_dtype: f32' >> "gpu-carry/bench-specs/$t.yaml"
  build/bin/moegen compile "gpu-carry/bench-specs/$t.yaml" --emit=cubin \
    --arch "$arch" -o "gpu-carry/bench/$t"
done
# The MoE block's row movement at DeepSeek-V3's hidden size (bf16 rows):
# the generated permute and combine kernels, and EP on device buffers over
# one NCCL rank, after each route (moegen-gpu-check --bench).
{ sed -e '/^capture:/d' -e '/^replay:/d' templates/deepseek-v3.yaml
  printf 'permute: true\nhidden_dtype: bf16\nhidden_size: 7168\n'; } > gpu-carry/bench-specs/deepseek-v3-moe.yaml
build/bin/moegen compile gpu-carry/bench-specs/deepseek-v3-moe.yaml \
  --emit=cubin --arch "$arch" -o gpu-carry/deepseek-v3-moe
# GPU tuning without the compiler: every candidate schedule of the
# templates the GPU targets name, compiled here (cubins only, xz-packed:
# about 0.4 MB for 170 kernel directories), timed there by
# moegen-gpu-check --tune into a tuning database (docs/autotune.md).
rm -rf build/gpu-tune-candidates
build/bin/moegen autotune templates/deepseek-v3.yaml \
  templates/qwen3-30b-a3b.yaml templates/kimi-k2.yaml --backend cuda \
  --arch "$arch" --emit-candidates build/gpu-tune-candidates
tar -cJf gpu-carry/tune-candidates.tar.xz -C build gpu-tune-candidates
strip -o gpu-carry/moegen-gpu-check build/bin/moegen-gpu-check
strip -o gpu-carry/MoEGenRuntimeTests build/tests/unit/MoEGenRuntimeTests
strip -o gpu-carry/moegen-sample-capture-replay-rt \
  build/bin/moegen-sample-capture-replay-rt
# The Python package's runtime-only build (python/runtime-only/) is built
# there; it needs nlohmann-json's headers, which that machine may lack.
mkdir -p gpu-carry/include
cp -r "$(dirname "$(find /usr/include -path '*nlohmann/json.hpp' | head -1)")" \
  gpu-carry/include/
git rev-parse HEAD > gpu-carry/commit
du -sh gpu-carry
