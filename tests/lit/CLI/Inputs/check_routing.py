#!/usr/bin/env python3
"""Check routing invariants of a `moegen run` output directory (no NumPy).

    check_routing.py DIR T E K MAX_GROUPS WEIGHT_SUM

Each token has K distinct ids in [0, E) drawn from at most MAX_GROUPS of the
8 groups, weights summing to WEIGHT_SUM (1e-5 relative), and expert_counts
sums to T * K with expert_offsets its exclusive prefix sum.
"""
import ast
import os
import struct
import sys


def read_npy(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:6] == b"\x93NUMPY", path
    major = data[6]
    length_size = 2 if major == 1 else 4
    (header_len,) = struct.unpack(
        "<H" if length_size == 2 else "<I", data[8:8 + length_size])
    start = 8 + length_size
    header = ast.literal_eval(data[start:start + header_len].decode("latin1"))
    body = data[start + header_len:]
    code = {"<i4": "i", "<f4": "f", "<i2": "h"}[header["descr"]]
    count = len(body) // struct.calcsize(code)
    return header["shape"], struct.unpack("<%d%s" % (count, code), body)


def main():
    out, t, e, k, max_groups, weight_sum = sys.argv[1:]
    t, e, k, max_groups = int(t), int(e), int(k), int(max_groups)
    weight_sum = float(weight_sum)
    shape, ids = read_npy(os.path.join(out, "topk_ids.npy"))
    assert shape == (t, k), shape
    _, weights = read_npy(os.path.join(out, "topk_weights.npy"))
    per_group = e // 8
    for token in range(t):
        row = ids[token * k:(token + 1) * k]
        assert all(0 <= i < e for i in row), (token, row)
        assert len(set(row)) == k, (token, row)
        groups = {i // per_group for i in row}
        assert len(groups) <= max_groups, (token, row, groups)
        total = sum(weights[token * k:(token + 1) * k])
        assert abs(total - weight_sum) <= 1e-5 * weight_sum, (token, total)
    _, counts = read_npy(os.path.join(out, "expert_counts.npy"))
    _, offsets = read_npy(os.path.join(out, "expert_offsets.npy"))
    assert sum(counts) == t * k, sum(counts)
    assert offsets[0] == 0 and all(
        offsets[x + 1] == offsets[x] + counts[x] for x in range(e))
    for expert in range(e):
        assert counts[expert] == sum(1 for i in ids if i == expert), expert
    print("routing invariants hold for %d tokens" % t)


if __name__ == "__main__":
    main()
