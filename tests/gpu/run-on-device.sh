#!/usr/bin/env bash
# Runs on a GPU machine, from a checkout with gpu-carry/ (made by
# prepare-device-carry.sh) at its root, every GPU check that needs no
# compiler, as named steps in the order below (correctness first, then the
# figures the schedule work is judged by, then the rest):
#
#   suite    the carried suite against the CPU backend's outputs
#   bench    route (+ dispatch) on DeepSeek-V3 and Kimi K2, cold L2, which
#            also checks the parallel dispatch up to a million tokens
#   peers    moegen against PyTorch eager and torch.compile
#            (tests/gpu/bench_routing.py)
#   runtime  the runtime's GPU tests on DeepSeek-V3's kernels
#   nccl     the NCCL communicator with one rank
#   rows     the hidden rows' movement: permute and combine kernels, EP on
#            device buffers over one NCCL rank
#   sample   capture-then-replay over 58 DeepSeek-V3 layers
#   tune     GPU tuning of three templates (a tuning database)
#   python   the Python package on CUDA tensors (tests/gpu/test_python_cuda.py)
#
#   tests/gpu/run-on-device.sh [--out DIR] [--carry DIR] [--budget S]
#                              [--timeout S] [--list] [STEP...]
#
# STEP... runs those steps only (in the order above), for a second run of
# what the first left out. Each step runs under its own time limit, so that
# a hang costs that step alone; no step starts with less than 5 of --budget
# seconds left (default 540: the whole run ends within ten minutes; 0 for
# no budget), and one that would run past it is cut to what is left. --timeout
# caps every step's limit.
#
# The out directory ($OUT, else gpu-carry/logs) receives four files, each
# rewritten after every step, so that whatever stops the run leaves what
# was done: summary.txt (device, commit, each step's status and seconds),
# logs.tar.gz (every step's log), tuning.json and bench-peers.json (the
# results in machine-readable form). The summary and the key figures are
# printed last. Exit status 0 if every step asked for passed, 1 if one
# failed, was cut by its limit or was left out by the budget, 2 for bad
# arguments.
set -uo pipefail
cd "$(dirname "$0")/../.."

usage() {
  echo "usage: tests/gpu/run-on-device.sh [--out DIR] [--carry DIR] [--budget S] [--timeout S] [--list] [STEP...]"
}

all_steps=(suite bench peers runtime nccl rows sample tune python)
declare -A limit=([suite]=180 [bench]=120 [peers]=240 [runtime]=60
  [nccl]=30 [rows]=90 [sample]=60 [tune]=120 [python]=180)

out="${OUT:-}"
carry=gpu-carry
budget=540
cap=0
wanted=()
while (($#)); do
  case "$1" in
  --out | --carry | --budget | --timeout)
    if (($# < 2)); then
      echo "run-on-device.sh: error: $1 needs a value" >&2
      usage >&2
      exit 2
    fi
    case "$1" in
    --out) out="$2" ;;
    --carry) carry="$2" ;;
    --budget) budget="$2" ;;
    --timeout) cap="$2" ;;
    esac
    shift 2
    ;;
  --list)
    for s in "${all_steps[@]}"; do echo "$s ${limit[$s]}"; done
    exit 0
    ;;
  -h | --help)
    usage
    exit 0
    ;;
  -*)
    echo "run-on-device.sh: error: unknown option $1" >&2
    usage >&2
    exit 2
    ;;
  *)
    if [[ -z "${limit[$1]+x}" ]]; then
      echo "run-on-device.sh: error: unknown step '$1' (steps: ${all_steps[*]})" >&2
      exit 2
    fi
    wanted+=("$1")
    shift
    ;;
  esac
done
for value in "$budget" "$cap"; do
  if ! [[ "$value" =~ ^[0-9]+$ ]]; then
    echo "run-on-device.sh: error: --budget and --timeout take whole seconds, not '$value'" >&2
    exit 2
  fi
