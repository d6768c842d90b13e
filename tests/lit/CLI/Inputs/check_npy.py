#!/usr/bin/env python3
"""Check a .npy file's dtype, shape and values without NumPy.

    check_npy.py FILE DESCR SHAPE VALUES [--tol T]

DESCR and SHAPE as for make_npy.py ('<i4', '3,2'); VALUES comma-separated in
C order (one value: all elements), compared exactly for integers and to a
relative (and absolute) tolerance T for floats (default 1e-6). Exits 1
naming the first difference.
"""
import argparse
import ast
import struct
import sys

FORMATS = {"f4": "f", "f2": "e", "f8": "d", "i2": "h", "i4": "i", "i8": "q",
           "u2": "H", "u1": "B"}


def read_npy(path):
    with open(path, "rb") as f:
        content = f.read()
    if content[:6] != b"\x93NUMPY":
        sys.exit("%s: not a .npy file" % path)
    version = content[6]
    length_size = 2 if version == 1 else 4
    length = int.from_bytes(content[8:8 + length_size], "little")
    start = 8 + length_size
    header = ast.literal_eval(content[start:start + length].decode("latin-1"))
    if start + length != ((start + length + 63) // 64) * 64:
        sys.exit("%s: data is not 64-byte aligned" % path)
    descr, shape = header["descr"], list(header["shape"])
    if header["fortran_order"]:
        sys.exit("%s: fortran_order" % path)
    code = descr[1:]
    size = struct.calcsize(FORMATS[code])
    data = content[start + length:]
    count = 1
    for d in shape:
        count *= d
    if len(data) != count * size:
        sys.exit("%s: %d data bytes for shape %s" % (path, len(data), shape))
    values = list(struct.unpack("<%d%s" % (count, FORMATS[code]), data))
    return descr, shape, values


def split_argv(argv, flags):
    """Options first, then "--" and the positionals, so that values such as
    "-1,2" are never taken for options."""
    options, positionals = [], []
    i = 0
    while i < len(argv):
        if argv[i].startswith("--"):
            options.append(argv[i])
            if argv[i] not in flags and i + 1 < len(argv):
                i += 1
                options.append(argv[i])
        else:
            positionals.append(argv[i])
        i += 1
    return options + ["--"] + positionals


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("file")
    parser.add_argument("descr")
    parser.add_argument("shape")
    parser.add_argument("values")
    parser.add_argument("--tol", type=float, default=1e-6)
    args = parser.parse_args(split_argv(sys.argv[1:], set()))

    descr, shape, values = read_npy(args.file)
    expected_shape = [int(d) for d in args.shape.split(",")] if args.shape else []
    expected = [float(v) for v in args.values.split(",")] if args.values else []
    if len(expected) == 1:
        expected = expected * len(values)
    fail = None
    if descr != args.descr:
        fail = "descr %r, expected %r" % (descr, args.descr)
    elif shape != expected_shape:
        fail = "shape %s, expected %s" % (shape, expected_shape)
    elif len(values) != len(expected):
        fail = "%d values, expected %d" % (len(values), len(expected))
    else:
        floating = descr[1] == "f"
        for i, (got, want) in enumerate(zip(values, expected)):
            close = (abs(got - want) <= args.tol * max(1.0, abs(want))
                     if floating else got == want)
            if not close:
                fail = "element %d is %r, expected %r" % (i, got, want)
                break
    if fail:
        sys.exit("check_npy: %s: %s\n  values: %s" % (args.file, fail, values))


main()
