#!/usr/bin/env python3
"""Build a GPU test suite that runs without the compiler.

    make_gpu_suite.py --bin BUILD/bin --out SUITE [--arch sm_90]
                      [--random N] [--seed S] [--no-templates]

A GPU machine need not have LLVM or MLIR: this script runs where the
compiler is, and only programs linked to the runtime alone run on the GPU
machine. It writes, for
every template, N seeded random specs (tests/lit/CLI/Inputs/
random_specs.py), two wide routers (1024 and 4096 experts) and three
templates pinned to 1, 4 and 32 lanes per token
(<template>-lanes-<W>):

    SUITE/<case>/case.txt        the spec's facts the checker needs
    SUITE/<case>/spec.yaml
    SUITE/<case>/kernels/        moegen compile --emit=cubin --arch ARCH
    SUITE/<case>/t<T>/*.npy      inputs (logits, bias, token_ids, hash_table,
                                 capture, forced_ids, bad_forced_ids)
    SUITE/<case>/t<T>/route/     what moegen run --backend cpu wrote
    SUITE/<case>/t<T>/replay/    the same for the forced ids
    SUITE/<case>/t<T>/bad_replay.txt  its error line for invalid forced ids
    SUITE/<case>/t<T>/bad_logits.npy, bad_route.txt  the logits with a NaN
                                 and a +inf, and the route's error line

and moegen-gpu-check (runtime only) runs the kernels on the GPU and
compares with the CPU backend's outputs. Needs no NumPy.
"""
import argparse
import json
import os
import random
import shutil
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "lit", "CLI", "Inputs"))
import random_specs  # noqa: E402


def write_npy(path, descr, shape, values):
    fmt = {"<f4": "f", "<f2": "e", "<u2": "H", "<i2": "h", "<i4": "i"}[descr]
    header = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (
        descr, "".join("%d, " % d for d in shape) if len(shape) == 1
        else ", ".join(str(d) for d in shape))
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)))
        f.write(header.encode("latin-1"))
        f.write(struct.pack("<%d%s" % (len(values), fmt), *values))


def bf16_bits(value):
    bits = struct.unpack("<I", struct.pack("<f", value))[0]
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) & 0xFFFF


def parse_spec(text):
    facts = {"selection": "topk", "score_bias": "false", "replay": "false",
             "dispatch": "false", "capture": "false", "logits_dtype": "f32",
             "shared_expert_gate": "false"}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if ":" in line:
            key, value = (part.strip() for part in line.split(":", 1))
            facts[key] = value
    return facts