done
if [[ ! -d "$carry" ]]; then
  echo "run-on-device.sh: error: $carry: no such directory (make it with tests/gpu/prepare-device-carry.sh)" >&2
  exit 2
fi
carry="$(cd "$carry" && pwd)"
out="${out:-$carry/logs}"
mkdir -p "$out" || exit 2
logs="$(mktemp -d "${TMPDIR:-/tmp}/moegen-gpu-logs.XXXXXX")" || exit 2
trap 'rm -rf "$logs"' EXIT
# The steps asked for, in the order above, each once.
if ((${#wanted[@]} == 0)); then
  wanted=("${all_steps[@]}")
else
  asked=" ${wanted[*]} "
  wanted=()
  for s in "${all_steps[@]}"; do
    [[ "$asked" == *" $s "* ]] && wanted+=("$s")
  done
fi

# NCCL: PyTorch's when there is one (the suite's permute cases also run the
# EP path over a one-rank NCCL communicator).
nccl="$(python3 -c 'import nvidia.nccl, os; print(os.path.join(nvidia.nccl.__path__[0], "lib", "libnccl.so.2"))' 2>/dev/null || true)"
export MOEGEN_NCCL_LIBRARY="$nccl" PYTHONUNBUFFERED=1

# Python's tarfile, not tar: the GPU machine need not have xz.
unpack() { # ARCHIVE DIR
  python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$1" "$2"
}

#--- The steps: each writes its log to stdout, exit status 0 if it passed --#
step_suite() {
  # prepare-device-carry.sh packs the suite; a directory serves as well.
  local suite="$carry/suite"
  if [[ -f "$carry/suite.tar.xz" ]]; then
    suite="$logs/suite-unpacked/suite"
    unpack "$carry/suite.tar.xz" "$logs/suite-unpacked" || return
  fi
  "$carry/moegen-gpu-check" "$suite"
}
step_bench() {
  # Also checks the parallel dispatch at every T against the stable
  # counting sort of the GPU's own ids (up to a million tokens). Kimi K2
  # runs whatever DeepSeek-V3 gave.
  local status=0
  "$carry/moegen-gpu-check" --bench "$carry/deepseek-v3" \
    --tokens 1,64,8192,65536,1048576 --reps 200 || status=1
  "$carry/moegen-gpu-check" --bench "$carry/kimi-k2" \
    --tokens 1,64,8192,65536 --reps 200 || status=1
  return $status
}
step_peers() {
  if ! python3 -c 'import torch' 2>/dev/null; then
    echo "bench_routing.py skipped: no PyTorch here"
    return 0
  fi
  # Results checked equal first; bench-peers.json is rewritten after every
  # row.
  python3 tests/gpu/bench_routing.py --kernels "$carry/bench" --out "$out"
}
step_runtime() {
  MOEGEN_TEST_KERNEL_DIR="$carry/deepseek-v3" "$carry/MoEGenRuntimeTests" \
    --gtest_filter='RuntimeGpu*'
}
step_nccl() {
  "$carry/MoEGenRuntimeTests" --gtest_filter='EpNccl*'
}
step_rows() {
  # Hidden rows at DeepSeek-V3's size (bf16, H = 7168).
  "$carry/moegen-gpu-check" --bench "$carry/deepseek-v3-moe" \
    --tokens 64,1024,8192 --reps 100
}
step_sample() {
  "$carry/moegen-sample-capture-replay-rt" --kernels "$carry/deepseek-v3" \
    --tokens 8192 --layers 58
}
step_tune() {
  # The candidate schedules compiled where the compiler is, timed here
  # (events, cold L2), the winners into a tuning database
  # (docs/autotune.md, "On a GPU machine without the compiler").
  local dir="$logs/tune-candidates"
  mkdir -p "$dir" && unpack "$carry/tune-candidates.tar.xz" "$dir" &&
    "$carry/moegen-gpu-check" --tune "$dir/gpu-tune-candidates" \
      --db "$out/tuning.json" --tokens 1,64,1024,8192,65536
}
step_python() {
  # The package without the compiler (python/runtime-only/), built here with
  # this machine's Python and nanobind, on DeepSeek-V3's kernels.
  if ! python3 -c 'import torch' 2>/dev/null; then
    echo "test_python_cuda.py skipped: no PyTorch here"
    return 0
  fi
  if ! python3 -c 'import nanobind, pytest' 2>/dev/null; then
    # PyTorch without nanobind or pytest: the check cannot run, and must
    # not pass silently.
    echo "test_python_cuda.py: error: this machine has PyTorch but not nanobind and pytest"
    return 1
  fi
  local build="$logs/python-build"
  cmake -S python/runtime-only -B "$build" -G Ninja \
    -DPython_EXECUTABLE="$(command -v python3)" \
    -DMOEGEN_JSON_INCLUDE="$carry/include" &&
    cmake --build "$build" &&
    PYTHONPATH="$build" MOEGEN_TEST_KERNEL_DIR="$carry/deepseek-v3" \
      python3 -m pytest -q -s -p no:cacheprovider tests/gpu/test_python_cuda.py
}

#--- The runner --------------------------------------------------------------#
start=$SECONDS
declare -A state seconds
summary() {
  {
    cat "$logs/device.txt"
    printf '\n%-8s %-9s %8s\n' step status seconds
    for s in "${wanted[@]}"; do
      printf '%-8s %-9s %8s\n' "$s" "${state[$s]:-not run}" "${seconds[$s]:--}"
    done
    printf 'total %d s\n' $((SECONDS - start))
  } > "$logs/summary.txt"
  cp "$logs/summary.txt" "$out/summary.txt.tmp" &&
    mv "$out/summary.txt.tmp" "$out/summary.txt"
  tar -czf "$out/logs.tar.gz.tmp" -C "$logs" --exclude=python-build \
    --exclude=tune-candidates --exclude=suite-unpacked . &&
    mv "$out/logs.tar.gz.tmp" "$out/logs.tar.gz"
}

{
  date -u
  echo "commit $(cat "$carry/commit" 2>/dev/null || echo unknown)"
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm \
      --format=csv
  else
    echo "nvidia-smi: not found"
  fi
} > "$logs/device.txt" 2>&1
cat "$logs/device.txt"
summary

status=0
for s in "${wanted[@]}"; do
  elapsed=$((SECONDS - start))
  secs=${limit[$s]}
  if ((cap > 0 && cap < secs)); then secs=$cap; fi
  if ((budget > 0)); then
    left=$((budget - elapsed))
    if ((left < 5)); then
      state[$s]="budget"
      echo "== $s: not started, the budget of ${budget} s is spent" |
        tee "$logs/$s.txt"
      status=1
      summary
      continue
    fi
    if ((left < secs)); then secs=$left; fi
  fi
  echo "== $s (at most $secs s)"
  t0=$SECONDS
  # Exported for the subshell under timeout, which runs the step function.
  export -f "step_$s" unpack
  export carry out logs
  timeout --kill-after=10 "$secs" bash -c "step_$s" 2>&1 | tee "$logs/$s.txt"
  rc=${PIPESTATUS[0]}
  seconds[$s]=$((SECONDS - t0))
  if ((rc == 0)); then
    state[$s]="passed"
  elif ((rc == 124 || rc == 137)); then
    state[$s]="timed out"
    echo "== $s: stopped at its limit of $secs s" | tee -a "$logs/$s.txt"
    status=1
  else
    state[$s]="failed"
    status=1
  fi
  summary
done

# Last, where a reader of the output's tail sees them: the key figures and
# the summary.
echo
echo "== key figures"
for s in bench rows; do
  [[ -f "$logs/$s.txt" ]] && grep -E '^[^ ].*, E = |^ *T=' "$logs/$s.txt"
done
[[ -f "$logs/peers.txt" ]] &&
  grep -E '^ *[0-9]+ |^[a-z].* vs |^device:|^CUDA graph|^[a-z0-9_]+ +[0-9]+ ' "$logs/peers.txt"
echo
cat "$logs/summary.txt"
exit $status
