#!/usr/bin/env python3
"""Write a .npy file without NumPy (the test machines have none).

    make_npy.py OUT DESCR SHAPE [VALUES] [--version N] [--fortran]
                [--truncate N] [--append N] [--magic TEXT]

DESCR   a NumPy descr ('<f4', '<f2', '<i2', '<i4', '<i8', '<u2', '<f8',
        '>f4', ...; others such as '<c8' get zero bytes) or 'bf16': float
        values stored as bf16 bits in '<u2'.
SHAPE   comma-separated dimensions: '3,4', '4', '0,4'; '' for a 0-d array.
VALUES  comma-separated numbers in C order (nan, inf and -inf allowed); a
        single value fills the array; default 0.
The options build broken files for the error tests.
"""
import argparse
import math
import struct
import sys

FORMATS = {"f4": "f", "f2": "e", "f8": "d", "i2": "h", "i4": "i", "i8": "q",
           "u2": "H", "u1": "B"}


def bf16_bits(value):
    """Round a float to bfloat16 (nearest, ties to even) and return its bits."""
    bits = struct.unpack("<I", struct.pack("<f", value))[0]
    if math.isnan(value):
        return (bits >> 16) | 0x40
    rounding = 0x7FFF + ((bits >> 16) & 1)
    return ((bits + rounding) >> 16) & 0xFFFF


def header_bytes(descr, shape, fortran, version):
    dims = ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "")
    text = "{'descr': '%s', 'fortran_order': %s, 'shape': (%s), }" % (
        descr, "True" if fortran else "False", dims)
    length_size = 2 if version == 1 else 4
    preamble = 8 + length_size
    padding = 64 - (preamble + len(text) + 1) % 64
    text += " " * padding + "\n"
    length = struct.pack("<H" if version == 1 else "<I", len(text))
    return b"\x93NUMPY" + bytes([version, 0]) + length + text.encode("latin-1")


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
    parser.add_argument("out")
    parser.add_argument("descr")
    parser.add_argument("shape")
    parser.add_argument("values", nargs="?", default="0")
    parser.add_argument("--version", type=int, default=1)
    parser.add_argument("--fortran", action="store_true")
    parser.add_argument("--truncate", type=int, default=0)
    parser.add_argument("--append", type=int, default=0)
    parser.add_argument("--magic")
    args = parser.parse_args(split_argv(sys.argv[1:], {"--fortran"}))

    shape = [int(d) for d in args.shape.split(",")] if args.shape else []
    count = 1
    for d in shape:
        count *= d
    values = [float(v) for v in args.values.split(",")]
    if len(values) == 1:
        values = values * count
    if len(values) != count:
        sys.exit("make_npy: %d values for shape %s" % (len(values), shape))

    descr = args.descr
    if descr == "bf16":
        descr = "<u2"
        data = b"".join(struct.pack("<H", bf16_bits(v)) for v in values)
    else:
        order, code = descr[0], descr[1:]
        if code in FORMATS:
            fmt = ("<" if order in "<|=" else ">") + FORMATS[code]
            integral = code[0] in "iu"
            data = b"".join(struct.pack(fmt, int(v) if integral else v)
                            for v in values)
        else:  # A dtype moegen does not read ('<c8'): zero bytes will do.
            data = b"\0" * (int(code[1:]) * count)

    content = header_bytes(descr, shape, args.fortran, args.version) + data
    if args.magic is not None:
        content = args.magic.encode("latin-1") + content[6:]
    if args.truncate:
        content = content[:-args.truncate]
    content += b"\0" * args.append
    with open(args.out, "wb") as f:
        f.write(content)


main()
