#!/usr/bin/env python3
"""Write a tuning database of GPU entries for the spec of a manifest.

    tuning_db.py MANIFEST VERSION_FILE OUT MACHINE TOKENS:LANES:PER_BLOCK:TOPK...

VERSION_FILE holds `moegen --version` ("moegen 0.1.0+codegen.<hash>"), whose
second word is the compiler version entries are keyed by; MACHINE is the
device and arch ("NVIDIA H200, sm_90").
"""
import json
import sys

manifest = json.load(open(sys.argv[1]))
version = open(sys.argv[2]).read().split()[1]
entries = []
for bucket in sys.argv[5:]:
    tokens, lanes, per_block, topk = bucket.split(":")
    entries.append({"spec_hash": manifest["spec_hash"],
                    "spec_name": manifest["spec_name"], "backend": "cuda",
                    "machine": sys.argv[4], "compiler_version": version,
                    "tokens": int(tokens),
                    "config": {"lanes_per_token": int(lanes),
                               "tokens_per_block": int(per_block),
                               "topk": topk},
                    "default_us": 10.0, "tuned_us": 9.0, "candidates": 3,
                    "date": "2026-12-02"})
json.dump({"format": "moegen-tuning", "version": 1, "entries": entries},
          open(sys.argv[3], "w"))
