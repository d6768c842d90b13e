#!/usr/bin/env python3
"""Check the capture-then-replay sample's report and capture file.

    check_capture_replay.py REPORT CAPTURE T L K E [--fresh-below-all]
                            [--like OTHER_CAPTURE [--max-differ F]]

REPORT: the sample's stdout. Checks that every layer 0..L-1 has a row, that
replay agrees on all T tokens of each, that fresh routing agrees on at most
T, that the "all" row is the sum of the rows, and with --fresh-below-all
that fresh routing disagrees somewhere. CAPTURE: the saved .npy, which must
be [T, L, K] int16 (int32 when E > 32767) with ids in [0, E), distinct per
token and layer; with --like, it must agree with another backend's capture
but for near-ties. Exits 1 naming the first problem; needs no NumPy.
"""
import argparse
import ast
import re
import struct
import sys

parser = argparse.ArgumentParser()
parser.add_argument("report")
parser.add_argument("capture")
for name in ("T", "L", "K", "E"):
    parser.add_argument(name, type=int)
parser.add_argument("--fresh-below-all", action="store_true")
parser.add_argument("--like", metavar="OTHER_CAPTURE",
                    help="another backend's capture of the same run: the "
                    "expert sets must agree on all but --max-differ "
                    "token-layers (fp32 near-ties may pick differently)")
parser.add_argument("--max-differ", type=float, default=0.005,
                    help="fraction of token-layers --like may differ on")
args = parser.parse_args()
T, L, K, E = args.T, args.L, args.K, args.E


def fail(message):
    sys.exit("check_capture_replay: " + message)


ROW = re.compile(r"^\s*(\d+|all)\s+(\d+)/(\d+)\s+[\d.]+%\s+(\d+)/(\d+)\s+[\d.]+%")
rows = {}
for line in open(args.report):
    match = ROW.match(line)
    if match:
        rows[match.group(1)] = [int(match.group(i)) for i in range(2, 6)]
fresh_sum = replay_sum = 0
for layer in range(L):
    if str(layer) not in rows:
        fail("no report row for layer %d" % layer)
    fresh, total, replay, total2 = rows[str(layer)]
    if total != T or total2 != T:
        fail("layer %d: counts out of %d/%d tokens, expected %d" % (layer, total, total2, T))
    if replay != T:
        fail("layer %d: replay agrees on %d of %d tokens" % (layer, replay, T))
    if fresh > T:
        fail("layer %d: fresh routing agrees on %d > %d tokens" % (layer, fresh, T))
    fresh_sum += fresh
    replay_sum += replay
if rows.get("all") != [fresh_sum, T * L, replay_sum, T * L]:
    fail("the 'all' row %s is not the sum of the layers (%d, %d of %d)"
         % (rows.get("all"), fresh_sum, replay_sum, T * L))
if args.fresh_below_all and fresh_sum == T * L:
    fail("fresh routing agrees on every token: the noise had no effect")

def read_capture(path):
    """The [T, L, K] ids of a capture file, checked."""
    content = open(path, "rb").read()
    if content[:6] != b"\x93NUMPY":
        fail("%s: not a .npy file" % path)
    size = 2 if content[6] == 1 else 4
    length = int.from_bytes(content[8:8 + size], "little")
    start = 8 + size
    header = ast.literal_eval(content[start:start + length].decode("latin-1"))
    descr = "<i2" if E <= 32767 else "<i4"
    if header["descr"] != descr or header["fortran_order"] or tuple(header["shape"]) != (T, L, K):
        fail("%s: header %s, expected %s [%d, %d, %d]" % (path, header, descr, T, L, K))
    ids = struct.unpack("<%d%s" % (T * L * K, "h" if descr == "<i2" else "i"),
                        content[start + length:])
    for t in range(T):
        for layer in range(L):
            row = ids[(t * L + layer) * K:(t * L + layer + 1) * K]
            if any(i < 0 or i >= E for i in row) or len(set(row)) != K:
                fail("%s: token %d, layer %d: ids %s" % (path, t, layer, list(row)))
    return ids


ids = read_capture(args.capture)
if args.like:
    other = read_capture(args.like)
    differ = sum(1 for r in range(T * L)
                 if set(ids[r * K:(r + 1) * K]) != set(other[r * K:(r + 1) * K]))
    if differ > args.max_differ * T * L:
        fail("%s and %s differ on %d of %d token-layers (more than %g)"
             % (args.capture, args.like, differ, T * L, args.max_differ))
