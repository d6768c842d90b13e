#!/usr/bin/env python3
"""Checks a kernel directory of `moegen compile --emit=ptx|cubin`.

check_manifest.py DIR [--arch ARCH] [--cubin] [--no-spills]

The manifest must follow docs/kernel-abi.md: its keys and types, one
kernel per entry point of spec.yaml, every parameter 8 bytes (a pointer
followed by the sizes of its symbolic dimensions, then scalars), the error
record last, launch geometry, and the files it names present. Prints one
line per kernel; exits 1 with the reason on the first violation.
"""
import json
import os
import re
import sys


def fail(message):
    print(f"check_manifest: {message}")
    sys.exit(1)


def main():
    directory = sys.argv[1]
    args = sys.argv[2:]
    arch = args[args.index("--arch") + 1] if "--arch" in args else None
    manifest = json.load(open(os.path.join(directory, "manifest.json")))
    for key, kind in [("format", str), ("abi_version", int), ("compiler_version", str),
                      ("spec_name", str), ("spec_hash", str), ("arch", str), ("ptx", str),
                      ("num_experts", int), ("top_k", int), ("logits_dtype", str),
                      ("error_record_words", int), ("kernels", list)]:
        if not isinstance(manifest.get(key), kind):
            fail(f"key '{key}' missing or not {kind.__name__}")
    if manifest["format"] != "moegen-kernels" or manifest["abi_version"] != 1:
        fail("format / abi_version")
    if len(manifest["spec_hash"]) != 16:
        fail("spec_hash is not 16 hex digits")
    if manifest["error_record_words"] != 6:
        fail("error_record_words != 6")
    if arch and manifest["arch"] != arch:
        fail(f"arch {manifest['arch']} != {arch}")
    files = [manifest["ptx"]] + ([manifest["cubin"]] if "cubin" in manifest else [])
    if "--cubin" in args and "cubin" not in manifest:
        fail("no cubin")
    for name in files + ["spec.yaml"]:
        if not os.path.isfile(os.path.join(directory, name)):
            fail(f"missing {name}")
    ptx = open(os.path.join(directory, manifest["ptx"])).read()
    spec = open(os.path.join(directory, "spec.yaml")).read()
    if "program:" in spec:
        # A gating program's entries are its headers, "NAME(...) -> ...:".
        expected = set(re.findall(r"^  (\w+)\(.*\) ->", spec, re.M))
    else:
        expected = {"route_hash" if "selection: hash" in spec else "route"}
        if "replay: true" in spec:
            expected.add("replay")
        if "dispatch: true" in spec:
            expected.add("dispatch")
    entries = {k["entry"] for k in manifest["kernels"]}
    if entries != expected:
        fail(f"entries {sorted(entries)} != {sorted(expected)}")
    for kernel in manifest["kernels"]:
        name = kernel["symbol"]
        if f".entry {name}(" not in ptx:
            fail(f"{name}: no .entry in the PTX")
        params = kernel["params"]
        # The error record comes last, but for a cooperative kernel's
        # scratch (the dispatch, an expert-choice route).
        error = params[-2] if params[-1]["name"] == "scratch" else params[-1]
        if error["name"] != "error" or error["shape"] != [6]:
            fail(f"{name}: the error record is not last")
        pending = []
        for param in params:
            if param["kind"] == "pointer":
                if pending:
                    fail(f"{name}: sizes {pending} missing before {param['name']}")
                pending = [f"{param['name']}.size{i}"
                           for i, d in enumerate(param["shape"]) if isinstance(d, str)]
            elif param["kind"] == "size":
                if not pending or param["name"] != pending[0]:
                    fail(f"{name}: unexpected size {param['name']}")
                pending.pop(0)
            elif param["kind"] != "scalar":
                fail(f"{name}: kind {param['kind']}")
        launch = kernel["launch"]
        if kernel["entry"] == "dispatch":
            if (launch["tokens_per_block"] != 0
                    or launch["grid_dim"] != "cooperative"
                    or launch["block_dim"] != 256
                    or not 1 <= launch["max_grid_dim"] <= 256
                    or launch["slots_per_block"] != 2048
                    or [p["name"] for p in params][-1] != "scratch"):
                fail(f"{name}: dispatch is one cooperative grid of 256-thread "
                     f"blocks with a scratch buffer")
            # A one-block grid's counters in shared memory (abi/KernelAbi.h,
            # dispatchSharedBytes), up to 1024 experts.
            e = manifest["num_experts"]
            shared = 4 * (8 + 8 * e + e + 1) if e <= 1024 else 0
            if launch["dynamic_shared_memory_bytes"] != shared:
                fail(f"{name}: dispatch has "
                     f"{launch['dynamic_shared_memory_bytes']} bytes of shared "
                     f"memory, {shared} expected for {e} experts")
        elif launch["grid_dim"] == "cooperative":
            # An expert-choice route: a cooperative grid of whole warps
            # with its scratch buffer, a block's tokens times k slots.
            if (kernel["entry"] != "route"
                    or launch["tokens_per_block"] != 0
                    or launch["block_dim"] % 32 != 0
                    or launch["max_grid_dim"] != 256
                    or launch["slots_per_block"] % manifest["top_k"] != 0
                    or [p["name"] for p in params][-1] != "scratch"):
                fail(f"{name}: a cooperative route is a grid of whole warps "
                     f"with a scratch buffer")
        elif launch["block_dim"] != (launch["lanes_per_token"]
                                     * launch["tokens_per_block"]):
            fail(f"{name}: block_dim != lanes_per_token * tokens_per_block")
        # What chose the schedule, and route's top-k method (no other
        # entry finds a top-k).
        if not kernel.get("schedule_source"):
            fail(f"{name}: no schedule_source")
        if (kernel["entry"] == "route") != ("topk" in kernel):
            fail(f"{name}: topk belongs to route kernels alone")
        if launch["dynamic_shared_memory_bytes"] > 227 * 1024:
            fail(f"{name}: shared memory over 227 KiB")
        if "--no-spills" in args and kernel.get("spill_store_bytes", 0) != 0:
            fail(f"{name}: {kernel['spill_store_bytes']} bytes of spill stores")
        lanes = (f", {launch['lanes_per_token']} lanes per token"
                 if "lanes_per_token" in launch else "")
        topk = f", top-k {kernel['topk']}" if "topk" in kernel else ""
        print(f"{manifest['spec_name']} {kernel['entry']}: {len(params)} params, "
              f"block {launch['block_dim']}{lanes}, grid {launch['grid_dim']}, "
              f"smem {launch['dynamic_shared_memory_bytes']}{topk}, "
              f"schedule: {kernel['schedule_source']}")


if __name__ == "__main__":
    main()
