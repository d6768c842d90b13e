#!/usr/bin/env python3
"""moegen's permute and combine beside PyTorch eager and torch.compile.

Runs moegen-bench-permute with --out (or reads a directory it wrote), then,
for every case, computes the same permute and combine with PyTorch on the
same inputs, checks them against moegen's outputs (permute bit for bit;
combine within one rounding of the row type, since PyTorch sums products
where moegen chains fused multiply-adds), and only then times PyTorch eager
and torch.compile (median of --reps samples, after warm-up). Prints one
table: microseconds per call for the three, and moegen's speed-up.

    python3 tests/bench/permute_peers.py --bin build/bin [--tokens 64,4096]
        [--hidden 2048,7168] [--dtypes f32,bf16] [--reps 9] [--threads N]

Needs numpy and torch (pip install torch numpy). Not a test: timings are
not tests (docs/benchmarks.md holds the figures, with machine and commit).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def median_seconds(fn, reps, min_sample=0.01):
    fn()  # warm-up (and, for torch.compile, compilation)
    fn()
    samples = []
    for _ in range(reps):
        calls, start = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_sample:
                break
        samples.append(elapsed / calls)
    samples.sort()
    return samples[len(samples) // 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin", default="build/bin")
    parser.add_argument("--dir", help="a directory moegen-bench-permute "
                        "--out wrote (default: run it into a temporary one)")
    parser.add_argument("--tokens", default="64,4096")
    parser.add_argument("--hidden", default="2048,7168")
    parser.add_argument("--dtypes", default="f32,bf16")
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch.set_num_threads (0: PyTorch's default)")
    args = parser.parse_args()
    try:
        import numpy as np
        import torch
    except ImportError as e:
        sys.exit("permute_peers.py: %s (pip install torch numpy)" % e)
    if args.threads:
        torch.set_num_threads(args.threads)

    directory = args.dir
    if not directory:
        directory = tempfile.mkdtemp(prefix="moegen-permute-")
        command = [os.path.join(args.bin, "moegen-bench-permute"),
                   "--tokens", args.tokens, "--hidden", args.hidden,
                   "--dtypes", args.dtypes, "--reps", str(args.reps),
                   "--out", directory]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit("permute_peers.py: %s failed:\n%s%s"
                     % (command[0], result.stdout, result.stderr))
    with open(os.path.join(directory, "timings.json")) as f:
        cases = json.load(f)

    def load(case, name, dtype):
        array = np.load(os.path.join(directory, case, name + ".npy"))
        tensor = torch.from_numpy(array.astype(np.int64)
                                  if array.dtype == np.int32 else array)
        if dtype == "bf16" and array.dtype == np.uint16:
            tensor = torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
        return tensor

    def permute(hidden, sorted_slots, k):
        return hidden.index_select(0, sorted_slots // k)

    def combine(expert_output, slot_positions, weights):
        tokens, k = weights.shape
        rows = expert_output.index_select(0, slot_positions).float()
        summed = (rows.view(tokens, k, -1) * weights.unsqueeze(-1)).sum(1)
        return summed.to(expert_output.dtype)

    compiled_permute = torch.compile(permute, dynamic=False)
    compiled_combine = torch.compile(combine, dynamic=False)

    print("torch %s, %d threads; moegen-bench-permute figures from %s"
          % (torch.__version__, torch.get_num_threads(), directory))
    header = ("rows", "T", "H", "op", "moegen us", "eager us", "compile us",
              "vs eager", "vs compile")
    print("%-5s %6s %6s %-8s %10s %10s %11s %9s %11s" % header)
    for case in cases:
        name, dtype, k = case["case"], case["dtype"], case["k"]
        hidden = load(name, "hidden", dtype)
        sorted_slots = load(name, "sorted_slots", dtype)
        positions = load(name, "slot_positions", dtype)
        weights = load(name, "topk_weights", dtype)
        outputs = load(name, "expert_output", dtype)
        want_permuted = load(name, "permuted", dtype)
        want_combined = load(name, "combined", dtype)

        # Checked before timed.
        for fn in (permute, compiled_permute):
            got = fn(hidden, sorted_slots, k)
            if not torch.equal(got.view(torch.int16 if dtype == "bf16"
                                        else torch.int32),
                               want_permuted.view(torch.int16 if dtype == "bf16"
                                                  else torch.int32)):
                sys.exit("%s: PyTorch's permute differs from moegen's" % name)
        tolerance = 2.0 ** -7 if dtype == "bf16" else 1e-6
        for fn in (combine, compiled_combine):
            got = fn(outputs, positions, weights).float()
            want = want_combined.float()
            if not torch.allclose(got, want, rtol=tolerance, atol=1e-6):
                sys.exit("%s: PyTorch's combine differs from moegen's beyond "
                         "one rounding" % name)

        rows = [
            ("permute", case["permute_us"],
             lambda: permute(hidden, sorted_slots, k),
             lambda: compiled_permute(hidden, sorted_slots, k)),
            ("combine", case["combine_us"],
             lambda: combine(outputs, positions, weights),
             lambda: compiled_combine(outputs, positions, weights)),
        ]
        for op, ours, eager, compiled in rows:
            eager_us = median_seconds(eager, args.reps) * 1e6
            compiled_us = median_seconds(compiled, args.reps) * 1e6
            print("%-5s %6d %6d %-8s %10.1f %10.1f %11.1f %8.2fx %10.2fx"
                  % (dtype, case["tokens"], case["hidden"], op, ours,
                     eager_us, compiled_us, eager_us / ours,
                     compiled_us / ours))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
