#!/usr/bin/env python3
"""Cold compile time of every template to PTX (docs/benchmarks.md).

Runs `moegen compile TEMPLATE --emit=ptx --timing` REPS times per template,
round robin so that a noisy neighbour hits every template alike, and prints
per template the in-process total and binary-stage times (minimum and
median, from --timing) and the whole command's wall time (process start
included). A benchmark, not a test: it prints figures and judges nothing.

  tests/bench/compile_time.py [--moegen build/bin/moegen] [--reps 15]
"""
import argparse
import glob
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def stage_seconds(timing, name):
    # --timing prints "  0.2013 ( 71.6%)  binary" per stage, then "Total";
    # where passes ran on several threads, a user-time column comes first
    # ("  0.1898 (100.0%)    0.1619 (100.0%)  Total"): the wall time is last.
    match = re.search(r"^(?:\s*[0-9.]+ \(\s*[0-9.]+%\))*?\s*([0-9.]+) \(\s*[0-9.]+%\)\s+"
                      + re.escape(name) + r"$", timing, re.M)
    return float(match.group(1)) if match else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moegen", default=os.path.join(ROOT, "build", "bin", "moegen"))
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--templates", nargs="*",
                        default=sorted(glob.glob(os.path.join(ROOT, "templates", "*.yaml"))))
    args = parser.parse_args()
    if not os.access(args.moegen, os.X_OK):
        sys.exit(f"{args.moegen}: not an executable moegen (build first, or --moegen)")

    results = {t: {"total": [], "binary": [], "wall": []} for t in args.templates}
    with tempfile.TemporaryDirectory(prefix="moegen-compile-time-") as out:
        for _ in range(args.reps):
            for template in args.templates:
                start = time.perf_counter()
                run = subprocess.run(
                    [args.moegen, "compile", template, "--emit=ptx", "--timing",
                     "-o", os.path.join(out, os.path.basename(template))],
                    capture_output=True, text=True)
                wall = time.perf_counter() - start
                if run.returncode != 0:
                    sys.exit(f"{template}: moegen compile failed:\n{run.stderr}")
                total = stage_seconds(run.stderr, "Total")
                binary = stage_seconds(run.stderr, "binary")
                if total is None or binary is None:
                    sys.exit(f"{template}: no --timing report on stderr")
                results[template]["total"].append(total * 1e3)
                results[template]["binary"].append(binary * 1e3)
                results[template]["wall"].append(wall * 1e3)

    print(f"moegen compile T --emit=ptx, {args.reps} runs each, ms (min / median)")
    print(f"{'template':<28} {'in-process':>15} {'binary stage':>15} {'command':>15}")
    for template, r in results.items():
        name = os.path.splitext(os.path.basename(template))[0]
        cells = [f"{min(r[k]):6.0f} / {statistics.median(r[k]):4.0f}"
                 for k in ("total", "binary", "wall")]
        print(f"{name:<28} {cells[0]:>15} {cells[1]:>15} {cells[2]:>15}")


if __name__ == "__main__":
    main()
