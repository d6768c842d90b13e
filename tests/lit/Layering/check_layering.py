#!/usr/bin/env python3
"""Checks the include rules between moegen's layers (docs/development.md).

- support/ (message quoting, atomic files) includes nothing of the project
  and no LLVM, MLIR or CUDA;
- abi/ (the contract compiler and runtime share) includes nothing of the
  project's other layers but support/, and no LLVM, MLIR or CUDA;
- dialects/ includes nothing of compiler/ or runtime/;
- runtime/ includes nothing of compiler/ or dialects/, and no LLVM or MLIR.

Prints one line per violation ("FILE:LINE: includes X: RULE") and exits 1
when there is any; prints the number of files checked otherwise.
"""
import pathlib
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]')

# layer -> [(forbidden include prefix, why)]
RULES = {
    "support": [
        ("abi/", "support/ depends on no other layer"),
        ("compiler/", "support/ depends on no other layer"),
        ("dialects/", "support/ depends on no other layer"),
        ("runtime/", "support/ depends on no other layer"),
        ("mlir/", "support/ is free of LLVM/MLIR"),
        ("llvm/", "support/ is free of LLVM/MLIR"),
        ("cuda", "support/ is free of CUDA"),
    ],
    "abi": [
        ("compiler/", "abi/ depends on no layer but support/"),
        ("dialects/", "abi/ depends on no layer but support/"),
        ("runtime/", "abi/ depends on no layer but support/"),
        ("mlir/", "abi/ is free of LLVM/MLIR"),
        ("llvm/", "abi/ is free of LLVM/MLIR"),
        ("cuda", "abi/ is free of CUDA"),
    ],
    "dialects": [
        ("compiler/", "dialects/ knows nothing of the compiler"),
        ("runtime/", "dialects/ knows nothing of the runtime"),
    ],
    "runtime": [
        ("compiler/", "runtime/ knows nothing of the compiler"),
        ("dialects/", "runtime/ knows nothing of the compiler"),
        ("mlir/", "runtime/ is free of LLVM/MLIR"),
        ("llvm/", "runtime/ is free of LLVM/MLIR"),
        ("llvm-c/", "runtime/ is free of LLVM/MLIR"),
    ],
}
SOURCES = (".h", ".cpp", ".inc", ".td")


def main(root: pathlib.Path) -> int:
    violations, checked = [], 0
    for layer, rules in RULES.items():
        for path in sorted((root / layer).rglob("*")):
            if path.suffix not in SOURCES or not path.is_file():
                continue
            checked += 1
            text = path.read_text(encoding="utf-8", errors="replace")
            for number, line in enumerate(text.splitlines(), 1):
                match = INCLUDE.match(line)
                if not match:
                    continue
                included = match.group(1)
                for prefix, why in rules:
                    # cuda.h only as a whole header name.
                    hit = (included in ("cuda.h", "cuda_runtime.h")
                           if prefix == "cuda" else included.startswith(prefix))
                    if hit:
                        violations.append(f"{path.relative_to(root)}:{number}: "
                                          f"includes {included}: {why}")
    for violation in violations:
        print(violation)
    if violations:
        return 1
    print(f"layering: {checked} files checked, no violation")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: check_layering.py SOURCE_ROOT")
    sys.exit(main(pathlib.Path(sys.argv[1])))
