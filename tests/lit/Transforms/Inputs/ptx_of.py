"""Prints the PTX held by the gpu.binary ops of an MLIR file.

--normalize numbers no labels and drops blank lines and comments (call
sequences are numbered in them), so that
PTX joined from kernels compiled apart compares equal to the PTX of their
module compiled whole (PTX labels are local to their function).
"""
import argparse
import re
import sys


def unescape(text):
    # MLIR prints a string attribute's non-printable bytes as \XX.
    return re.sub(r"\\([0-9A-Fa-f]{2})|\\\\",
                  lambda m: chr(int(m.group(1), 16)) if m.group(1) else "\\",
                  text)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--normalize", action="store_true")
    parser.add_argument("file")
    args = parser.parse_args()
    text = open(args.file).read()
    found = re.findall(r'assembly = "((?:[^"\\]|\\.)*)"', text, re.S)
    if not found:
        sys.exit(f"{args.file}: no gpu.object with assembly")
    for escaped in found:
        ptx = unescape(escaped).rstrip("\0")
        if args.normalize:
            lines = []
            for line in ptx.splitlines():
                line = re.sub(r"\$L__BB\d+_", "$L__BB_", line)
                line = line.split("//")[0].rstrip()
                if line.strip():
                    lines.append(line)
            ptx = "\n".join(lines) + "\n"
        sys.stdout.write(ptx)


if __name__ == "__main__":
    main()
