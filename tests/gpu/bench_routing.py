#!/usr/bin/env python3
"""GPU routing benchmark: moegen's kernels against PyTorch eager and
torch.compile, on the same inputs, results checked equal before timing.

    python3 tests/gpu/bench_routing.py --kernels gpu-carry/bench [--out DIR]
        [--tokens 1,16,64,256,1024,8192,65536] [--reps 50] [--specs A,B]

Runs on a GPU machine without the compiler: the kernels are cubins built
where moegen is (tests/gpu/prepare-device-carry.sh writes gpu-carry/bench/
<spec>/: fp32 logits, routing and dispatch only). moegen's kernels are
loaded and launched through the CUDA driver API (ctypes on libcuda), on
PyTorch's current stream, exactly as the manifest says (parameters in
order, grid from the launch rule, the cooperative dispatch with its
scratch). The peers are the routing functions as Hugging Face transformers
writes them (DeepSeek-V3's and Kimi-K2's TopkRouter, Qwen3-MoE's softmax
top-k), DeepSeek-V4's sqrt(softplus) gate and expert-choice routing (each
expert's top tokens by a stable sort), eager and under torch.compile
(Inductor, Triton kernels).

What is timed, per spec and T:
  - moegen route, moegen route + dispatch, each peer (route only: the peers
    build no dispatch metadata), each with CUDA events around one call, a
    256 MiB buffer written between calls so that L2 is cold, 10 warm-up
    calls, then the median and the 10th/90th percentiles of --reps calls;
  - moegen route + dispatch and the eager peer as a CUDA graph of the whole
    call, replayed (the launch cost a decode step sees);
  - up to --graph-parts-up-to tokens (1024), graphs of route alone and of
    the call, each also behind the error record's memset node that calls
    no longer issue, of the call with a one-block dispatch launched
    plainly, and of a one-element PyTorch kernel, so that the cost of the
    memset, of the dispatch launch and of its cooperative form can be read
    off (graph_parts);
  - the device's copy bandwidth (1 GiB device-to-device, read + write) as
    the roofline, and each call's bytes moved (logits in; ids and weights
    out) against it.
The results go to stdout and, with --out, to DIR/bench-peers.json,
rewritten after every row ("complete": true once the run has ended).
Exit status 1 if any result differs from the eager peer's.
"""
import argparse
import ctypes
import json
import math
import os
import statistics
import sys

import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------
# The peers, as the field writes them
# ---------------------------------------------------------------------------


