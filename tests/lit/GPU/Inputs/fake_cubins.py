#!/usr/bin/env python3
"""Replace every kernels.cubin of a GPU suite by the stand-in driver's image.

    fake_cubins.py SUITE

tests/unit/RuntimeFakeCuda.cpp loads "FAKE-CUBIN <arch>" followed by one
"<symbol> <parameter count>" line per kernel; this writes that from each
case's manifest.json, so moegen-gpu-check's host side runs on a machine
without a GPU (the stand-in launches nothing).
"""
import json
import os
import sys

suite = sys.argv[1]
for name in open(os.path.join(suite, "cases.txt")).read().split():
    kernels = os.path.join(suite, name, "kernels")
    manifest = json.load(open(os.path.join(kernels, "manifest.json")))
    with open(os.path.join(kernels, manifest["cubin"]), "w") as f:
        f.write("FAKE-CUBIN %s\n" % manifest["arch"])
        for kernel in manifest["kernels"]:
            f.write("%s %d\n" % (kernel["symbol"], len(kernel["params"])))