def run(command, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    return result.returncode, result.stdout, result.stderr


def distinct_ids(rng, experts, k):
    return rng.sample(range(experts), k)


def facts_from_manifest(path):
    """A gating program's facts, from its kernels' manifest: the program
    states them, not keys."""
    with open(path) as f:
        manifest = json.load(f)
    entries = {kernel["entry"]: kernel for kernel in manifest["kernels"]}
    route = entries.get("route") or entries.get("route_hash")
    params = {param["name"] for param in route["params"]}
    flag = lambda value: "true" if value else "false"
    return {"num_experts": str(manifest["num_experts"]),
            "top_k": str(manifest["top_k"]),
            "logits_dtype": manifest["logits_dtype"],
            "selection": "hash" if "route_hash" in entries else "topk",
            "score_bias": flag("bias" in params),
            "replay": flag("replay" in entries),
            "dispatch": flag("dispatch" in entries),
            "capture": flag("capture" in params),
            "shared_expert_gate": flag("shared_gate_logits" in params)}


def make_case(args, name, text, rng, compile_flags=()):
    directory = os.path.join(args.out, name)
    os.makedirs(directory)
    spec_path = os.path.join(directory, "spec.yaml")
    with open(spec_path, "w") as f:
        f.write(text)
    code, _, err = run([os.path.join(args.bin, "moegen"), "compile", spec_path,
                        "--emit=cubin", "--arch", args.arch,
                        "-o", os.path.join(directory, "kernels")]
                       + list(compile_flags))
    if code != 0:
        sys.exit("%s: moegen compile failed:\n%s" % (name, err))
    facts = (facts_from_manifest(os.path.join(directory, "kernels", "manifest.json"))
             if "program:" in text else parse_spec(text))
    experts, k = int(facts["num_experts"]), int(facts["top_k"])
    # Sizes that keep the suite small enough to travel (64 MiB in all).
    tokens = [1, 131 if experts <= 2048 else 64] + ([1024] if experts <= 256 else [])
    with open(os.path.join(directory, "case.txt"), "w") as f:
        f.write("name %s\nexperts %d\ntop_k %d\nlogits_dtype %s\n"
                "selection %s\nscore_bias %s\nreplay %s\ndispatch %s\n"
                "capture %s\ntokens %s\n" % (
                    name, experts, k, facts["logits_dtype"],
                    facts["selection"], facts["score_bias"], facts["replay"],
                    facts["dispatch"], facts["capture"],
                    " ".join(str(t) for t in tokens)))
    for t in tokens:
        inputs = os.path.join(directory, "t%d" % t)
        os.makedirs(inputs)
        logits = [rng.gauss(0.0, 2.0) for _ in range(t * experts)]
        dtype = facts["logits_dtype"]
        if dtype == "f32":
            write_npy(os.path.join(inputs, "logits.npy"), "<f4", [t, experts], logits)
        elif dtype == "f16":
            write_npy(os.path.join(inputs, "logits.npy"), "<f2", [t, experts], logits)
        else:
            write_npy(os.path.join(inputs, "logits.npy"), "<u2", [t, experts],
                      [bf16_bits(x) for x in logits])
        route_inputs = ["logits"]
        # The shared expert's gate logits go to route and replay alike.
        gate_inputs = []
        if facts["shared_expert_gate"] == "true":
            gate = [rng.gauss(0.0, 3.0) for _ in range(t)]
            if dtype == "f32":
                write_npy(os.path.join(inputs, "shared_gate_logits.npy"), "<f4", [t, 1], gate)
            elif dtype == "f16":
                write_npy(os.path.join(inputs, "shared_gate_logits.npy"), "<f2", [t, 1], gate)
            else:
                write_npy(os.path.join(inputs, "shared_gate_logits.npy"), "<u2", [t, 1],
                          [bf16_bits(x) for x in gate])
            gate_inputs = ["shared_gate_logits"]
            route_inputs += gate_inputs
        if facts["score_bias"] == "true":
            write_npy(os.path.join(inputs, "bias.npy"), "<f4", [experts],
                      [0.1 * rng.gauss(0.0, 2.0) for _ in range(experts)])
            route_inputs.append("bias")
        if facts["selection"] == "hash":
            vocab = 97
            write_npy(os.path.join(inputs, "token_ids.npy"), "<i4", [t],
                      [rng.randrange(vocab) for _ in range(t)])
            table = []
            for _ in range(vocab):
                table += distinct_ids(rng, experts, k)
            write_npy(os.path.join(inputs, "hash_table.npy"), "<i4", [vocab, k], table)
            route_inputs += ["token_ids", "hash_table"]
        if facts["capture"] == "true":
            write_npy(os.path.join(inputs, "capture.npy"),
                      "<i2" if experts <= 32767 else "<i4", [t, 1, k], [0] * (t * k))
            route_inputs.append("capture")

        def moegen_run(names, out):
            command = [os.path.join(args.bin, "moegen"), "run", spec_path,
                       "--backend", "cpu", "--out", os.path.join(inputs, out)]
            for input_name in names:
                file = {"bad_forced_ids": "forced_ids",
                        "bad_logits": "logits"}.get(input_name, input_name)
                command += ["--in", "%s=%s" % (file, os.path.join(inputs, input_name + ".npy"))]
            return run(command)

        code, _, err = moegen_run(route_inputs, "route")
        if code != 0:
            sys.exit("%s t%d: moegen run failed:\n%s" % (name, t, err))
        def write_bad_logits(t):
            bad_logits = list(logits)
            nan_at, inf_at = (t // 2) * experts + experts // 3, (t - 1) * experts
            if dtype == "f32" or dtype == "f16":
                bad_logits[inf_at], bad_logits[nan_at] = float("inf"), float("nan")
                write_npy(os.path.join(inputs, "bad_logits.npy"),
                          "<f4" if dtype == "f32" else "<f2", [t, experts],
                          bad_logits)
            else:
                bits = [bf16_bits(x) for x in logits]
                bits[inf_at], bits[nan_at] = 0x7F80, 0x7FC0
                write_npy(os.path.join(inputs, "bad_logits.npy"), "<u2",
                          [t, experts], bits)
            bad_inputs = ["bad_logits" if n == "logits" else n
                          for n in route_inputs]
            code, _, err = moegen_run(bad_inputs, "bad_route")
            if code != 2:
                sys.exit("%s t%d: non-finite logits were not refused" % (name, t))
            with open(os.path.join(inputs, "bad_route.txt"), "w") as f:
                f.write(err.strip().split(": error: ", 1)[1] + "\n")

        # Two non-finite logits, a NaN mid-batch and +inf in the last
        # token: the route reports the first (token order), as the CPU does;
        # on a token-lanes GPU kernel their groups take the row layout. Not
        # at the largest token count: the carry has a size limit.
        if t != tokens[-1] or len(tokens) == 1:
            write_bad_logits(t)

        if facts["replay"] == "true":
            forced = []
            for _ in range(t):
                forced += distinct_ids(rng, experts, k)
            write_npy(os.path.join(inputs, "forced_ids.npy"), "<i4", [t, k], forced)
            code, _, err = moegen_run(["logits", "forced_ids"] + gate_inputs, "replay")
            if code != 0:
                sys.exit("%s t%d: moegen run (replay) failed:\n%s" % (name, t, err))
            # Two invalid ids: the error names the first in token order.
            bad = list(forced)
            bad[(t - 1) * k + (k - 1)] = experts + 5
            bad[(t // 2) * k] = -3
            write_npy(os.path.join(inputs, "bad_forced_ids.npy"), "<i4", [t, k], bad)
            code, _, err = moegen_run(["logits", "bad_forced_ids"] + gate_inputs,
                                      "bad_replay")
            if code != 2:
                sys.exit("%s t%d: bad forced ids were not refused" % (name, t))
            # "FILE: error: MESSAGE": the checker compares the message.
            with open(os.path.join(inputs, "bad_replay.txt"), "w") as f:
                f.write(err.strip().split(": error: ", 1)[1] + "\n")


def write_bucket_db(args, text, path, buckets):
    """A tuning database whose entries for the spec `text` on "suite GPU"
    (this build, args.arch) hold the schedules of `buckets`: (tokens,
    lanes per token, tokens per block, top-k method)."""
    scratch = path + ".spec"
    os.makedirs(scratch)
    with open(os.path.join(scratch, "spec.yaml"), "w") as f:
        f.write(text)
    moegen = os.path.join(args.bin, "moegen")
    code, _, err = run([moegen, "compile", os.path.join(scratch, "spec.yaml"),
                        "--emit=ptx", "--arch", args.arch,
                        "-o", os.path.join(scratch, "kernels")])
    if code != 0:
        sys.exit("buckets: moegen compile failed:\n%s" % err)
    with open(os.path.join(scratch, "kernels", "manifest.json")) as f:
        manifest = json.load(f)
    shutil.rmtree(scratch)
    code, version, err = run([moegen, "--version"])
    entries = [{"spec_hash": manifest["spec_hash"],
                "spec_name": manifest["spec_name"], "backend": "cuda",
                "machine": "suite GPU, " + args.arch,
                "compiler_version": version.split()[1], "tokens": tokens,
                "config": {"lanes_per_token": lanes,
                           "tokens_per_block": per_block, "topk": topk}}
               for tokens, lanes, per_block, topk in buckets]
    with open(path, "w") as f:
        json.dump({"format": "moegen-tuning", "version": 1,
                   "entries": entries}, f)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True, help="the build's bin/ (moegen)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--arch", default="sm_90")
    parser.add_argument("--random", type=int, default=16)
    parser.add_argument("--seed", type=int, default=20261123)
    parser.add_argument("--no-templates", action="store_true",
                        help="random specs only (a quick suite for tests)")
    args = parser.parse_args()
    if os.path.exists(args.out):
        sys.exit("%s exists: give a new directory" % args.out)
    os.makedirs(args.out)
    rng = random.Random(args.seed)
    cases = []
    templates = os.path.join(ROOT, "templates")
    for file in sorted(os.listdir(templates)):
        if file.endswith(".yaml") and not args.no_templates:
            with open(os.path.join(templates, file)) as f:
                cases.append((file[:-5], f.read()))
    for index in range(args.random):
        cases.append(("random-%d" % index, random_specs.spec(rng, index)))
    # Each schedule family on the device, not only the heuristic's pick:
    # a token per lane, per 4 lanes and per warp.
    schedules = []
    if not args.no_templates:
        for template in ("mixtral-8x7b", "qwen3-30b-a3b", "deepseek-v3"):
            with open(os.path.join(templates, template + ".yaml")) as f:
                text = f.read()
            for lanes in (1, 4, 32):
                schedules.append(("%s-lanes-%d" % (template, lanes), text,
                                  ("--lanes-per-token", str(lanes))))
    # Rows of 1024 and 4096 experts: a warp per token and the streamed lane
    # lists (a bound from the lanes' maxima, then each lane's list of the
    # keys above it).
    if not args.no_templates:
        cases.append(("wide-softmax-1024",
                      "name: wide_softmax_1024\nnum_experts: 1024\ntop_k: 8\n"
                      "scoring: softmax\nnormalize: true\nreplay: true\n"
                      "dispatch: true\nlogits_dtype: bf16\n"))
        cases.append(("wide-groups-4096",
                      "name: wide_groups_4096\nnum_experts: 4096\ntop_k: 8\n"
                      "scoring: sigmoid\nscore_bias: true\ngroups: 8\n"
                      "topk_groups: 3\nnormalize: true\ndispatch: true\n"))
    # Top-p routing (dynamic k): -1 in the unused slots of route's ids,
    # which dispatch skips, replay accepts and the checker compares like
    # any id.
    if not args.no_templates:
        cases.append(("topp-softmax-64",
                      "name: topp_softmax_64\nnum_experts: 64\nprogram: |\n"
                      "  route(logits) -> (ids, weights):\n"
                      "    s = softmax(logits)\n"
                      "    ids = topp(s, 8, p: 0.6)\n"
                      "    weights = normalize(gather(s, ids))\n"
                      "  replay(logits, forced_ids) -> (ids, weights):\n"
                      "    s = softmax(logits)\n"
                      "    ids = forced(forced_ids)\n"
                      "    weights = normalize(gather(s, ids))\n"
                      "  dispatch(topk_ids) -> (counts, offsets, sorted_slots, "
                      "slot_positions):\n"
                      "    counts, offsets, sorted_slots, slot_positions = "
                      "dispatch(topk_ids)\n"))
        cases.append(("topp-grouped-256",
                      "name: topp_grouped_256\nnum_experts: 256\n"
                      "logits_dtype: bf16\nprogram: |\n"
                      "  route(logits, bias) -> (ids, weights):\n"
                      "    s = sigmoid(logits)\n"
                      "    c = group_mask(s + bias, groups: 8, keep: 4, by: top2_sum)\n"
                      "    ids = topp(c, 8, p: 1.5)\n"
                      "    weights = scale(normalize(gather(s, ids)), 2.5)\n"
                      "  dispatch(topk_ids) -> (counts, offsets, sorted_slots, "
                      "slot_positions):\n"
                      "    counts, offsets, sorted_slots, slot_positions = "
                      "dispatch(topk_ids)\n"))
    # DeepSeek-V3's router with its balancing step: update_bias (one warp)
    # against its definition.
    if not args.no_templates:
        cases.append(("balanced-256",
                      "name: balanced_256\nnum_experts: 256\nprogram: |\n"
                      "  route(logits, bias) -> (ids, weights):\n"
                      "    s = sigmoid(logits)\n"
                      "    c = group_mask(s + bias, groups: 8, keep: 4, by: top2_sum)\n"
                      "    ids = topk(c, 8)\n"
                      "    weights = scale(normalize(gather(s, ids)), 2.5)\n"
                      "  dispatch(topk_ids) -> (counts, offsets, sorted_slots, "
                      "slot_positions):\n"
                      "    counts, offsets, sorted_slots, slot_positions = "
                      "dispatch(topk_ids)\n"
                      "  update_bias(bias, expert_counts) -> updated_bias:\n"
                      "    updated_bias = update_bias(bias, expert_counts, "
                      "rate: 0.001)\n"))
    # Permute and combine (one case per row type; f32 alone in the quick
    # suite): moegen-gpu-check checks them against their contract on the
    # GPU's own routing.
    with open(os.path.join(templates, "deepseek-v3.yaml")) as f:
        text = f.read()
    for dtype in ("f32",) if args.no_templates else ("f32", "bf16", "f16"):
        cases.append(("deepseek-v3-permute-%s" % dtype,
                      text + "permute: true\nhidden_dtype: %s\n"
                      "hidden_size: 7168\n" % dtype))
    for name, text in cases:
        make_case(args, name, text, rng)
    # A route kernel per token bucket (moegen compile --tuning-db): the
    # suite's token counts 1, 131 and 1024 each launch another schedule.
    if not args.no_templates:
        with open(os.path.join(templates, "deepseek-v3.yaml")) as f:
            text = f.read()
        db = os.path.join(args.out, "buckets-tuning.json")
        write_bucket_db(args, text, db, [(1, 1, 32, "lane_lists"),
                                         (100, 4, 64, "argmax_passes"),
                                         (1000, 32, 4, "insertion")])
        schedules.append(("deepseek-v3-buckets", text,
                          ("--tuning-db", db, "--tuning-device", "suite GPU")))
    for name, text, flags in schedules:
        make_case(args, name, text, rng, flags)
    cases += [(name, text) for name, text, _ in schedules]
    with open(os.path.join(args.out, "cases.txt"), "w") as f:
        f.write("".join(name + "\n" for name, _ in cases))
    print("%d cases for %s in %s" % (len(cases), args.arch, args.out))


if __name__ == "__main__":
    main()