def deepseek_v3_router(logits, bias, n_group, topk_group, top_k, scale):
    """transformers' DeepseekV3TopkRouter (get_topk_indices + weights)."""
    scores = logits.sigmoid()
    scores_for_choice = scores + bias.unsqueeze(0)
    if n_group > 1:
        experts = scores.shape[-1]
        group_scores = (scores_for_choice.view(-1, n_group, experts // n_group)
                        .topk(2, dim=-1)[0].sum(dim=-1))
        group_idx = torch.topk(group_scores, k=topk_group, dim=-1,
                               sorted=False)[1]
        group_mask = torch.zeros_like(group_scores)
        group_mask.scatter_(1, group_idx, 1)
        score_mask = (group_mask.unsqueeze(-1)
                      .expand(-1, n_group, experts // n_group)
                      .reshape(-1, experts))
        scores_for_choice = scores_for_choice.masked_fill(~score_mask.bool(),
                                                          0.0)
    topk_indices = torch.topk(scores_for_choice, k=top_k, dim=-1,
                              sorted=False)[1]
    topk_weights = scores.gather(1, topk_indices)
    topk_weights = topk_weights / (topk_weights.sum(dim=-1, keepdim=True)
                                   + 1e-20)
    return topk_indices, topk_weights * scale


def qwen3_router(logits, top_k):
    """transformers' Qwen3MoeSparseMoeBlock routing (norm_topk_prob)."""
    routing_weights = F.softmax(logits, dim=1, dtype=torch.float)
    routing_weights, selected_experts = torch.topk(routing_weights, top_k,
                                                   dim=-1)
    routing_weights = routing_weights / routing_weights.sum(dim=-1,
                                                            keepdim=True)
    return selected_experts, routing_weights


def deepseek_v4_router(logits, bias, top_k, scale):
    """DeepSeek-V4's gate: sqrt(softplus), selection on s + bias."""
    scores = F.softplus(logits).sqrt()
    topk_indices = torch.topk(scores + bias.unsqueeze(0), k=top_k, dim=-1,
                              sorted=False)[1]
    topk_weights = scores.gather(1, topk_indices)
    topk_weights = topk_weights / topk_weights.sum(dim=-1, keepdim=True)
    return topk_indices, topk_weights * scale


def deepseek_v4_hash_router(logits, token_ids, table, scale):
    """DeepSeek-V4's hash layers: the experts are the table's row for the
    token id; sqrt(softplus) scores only weigh them."""
    scores = F.softplus(logits).sqrt()
    topk_indices = table[token_ids]
    topk_weights = scores.gather(1, topk_indices)
    topk_weights = topk_weights / (topk_weights.sum(dim=-1, keepdim=True)
                                   + 1e-20)
    return topk_indices, topk_weights * scale


def hash_inputs(tokens, experts, k, device, gen, vocab=4096):
    """Token ids in [0, vocab) and a table of k distinct experts per id."""
    table = torch.rand(vocab, experts, device=device,
                       generator=gen).argsort(dim=1)[:, :k]
    token_ids = torch.randint(vocab, (tokens,), device=device, generator=gen)
    return token_ids.int(), table.int().contiguous()


def expert_choice_router(logits, top_k, capacity_factor):
    """Expert choice (Zhou et al., 2022): expert e takes the c =
    ceil(f * T / E) tokens with the largest softmax scores, ties to the
    lower token (a stable sort); each token lists its takers by score, ties
    to the lower expert, at most k, then -1."""
    tokens, experts = logits.shape
    scores = torch.softmax(logits, dim=-1, dtype=torch.float32)
    c = min(tokens, math.ceil(capacity_factor * tokens / experts))
    order = torch.sort(scores.t(), dim=1, descending=True, stable=True).indices
    taken = torch.zeros(experts, tokens, dtype=torch.bool, device=logits.device)
    taken.scatter_(1, order[:, :c], True)
    taken = taken.t()
    keys = torch.where(taken, scores, -1.0)
    ranked = torch.sort(keys, dim=1, descending=True, stable=True)
    ids = ranked.indices[:, :top_k].int()
    kept = ranked.values[:, :top_k] >= 0
    ids = torch.where(kept, ids, -1)
    weights = torch.where(kept, scores.gather(1, ids.clamp(min=0).long()), 0.0)
    return ids, weights


def expert_choice_facts(directory):
    """(k, capacity factor) of a gating program that selects by
    expert_choice(x, k, capacity_factor: f), or None."""
    import re
    with open(os.path.join(directory, "spec.yaml")) as f:
        text = f.read()
    found = re.search(r"expert_choice\([^,]+,\s*(\d+),\s*capacity_factor:\s*"
                      r"([0-9.eE+-]+)\)", text)
    return (int(found.group(1)), float(found.group(2))) if found else None


def peer_for(spec):
    """The eager function of a spec's facts, or None."""
    if "expert_choice" in spec:
        k, factor = spec["expert_choice"]
        return ("expert choice (stable sorts)",
                lambda x, b: expert_choice_router(x, k, factor))
    # Other gating programs (no scoring key) have no eager twin here.
    if "scoring" not in spec:
        return None
    e, k = spec["num_experts"], spec["top_k"]
    scale = spec.get("scaling_factor", 1.0)
    if spec.get("selection") == "hash":
        # The eager twin takes the token ids and the table after the bias.
        if spec["scoring"] != "sqrtsoftplus":
            return None
        return ("DeepSeek-V4 hash gate",
                lambda x, b, ids, table: deepseek_v4_hash_router(
                    x, ids, table, scale))
    if spec["scoring"] == "softmax" and not spec.get("score_bias"):
        return "Qwen3-MoE softmax top-k", lambda x, b: qwen3_router(x, k)
    if spec["scoring"] == "sigmoid":
        groups = spec.get("groups", 1)
        return ("DeepSeek-V3 TopkRouter" if groups > 1 else
                "Kimi-K2 (DeepSeek-V3 TopkRouter, 1 group)",
                lambda x, b: deepseek_v3_router(x, b, groups,
                                                spec.get("topk_groups", 1), k,
                                                scale))
    if spec["scoring"] == "sqrtsoftplus":
        return ("DeepSeek-V4 sqrt(softplus) gate",
                lambda x, b: deepseek_v4_router(x, b, k, scale))
    return None

# ---------------------------------------------------------------------------
# moegen's kernels through the driver API
# ---------------------------------------------------------------------------


class Driver:
    def __init__(self):
        self.lib = ctypes.CDLL("libcuda.so.1")

    def check(self, result, what):
        if result != 0:
            name = ctypes.c_char_p()
            self.lib.cuGetErrorName(result, ctypes.byref(name))
            raise RuntimeError("%s: %s" % (what, name.value.decode()))


def kernel_key(kernel):
    """The name MoegenKernels keeps a manifest kernel under: its entry, or
    "<entry>+dispatch" for a route with a fused dispatch (docs/kernel-abi.md,
    "Fused dispatch"); None for a token bucket's (bench kernels have none)."""
    if kernel.get("fused_dispatch_max_slots"):
        return kernel["entry"] + "+dispatch"
    return None if kernel.get("min_tokens") else kernel["entry"]


class MoegenKernels:
    """One kernel directory (manifest.json + kernels.cubin), loaded into
    PyTorch's context, launched on PyTorch's current stream."""

    def __init__(self, driver, directory, device):
        self.driver = driver
        with open(os.path.join(directory, "manifest.json")) as f:
            self.manifest = json.load(f)
        with open(os.path.join(directory, self.manifest["cubin"]), "rb") as f:
            image = f.read()
        self.image = ctypes.create_string_buffer(image, len(image))
        torch.zeros(1, device=device)  # the primary context, current
        self.module = ctypes.c_void_p()
        driver.check(driver.lib.cuModuleLoadData(ctypes.byref(self.module),
                                                 self.image),
                     "cuModuleLoadData(%s)" % directory)
        self.kernels = {}
        for kernel in self.manifest["kernels"]:
            function = ctypes.c_void_p()
            driver.check(driver.lib.cuModuleGetFunction(
                ctypes.byref(function), self.module,
                kernel["symbol"].encode()), "cuModuleGetFunction")
            shared = kernel["launch"]["dynamic_shared_memory_bytes"]
            if shared > 48 * 1024:
                # CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
                driver.check(driver.lib.cuFuncSetAttribute(function, 8,
                                                           shared),
                             "cuFuncSetAttribute")
            key = kernel_key(kernel)
            if key:
                self.kernels[key] = (kernel, function)
        props = torch.cuda.get_device_properties(device)
        self.sms = props.multi_processor_count
        self.device = device
        # One scratch buffer for the kernels that take one (the dispatch,
        # an expert-choice route, a route with a fused dispatch), as large
        # as the largest: zeroed once, each kernel leaves it ready for the
        # next call.
        words = [p["shape"][0] for kernel, _ in self.kernels.values()
                 for p in kernel["params"]
                 if p["name"] in ("scratch", "dispatch_scratch")]
        self.scratch = (torch.zeros(max(words), dtype=torch.int32,
                                    device=device) if words else None)

    def grid(self, kernel, tokens):
        launch = kernel["launch"]
        if launch["grid_dim"] == "cooperative":
            slots = tokens * self.manifest["top_k"]
            wanted = -(-slots // launch["slots_per_block"])
            return max(1, min(wanted, launch["max_grid_dim"], self.sms))
        if launch["tokens_per_block"] > 0:
            return -(-tokens // launch["tokens_per_block"])
        return 1

    def launch(self, entry, tensors, tokens, plain_one_block=False):
        """plain_one_block: a cooperative kernel whose grid is one block
        (always resident) by cuLaunchKernel, for graph_parts to weigh the
        cooperative launch itself."""
        kernel, function = self.kernels[entry]
        extents = {"T": tokens, "T*k": tokens * self.manifest["top_k"]}
        if "hash_table" in tensors:
            extents["V"] = tensors["hash_table"].shape[0]
        values = []
        for param in kernel["params"]:
            if param["kind"] == "pointer":
                values.append(tensors[param["name"]].data_ptr())
            elif param["kind"] == "size":
                owner = [p for p in kernel["params"]
                         if p["name"] == param["of"]][0]
                dim = owner["shape"][param["dim"]]
                values.append(extents[dim] if isinstance(dim, str) else dim)
            else:
                values.append(0)  # the capture layer (not benchmarked)
        grid = self.grid(kernel, tokens)
        if grid == 0:
            return
        storage = (ctypes.c_uint64 * len(values))(*values)
        pointers = (ctypes.c_void_p * len(values))(
            *[ctypes.addressof(storage) + 8 * i for i in range(len(values))])
        stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
        launch = kernel["launch"]
        args = (function, grid, 1, 1, launch["block_dim"], 1, 1,
                launch["dynamic_shared_memory_bytes"], stream, pointers)
        if launch["grid_dim"] == "cooperative" and not (plain_one_block
                                                        and grid == 1):
            self.driver.check(self.driver.lib.cuLaunchCooperativeKernel(*args),
                              "cuLaunchCooperativeKernel(%s)" % entry)
        else:
            self.driver.check(self.driver.lib.cuLaunchKernel(*args, None),
                              "cuLaunchKernel(%s)" % entry)

    def outputs(self, tokens):
        e, k = self.manifest["num_experts"], self.manifest["top_k"]
        d = self.device
        out = {"topk_ids": torch.empty(tokens, k, dtype=torch.int32, device=d),
               "topk_weights": torch.empty(tokens, k, device=d),
               "error": torch.zeros(6, dtype=torch.int64, device=d),
               "scratch": self.scratch, "dispatch_scratch": self.scratch}
        if "dispatch" in self.kernels:
            out.update({
                "expert_counts": torch.empty(e, dtype=torch.int32, device=d),
                "expert_offsets": torch.empty(e + 1, dtype=torch.int32,
                                              device=d),
                "sorted_slots": torch.empty(max(1, tokens * k),
                                            dtype=torch.int32, device=d),
                "slot_positions": torch.empty(max(1, tokens * k),
                                              dtype=torch.int32, device=d)})
        return out

    def route_entry(self):
        return "route_hash" if "route_hash" in self.kernels else "route"

    def fuses(self, tokens):
        """Whether the runtime makes a call of `tokens` tokens that
        dispatches as one kernel (CudaRouter::fusesDispatch)."""
        fused = self.kernels.get(self.route_entry() + "+dispatch")
        return bool(fused) and 0 < tokens * self.manifest["top_k"] <= \
            fused[0]["fused_dispatch_max_slots"]

    def call(self, tensors, tokens, dispatch, zero_record=False,
             plain_one_block=False, pair=False):
        """One call as the runtime makes it, on the current stream: up to
        a fused kernel's slots the route with its fused dispatch, else the
        route, then the dispatch. pair: the route, then the dispatch,
        always. The runtime does not zero the error record per call
        (docs/runtime.md, "The error record"); zero_record issues the
        cuMemsetD8Async it once did (a memset node in a graph), for
        graph_parts to say what that cost."""
        if zero_record:
            record = tensors["error"]
            stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
            self.driver.check(self.driver.lib.cuMemsetD8Async(
                ctypes.c_uint64(record.data_ptr()), ctypes.c_ubyte(0),
                ctypes.c_size_t(record.numel() * 8), stream),
                "cuMemsetD8Async(error record)")
        if dispatch and not pair and self.fuses(tokens):
            self.launch(self.route_entry() + "+dispatch", tensors, tokens)
            return
        self.launch(self.route_entry(), tensors, tokens)
        if dispatch:
            self.launch("dispatch", tensors, tokens, plain_one_block)

# ---------------------------------------------------------------------------
# Checking and timing
# ---------------------------------------------------------------------------


def compare(ids, weights, peer_ids, peer_weights):
    """"" when moegen's picks equal the peer's as sets per token (fp32
    near-ties aside: at most 0.1% of tokens) and the weights of equal picks
    agree within 1e-5 relative; else what differs."""
    order = ids.long().sort(dim=1)
    peer_order = peer_ids.long().sort(dim=1)
    same_token = (order.values == peer_order.values).all(dim=1)
    differing = int((~same_token).sum())
    if differing > max(1, ids.shape[0] // 1000):
        return "%d of %d tokens pick other experts" % (differing, ids.shape[0])
    w = weights.float().gather(1, order.indices)[same_token]
    pw = peer_weights.float().gather(1, peer_order.indices)[same_token]
    error = ((w - pw).abs() / pw.abs().clamp(min=1.0)).max() if w.numel() \
        else torch.tensor(0.0)
    if float(error) > 1e-5:
        return "weights differ by %.2e relative" % float(error)
    return ""


def check_dispatch(tensors, tokens, experts):
    ids = tensors["topk_ids"].flatten().long()
    # Unused slots (-1, an expert-choice router's) are counted nowhere and
    # sorted last.
    ids = torch.where(ids < 0, experts, ids)
    counts = torch.bincount(ids, minlength=experts + 1)[:experts]
    offsets = torch.zeros(experts + 1, dtype=torch.long, device=ids.device)
    offsets[1:] = counts.cumsum(0)
    # Stable sort by expert: (expert, slot) order.
    order = torch.sort(ids * ids.numel() + torch.arange(
        ids.numel(), device=ids.device)).indices
    if not torch.equal(tensors["expert_counts"].long(), counts):
        return "expert_counts differ"
    if not torch.equal(tensors["expert_offsets"].long(), offsets):
        return "expert_offsets differ"
    used = int(offsets[-1])
    if used and not torch.equal(tensors["sorted_slots"][:used].long(),
                                order[:used]):
        return "sorted_slots differ"
    if not bool((tensors["sorted_slots"][used:ids.numel()] == -1).all()):
        return "sorted_slots past the used slots are not -1"
    return ""


class ColdL2:
    def __init__(self, device):
        self.buffer = torch.empty(256 << 20, dtype=torch.uint8, device=device)

    def flush(self):
        self.buffer.fill_(1)


def time_calls(fn, flusher, reps, warmup=10):
    """Median, 10th and 90th percentile of one call, in us, cold L2."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        flusher.flush()
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    times.sort()
    return {"median_us": statistics.median(times),
            "p10_us": times[len(times) // 10],
            "p90_us": times[(len(times) * 9) // 10]}


def graphed(fn):
    """fn captured as a CUDA graph, or the error that prevented it."""
    fn()  # allocations and lazy initialization outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            fn()
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        return None, str(e).splitlines()[0]
    return graph, ""


def graph_parts(kernels, tensors, tokens, dispatch, flusher, reps):
    """What a small call's graph spends where: route alone, route +
    dispatch (the call: one kernel where the dispatch is fused), each also
    behind the error record's memset node that calls no longer issue, the
    route then the dispatch as two kernels, and the same with a one-block
    dispatch launched plainly instead of cooperatively (median us of each
    replay, cold L2), and a graph of one one-element PyTorch kernel as the
    floor of a graph launch. The differences say what the memset, the
    dispatch launch, its cooperative form and the fusion cost or save."""
    tiny = torch.zeros(1, device=tensors["error"].device)
    variants = {
        "tiny_kernel": lambda: tiny.add_(1),
        "route": lambda: kernels.call(tensors, tokens, False),
        "memset_route": lambda: kernels.call(tensors, tokens, False,
                                             zero_record=True),
    }
    if dispatch:
        variants["route_dispatch"] = lambda: kernels.call(tensors, tokens,
                                                          True)
        variants["memset_route_dispatch"] = lambda: kernels.call(
            tensors, tokens, True, zero_record=True)
        variants["route_then_dispatch"] = lambda: kernels.call(
            tensors, tokens, True, pair=True)
        variants["route_dispatch_plain"] = lambda: kernels.call(
            tensors, tokens, True, plain_one_block=True, pair=True)
    parts = {}
    for name, fn in variants.items():
        graph, why = graphed(fn)
        parts[name] = (time_calls(graph.replay, flusher, reps)["median_us"]
                       if graph else why)
    return parts


def copy_bandwidth(device):
    src = torch.empty(1 << 28, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    src.fill_(1.0)
    for _ in range(3):
        dst.copy_(src)
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        dst.copy_(src)
    end.record()
    end.synchronize()
    seconds = start.elapsed_time(end) / 1e3 / 10
    return 2 * src.numel() * 4 / seconds / 1e9


def load_spec(directory):
    facts = {}
    with open(os.path.join(directory, "spec.yaml")) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if ":" not in line:
                continue
            key, value = (part.strip() for part in line.split(":", 1))
            if value in ("true", "false"):
                facts[key] = value == "true"
            else:
                try:
                    facts[key] = int(value)
                except ValueError:
                    try:
                        facts[key] = float(value)
                    except ValueError:
                        facts[key] = value
    return facts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", required=True,
                        help="a directory of kernel directories (one per spec)")
    parser.add_argument("--tokens", default="1,16,64,256,1024,8192,65536")
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--out", help="write bench-peers.json here")
    parser.add_argument("--graph-parts-up-to", type=int, default=1024,
                        help="time the graph's parts (memset, route, "
                             "dispatch) up to this many tokens")
    parser.add_argument("--specs",
                        help="only these kernel directories (comma-separated "
                             "names under --kernels)")
    args = parser.parse_args()
    if args.reps < 50:
        parser.error("--reps must be at least 50")
    # The four routers the targets name first, so that a run cut short
    # has them.
    first = ["deepseek-v3", "qwen3-30b-a3b", "kimi-k2", "deepseek-v4-flash"]
    names = sorted(os.listdir(args.kernels),
                   key=lambda n: (first.index(n) if n in first else len(first),
                                  n))
    if args.specs:
        unknown = [n for n in args.specs.split(",") if n not in names]
        if unknown:
            parser.error("--specs: no kernel directory %s under %s (there: %s)"
                         % (unknown[0], args.kernels, ", ".join(names)))
        names = [n for n in names if n in args.specs.split(",")]
    device = torch.device("cuda")
    driver = Driver()
    flusher = ColdL2(device)
    bandwidth = copy_bandwidth(device)
    name = torch.cuda.get_device_name(device)
    print("device: %s, copy bandwidth %.0f GB/s (1 GiB, read + write)" %
          (name, bandwidth))
    print("torch %s, triton %s" % (torch.__version__, _triton_version()))
    results = {"device": name, "copy_bandwidth_gbs": bandwidth, "rows": [],
               "failures": []}
    failed = False
    save(results, args.out)
    for spec_dir in names:
        directory = os.path.join(args.kernels, spec_dir)
        spec = load_spec(directory)
        choice = expert_choice_facts(directory)
        if choice:
            spec["expert_choice"] = choice
            spec["top_k"] = choice[0]
        peer = peer_for(spec)
        if peer is None:
            continue
        peer_name, eager = peer
        compiled = torch.compile(eager)
        try:
            kernels = MoegenKernels(driver, directory, device)
        except (OSError, RuntimeError) as exc:
            fail(results, spec["name"], 0,
                 "loading %s: %s" % (directory, exc))
            failed = True
            save(results, args.out)
            continue
        e, k = spec["num_experts"], spec["top_k"]
        dispatch = "dispatch" in kernels.kernels
        print("\n%s (E %d, k %d) vs %s" % (spec["name"], e, k, peer_name))
        print("%8s %12s %12s %12s %12s %14s %14s %7s" % (
            "T", "moegen", "moegen+disp", "eager", "compile",
            "graph moegen", "graph eager", "% roof"))
        for tokens in [int(t) for t in args.tokens.split(",")]:
            try:
                gen = torch.Generator(device=device).manual_seed(tokens)
                logits = 2.0 * torch.randn(tokens, e, device=device,
                                           generator=gen)
                bias = 0.01 * torch.randn(e, device=device, generator=gen)
                tensors = kernels.outputs(tokens)
                tensors["logits"] = logits
                tensors["bias"] = bias
                # The eager twin's arguments after (logits, bias): a hash
                # router's token ids and table, the same moegen reads.
                extra = ()
                if spec.get("selection") == "hash":
                    token_ids, table = hash_inputs(tokens, e, k, device, gen)
                    tensors["token_ids"] = token_ids
                    tensors["hash_table"] = table
                    extra = (token_ids.long(), table.long())
                # Equal results first.
                kernels.call(tensors, tokens, dispatch)
                torch.cuda.synchronize()
                if int(tensors["error"][0]):
                    fail(results, spec["name"], tokens,
                         "moegen reported error code %d" %
                         int(tensors["error"][0]))
                    failed = True
                    continue
                peer_ids, peer_weights = eager(logits, bias, *extra)
                problem = compare(tensors["topk_ids"], tensors["topk_weights"],
                                  peer_ids, peer_weights)
                compiled_ids, compiled_weights = compiled(logits, bias, *extra)
                problem = problem or compare(compiled_ids, compiled_weights,
                                             peer_ids, peer_weights)
                if not problem and dispatch:
                    problem = check_dispatch(tensors, tokens, e)
                if not problem and dispatch and kernels.fuses(tokens):
                    # The fused kernel's dispatch was checked; the pair's
                    # too, on the same ids, into outputs filled with -7 so
                    # that the check sees what the pair wrote.
                    for name in ("expert_counts", "expert_offsets",
                                 "sorted_slots", "slot_positions"):
                        tensors[name].fill_(-7)
                    kernels.call(tensors, tokens, True, pair=True)
                    torch.cuda.synchronize()
                    problem = check_dispatch(tensors, tokens, e)
                if problem:
                    fail(results, spec["name"], tokens,
                         "results differ: " + problem)
                    failed = True
                    continue
                row = {"spec": spec["name"], "tokens": tokens}
                row["moegen_route"] = time_calls(
                    lambda: kernels.call(tensors, tokens, False), flusher,
                    args.reps)
                if dispatch:
                    row["moegen_route_dispatch"] = time_calls(
                        lambda: kernels.call(tensors, tokens, True), flusher,
                        args.reps)
                    row["fused_dispatch"] = kernels.fuses(tokens)
                if dispatch and kernels.fuses(tokens):
                    row["moegen_route_then_dispatch"] = time_calls(
                        lambda: kernels.call(tensors, tokens, True,
                                             pair=True), flusher, args.reps)
                row["eager"] = time_calls(lambda: eager(logits, bias, *extra),
                                          flusher, args.reps)
                row["compile"] = time_calls(
                    lambda: compiled(logits, bias, *extra), flusher, args.reps)
                graph, why = graphed(lambda: kernels.call(tensors, tokens,
                                                          dispatch))
                row["graph_moegen"] = (time_calls(graph.replay, flusher,
                                                  args.reps)
                                       if graph else {"error": why})
                graph, why = graphed(lambda: eager(logits, bias, *extra))
                row["graph_eager"] = (time_calls(graph.replay, flusher,
                                                 args.reps)
                                      if graph else {"error": why})
                if tokens <= args.graph_parts_up_to:
                    try:
                        row["graph_parts"] = graph_parts(
                            kernels, tensors, tokens, dispatch, flusher,
                            args.reps)
                    except Exception as exc:  # noqa: BLE001 - kept in the row
                        row["graph_parts"] = {"error": str(exc)}
                moved = tokens * e * 4 + tokens * k * 8
                floor_us = moved / (bandwidth * 1e9) * 1e6
                row["bytes_moved"] = moved
                row["roofline_us"] = floor_us
                results["rows"].append(row)
                # Rewritten after every row: a run stopped midway keeps what it
                # measured.
                save(results, args.out)

                def cell(key):
                    value = row.get(key, {})
                    return ("%.2f" % value["median_us"] if "median_us" in value
                            else "-")
                print("%8d %12s %12s %12s %12s %14s %14s %6.0f%%" % (
                    tokens, cell("moegen_route"),
                    cell("moegen_route_dispatch"),
                    cell("eager"), cell("compile"), cell("graph_moegen"),
                    cell("graph_eager"),
                    100 * floor_us / row["moegen_route"]["median_us"]))
            except Exception as exc:  # noqa: BLE001 - the run goes on
                # A failed launch or peer: this T is reported and the
                # others still run (a sticky CUDA error fails them too).
                # (Not `e`: that is the number of experts.)
                first = str(exc).splitlines()[0] if str(exc) else ""
                fail(results, spec["name"], tokens,
                     "%s: %s" % (type(exc).__name__, first))
                failed = True
                save(results, args.out)
    print_graph_parts(results["rows"])
    print("\nmedian us per call, cold L2 (256 MiB written between calls), "
          "%d reps after 10 warm-up; %% roof = the copy-bandwidth time of the "
          "logits in and ids + weights out over moegen route's time" %
          args.reps)
    results["complete"] = True
    save(results, args.out)
    return 1 if failed else 0


def print_graph_parts(rows):
    """One table of every row's graph parts."""
    columns = ["tiny_kernel", "route", "memset_route", "route_dispatch",
               "memset_route_dispatch", "route_then_dispatch",
               "route_dispatch_plain"]
    rows = [r for r in rows if "graph_parts" in r]
    if not rows:
        return
    print("\nCUDA graph replays, median us, cold L2: a one-element kernel, "
          "and the call with parts left out")
    print("%-24s %8s %8s %8s %10s %10s %12s %12s %12s" % (
        "spec", "T", "tiny", "route", "memset+rt", "route+disp",
        "memset+both", "two kernels", "plain disp"))
    for r in rows:
        cells = []
        for c in columns:
            v = r["graph_parts"].get(c)
            cells.append("%.2f" % v if isinstance(v, float) else "-")
        print("%-24s %8d %8s %8s %10s %10s %12s %12s %12s" % (
            r["spec"][:24], r["tokens"], *cells))


def fail(results, spec, tokens, problem):
    print("T=%d: %s" % (tokens, problem))
    results["failures"].append({"spec": spec, "tokens": tokens,
                                "problem": problem})


def save(results, directory):
    """DIR/bench-peers.json, replaced whole (never left half-written)."""
    if not directory:
        return
    path = os.path.join(directory, "bench-peers.json")
    with open(path + ".tmp", "w") as f:
        json.dump(results, f, indent=1)
    os.replace(path + ".tmp", path)


def _triton_version():
    try:
        import triton
        return triton.__version__
    except ImportError:
        return "absent"


if __name__ == "__main__":
    sys.exit(main())
