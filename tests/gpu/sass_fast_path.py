#!/usr/bin/env python3
"""Warp-instructions on a kernel's fast path, from `cuobjdump -sass`.

    cuobjdump -sass -fun route kernels.cubin | tests/gpu/sass_fast_path.py [--trips=ADDR=N,...] [--skip=START-END,...] [--lanes-per-token=W]

The fast path of a route kernel with valid input: the main body up to its
EXIT (ptxas puts the code for divergent warps, reached by BRA.DIV, after
it), without the blocks a forward branch skips when they take the error
record's lock (ATOMG.E.EXCH: reporting a violation, never run on valid
input), counting each remaining loop body by the trip count given with
--trips ADDR=N (default: report the loops found and count them once).
--skip START-END (inclusive addresses) leaves out code that valid input
does not run, or runs on a few trips only (a branch the caller knows the
odds of): the fallback of the streamed lane lists, or their insertion
block, whose cost per hit the caller adds.
A warp routes 32 / W tokens at once (the manifest's launch.lanes_per_token,
default 32): the figure per token divides by that.
"""
import re
import sys

def parse(text):
    ins = []
    for line in text.splitlines():
        m = re.match(r"\s+/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", line)
        if m:
            ins.append((int(m.group(1), 16), m.group(2).strip()))
    return ins

def target(text):
    m = re.search(r"BRA(?:\.\w+)*\s+(?:\S+,\s*)?0x([0-9a-f]+)", text)
    return int(m.group(1), 16) if m else None

def main():
    trips = {}
    skip_ranges = []
    lanes = 32
    for arg in sys.argv[1:]:
        if arg.startswith("--lanes-per-token="):
            lanes = int(arg.split("=", 1)[1])
            continue
        if arg.startswith("--skip="):
            for item in arg[len("--skip="):].split(","):
                a, b = item.split("-")
                skip_ranges.append((int(a, 16), int(b, 16)))
            continue
        if arg.startswith("--trips="):
            for item in arg[len("--trips="):].split(","):
                a, n = item.split("=")
                trips[int(a, 16)] = int(n)
    ins = parse(sys.stdin.read())
    # The code for divergent warps (BRA.DIV targets) follows the main body.
    divergent = [target(t) for a, t in ins if "BRA.DIV" in t]
    end = min(divergent) if divergent else ins[-1][0] + 1
    body = [(a, t) for a, t in ins if a < end and not t.startswith("NOP")]
    cold = set()
    for a, t in body:
        tgt = target(t)
        if tgt is None or "BRA.DIV" in t or tgt <= a or not t.startswith("@"):
            continue
        skipped = [x for x in body if a < x[0] < tgt]
        if any("ATOMG.E.EXCH" in x[1] for x in skipped):
            cold.update(x[0] for x in skipped)
    for a, b in skip_ranges:
        cold.update(x for x, _ in body if a <= x <= b)
    hot = [(a, t) for a, t in body if a not in cold]
    total = len(hot)
    loops = [(target(t), a) for a, t in hot if target(t) is not None and target(t) < a and "BRA.DIV" not in t]
    for start, stop in loops:
        n = trips.get(start, 1)
        size = len([1 for a, _ in hot if start <= a <= stop])
        total += size * (n - 1)
        print("loop %#x-%#x: %d instructions x %d trips" % (start, stop, size, n))
    print("main body %d, cold (error reporting, skipped) %d, fast path %d warp-instructions" %
          (len(body), len([1 for a, _ in body if a in cold]), total))
    print("per token: %d warp-instructions (%d tokens per warp)" %
          (round(total * lanes / 32), 32 // lanes))

main()
