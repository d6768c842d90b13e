#!/usr/bin/env python3
"""Replace every kernels.cubin of a GPU suite, of the candidates of
moegen autotune --emit-candidates, or of kernel directories, by the
stand-in driver's image.

    fake_cubins.py SUITE|CANDIDATES|KERNEL_DIR...

tests/unit/RuntimeFakeCuda.cpp loads "FAKE-CUBIN <arch>" followed by one
"<symbol> <parameter count>" line per kernel; this writes that from each
case's manifest.json, so moegen-gpu-check's host side runs on a machine
without a GPU (the stand-in launches nothing).
"""
import json
import os
import sys

root = sys.argv[1]
if os.path.exists(os.path.join(root, "manifest.json")):
    dirs = sys.argv[1:]
elif os.path.exists(os.path.join(root, "candidates.json")):
    index = json.load(open(os.path.join(root, "candidates.json")))
    dirs = [os.path.join(root, c["dir"]) for spec in index["specs"]
            for c in spec["candidates"]]
else:
    dirs = [os.path.join(root, name, "kernels")
            for name in open(os.path.join(root, "cases.txt")).read().split()]
for kernels in dirs:
    manifest = json.load(open(os.path.join(kernels, "manifest.json")))
    with open(os.path.join(kernels, manifest["cubin"]), "w") as f:
        f.write("FAKE-CUBIN %s\n" % manifest["arch"])
        for kernel in manifest["kernels"]:
            f.write("%s %d\n" % (kernel["symbol"], len(kernel["params"])))
