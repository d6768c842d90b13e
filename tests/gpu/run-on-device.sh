#!/usr/bin/env bash
# Runs on a GPU machine, from a checkout with gpu-carry/ (made by
# prepare-device-carry.sh) at its root, every GPU check that needs no
# compiler, and leaves the logs in $OUT (or gpu-carry/logs):
# the suite against the CPU backend's outputs, the runtime's GPU tests on
# DeepSeek-V3's kernels, the NCCL communicator with one rank, the route (+ dispatch) benchmark (which checks the
# parallel dispatch up to a million tokens), the hidden rows' movement
# (permute and combine kernels, EP on device buffers over one NCCL rank),
# the GPU tuning of three
# templates (a tuning database), the capture-then-replay sample
# over 58 DeepSeek-V3 layers, the Python package on CUDA tensors
# (tests/gpu/test_python_cuda.py), and moegen against PyTorch eager and
# torch.compile (tests/gpu/bench_routing.py).
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-gpu-carry/logs}"
mkdir -p "$out"
status=0
{
  date -u; echo "commit $(cat gpu-carry/commit)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm \
    --format=csv
} 2>&1 | tee "$out/device.txt"
# NCCL: PyTorch's when there is one (the suite's permute cases also run
# the EP path over a one-rank NCCL communicator).
nccl="$(python3 -c 'import nvidia.nccl, os; print(os.path.join(nvidia.nccl.__path__[0], "lib", "libnccl.so.2"))' 2>/dev/null || true)"
MOEGEN_NCCL_LIBRARY="$nccl" gpu-carry/moegen-gpu-check gpu-carry/suite 2>&1 |
  tee "$out/suite.txt" || status=1
MOEGEN_TEST_KERNEL_DIR=gpu-carry/deepseek-v3 gpu-carry/MoEGenRuntimeTests \
  --gtest_filter='RuntimeGpu*' 2>&1 | tee "$out/runtime-gpu.txt" || status=1
# The NCCL communicator with one rank.
MOEGEN_NCCL_LIBRARY="$nccl" gpu-carry/MoEGenRuntimeTests \
  --gtest_filter='EpNccl*' 2>&1 | tee "$out/nccl.txt" || status=1
# The benchmark also checks the parallel dispatch at every T against the
# stable counting sort of the GPU's own ids (up to a million tokens).
gpu-carry/moegen-gpu-check --bench gpu-carry/deepseek-v3 \
  --tokens 1,64,8192,65536,1048576 --reps 200 2>&1 |
  tee -a "$out/bench.txt" || status=1
gpu-carry/moegen-gpu-check --bench gpu-carry/kimi-k2 \
  --tokens 1,64,8192,65536 --reps 200 2>&1 | tee -a "$out/bench.txt" ||
  status=1
# Hidden rows at DeepSeek-V3's size (bf16, H = 7168): the generated permute
# and combine kernels, and EP dispatch and combine on device buffers over
# one NCCL rank.
MOEGEN_NCCL_LIBRARY="$nccl" gpu-carry/moegen-gpu-check \
  --bench gpu-carry/deepseek-v3-moe --tokens 64,1024,8192 --reps 100 2>&1 |
  tee -a "$out/bench.txt" || status=1
# GPU tuning: the candidate schedules compiled where the compiler is, timed
# here (events, cold L2), the winners into a tuning database that comes
# back with the logs (docs/autotune.md, "On a GPU machine without the
# compiler").
rm -rf /tmp/moegen-tune && mkdir -p /tmp/moegen-tune
python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
  gpu-carry/tune-candidates.tar.xz /tmp/moegen-tune &&
  gpu-carry/moegen-gpu-check --tune /tmp/moegen-tune/gpu-tune-candidates \
    --db "$out/tuning.json" --tokens 1,64,1024,8192,65536 2>&1 |
  tee "$out/tune.txt" || status=1
gpu-carry/moegen-sample-capture-replay-rt --kernels gpu-carry/deepseek-v3 \
  --tokens 8192 --layers 58 2>&1 | tee "$out/sample.txt" || status=1
# The Python package without the compiler (python/runtime-only/), built
# here with this machine's Python and nanobind, on DeepSeek-V3's kernels:
# CUDA tensors on a side stream, replay, capture, errors, the torch op
# under torch.compile and in a CUDA graph (tests/gpu/test_python_cuda.py).
if python3 -c 'import torch, nanobind, pytest' 2>/dev/null; then
  { cmake -S python/runtime-only -B /tmp/moegen-python -G Ninja \
      -DPython_EXECUTABLE="$(command -v python3)" \
      -DMOEGEN_JSON_INCLUDE="$PWD/gpu-carry/include" &&
    cmake --build /tmp/moegen-python &&
    PYTHONPATH=/tmp/moegen-python MOEGEN_TEST_KERNEL_DIR=gpu-carry/deepseek-v3 \
      python3 -m pytest -q -s -p no:cacheprovider tests/gpu/test_python_cuda.py
  } 2>&1 | tee "$out/python.txt" || status=1
elif python3 -c 'import torch' 2>/dev/null; then
  # PyTorch without nanobind or pytest: the check cannot run, and must not
  # pass silently.
  echo "test_python_cuda.py: error: this machine has PyTorch but not nanobind and pytest" |
    tee "$out/python.txt"
  status=1
else
  echo "test_python_cuda.py skipped: no PyTorch here" | tee "$out/python.txt"
fi
# moegen against PyTorch eager and torch.compile, results checked equal
# first (needs PyTorch on the GPU machine).
if python3 -c 'import torch' 2>/dev/null; then
  python3 tests/gpu/bench_routing.py --kernels gpu-carry/bench --out "$out" \
    2>&1 | tee "$out/bench-peers.txt" || status=1
else
  echo "bench_routing.py skipped: no PyTorch here" | tee "$out/bench-peers.txt"
fi
exit $status
