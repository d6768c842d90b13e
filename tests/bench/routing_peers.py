#!/usr/bin/env python3
"""moegen's CPU routing beside PyTorch eager and torch.compile, same run.

For each template (fp32 logits; routing, no capture or replay), computes the
routing as Hugging Face transformers writes it in PyTorch, checks moegen's
outputs (`moegen run`) and torch.compile's against it on the same logits
(ids equal but for rare fp32 near-ties, weights within 1e-5), then times
all three: moegen with `moegen bench`, PyTorch in this process, each the
median of --reps samples after warm-up. Prints a table with the speed-ups
and, with --json, writes one file per implementation in `moegen bench
--json`'s schema, which tests/bench/plot_bench.py draws.

    python3 tests/bench/routing_peers.py --bin build/bin
        [--templates deepseek-v3,qwen3-30b-a3b] [--tokens 1,64,4096,65536]
        [--reps 9] [--threads N] [--json-dir DIR]

Needs torch and numpy (pip install torch numpy). Not a test: timings are
not tests (docs/benchmarks.md holds the figures, with machine and commit).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def spec_facts(text):
    facts = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if ":" in line:
            key, value = (part.strip() for part in line.split(":", 1))
            facts[key] = value
    return facts


def eager_router(facts, torch):
    """The routing function of a spec as transformers writes it."""
    e, k = int(facts["num_experts"]), int(facts["top_k"])
    scoring = facts["scoring"]
    normalize = facts.get("normalize") == "true"
    scale = float(facts.get("scaling_factor", "1"))
    groups = int(facts.get("groups", "1"))
    keep = int(facts.get("topk_groups", "1"))
    F = torch.nn.functional

    if scoring == "softmax" and facts.get("score_bias") != "true":
        # Qwen3-MoE, Mixtral, OLMoE: softmax in fp32, top-k, renormalize.
        def route(logits, bias, token_ids=None, table=None):
            weights = F.softmax(logits, dim=1, dtype=torch.float)
            weights, ids = torch.topk(weights, k, dim=-1)
            if normalize:
                weights = weights / weights.sum(dim=-1, keepdim=True)
            return ids, weights * scale
        return "Qwen3MoeSparseMoeBlock", route

    if facts.get("selection") == "hash":
        # DeepSeek-V4's hash layers: the experts are a table's row for the
        # token id; the scores only weigh them.
        def route(logits, bias, token_ids, table):
            if scoring == "sigmoid":
                scores = logits.sigmoid()
            elif scoring == "sqrtsoftplus":
                scores = F.softplus(logits).sqrt()
            else:
                scores = F.softmax(logits, dim=1, dtype=torch.float)
            ids = table[token_ids]
            weights = scores.gather(1, ids)
            if normalize:
                weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
            return ids, weights * scale
        return "DeepSeek-V4 hash gate", route
    if scoring in ("sigmoid", "sqrtsoftplus"):
        # DeepseekV3TopkRouter / Kimi-K2 (one group) / DeepSeek-V4.
        def route(logits, bias, token_ids=None, table=None):
            if scoring == "sigmoid":
                scores = logits.sigmoid()
            else:
                scores = F.softplus(logits).sqrt()
            choice = scores + bias if bias is not None else scores
            if groups > 1:
                group_scores = (choice.view(-1, groups, e // groups)
                                .topk(2, dim=-1)[0].sum(dim=-1))
                group_idx = torch.topk(group_scores, k=keep, dim=-1,
                                       sorted=False)[1]
                group_mask = torch.zeros_like(group_scores)
                group_mask.scatter_(1, group_idx, 1)
                score_mask = (group_mask.unsqueeze(-1)
                              .expand(-1, groups, e // groups).reshape(-1, e))
                choice = choice.masked_fill(~score_mask.bool(), 0.0)
            ids = torch.topk(choice, k=k, dim=-1, sorted=True)[1]
            weights = scores.gather(1, ids)
            if normalize:
                weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
            return ids, weights * scale
        return "DeepseekV3TopkRouter", route
    return None, None


def median_seconds(fn, reps, min_sample=0.01):
    fn()
    fn()
    samples = []
    for _ in range(reps):
        calls, start = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_sample:
                break
        samples.append(elapsed / calls)
    samples.sort()
    return samples[len(samples) // 2], samples[len(samples) // 10], \
        samples[(len(samples) * 9) // 10]


def compare(ids, weights, ref_ids, ref_weights):
    """None when equal up to fp32 near-ties, else what differs."""
    same = (ids == ref_ids).all(dim=1)
    ties = int((~same).sum())
    if ties > max(1, ids.shape[0] // 1000):
        return "%d of %d tokens select other experts" % (ties, ids.shape[0])
    if same.any():
        diff = (weights[same] - ref_weights[same]).abs().max().item()
        if diff > 1e-5:
            return "weights differ by %.3g" % diff
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", required=True, help="the build's bin/")
    parser.add_argument("--templates",
                        default="deepseek-v3,qwen3-30b-a3b,kimi-k2,"
                                "deepseek-v4-flash,mixtral-8x7b")
    parser.add_argument("--tokens", default="1,64,4096,65536")
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json-dir", help="write moegen.json, eager.json and "
                        "compile.json here")
    args = parser.parse_args()
    try:
        import numpy as np
        import torch
    except ImportError:
        sys.exit("routing_peers.py: needs torch and numpy "
                 "(pip install torch numpy)")
    threads = args.threads or os.cpu_count()
    torch.set_num_threads(threads)
    tokens = [int(t) for t in args.tokens.split(",")]
    moegen = os.path.join(args.bin, "moegen")
    peers = {"eager": [], "compile": []}
    moegen_rows = []
    report = None
    with tempfile.TemporaryDirectory() as work:
        for template in args.templates.split(","):
            with open(os.path.join(ROOT, "templates", template + ".yaml")) as f:
                text = f.read()
            facts = spec_facts(text)
            name, eager = eager_router(facts, torch)
            if eager is None:
                print("%s: no eager peer, skipped" % template)
                continue
            # fp32 logits, routing and dispatch only, as the peers compute.
            spec = os.path.join(work, template + ".yaml")
            with open(spec, "w") as f:
                for line in text.splitlines():
                    if not line.startswith(("logits_dtype:", "capture:",
                                            "replay:")):
                        f.write(line + "\n")
                f.write("logits_dtype: f32\n")
            compiled = torch.compile(eager)
            e, k = int(facts["num_experts"]), int(facts["top_k"])
            gen = torch.Generator().manual_seed(7)
            bias = (0.01 * torch.randn(e, generator=gen)
                    if facts.get("score_bias") == "true" else None)
            bench_json = os.path.join(work, template + ".json")
            subprocess.run([moegen, "bench", spec, "--tokens", args.tokens,
                            "--reps", str(args.reps), "--threads",
                            str(threads), "--json", bench_json, "--copy-mib",
                            "256"], check=True, stdout=subprocess.DEVNULL)
            with open(bench_json) as f:
                report = json.load(f)
            print("\n%s (E %d, k %s) vs transformers' %s, %d threads" %
                  (template, e, facts["top_k"], name, threads))
            print("%8s %12s %12s %12s %9s %9s" % ("T", "moegen us", "eager us",
                                                  "compile us", "x eager",
                                                  "x compile"))
            for row in report["results"]:
                t = row["tokens"]
                logits = 2.0 * torch.randn(t, e, generator=gen)
                # Equal results first: moegen on the same logits.
                np.save(os.path.join(work, "logits.npy"), logits.numpy())
                command = [moegen, "run", spec, "--backend", "cpu", "--in",
                           "logits=" + os.path.join(work, "logits.npy"),
                           "--out", os.path.join(work, "out")]
                if bias is not None:
                    np.save(os.path.join(work, "bias.npy"), bias.numpy())
                    command += ["--in", "bias=" + os.path.join(work, "bias.npy")]
                hashed = ()
                if facts.get("selection") == "hash":
                    # A vocabulary of 4096 ids, each row k distinct experts.
                    vocab = 4096
                    table = torch.stack([torch.randperm(e, generator=gen)[:k]
                                         for _ in range(vocab)]).int()
                    token_ids = torch.randint(vocab, (t,), generator=gen,
                                              dtype=torch.int32)
                    np.save(os.path.join(work, "token_ids.npy"), token_ids.numpy())
                    np.save(os.path.join(work, "table.npy"), table.numpy())
                    command += ["--in", "token_ids=" + os.path.join(work, "token_ids.npy"),
                                "--in", "hash_table=" + os.path.join(work, "table.npy")]
                    hashed = (token_ids.long(), table.long())
                subprocess.run(command, check=True)
                ids = torch.from_numpy(np.load(os.path.join(work, "out", "topk_ids.npy")))
                weights = torch.from_numpy(np.load(os.path.join(work, "out", "topk_weights.npy")))
                ref_ids, ref_weights = eager(logits, bias, *hashed)
                problem = compare(ids.long(), weights, ref_ids, ref_weights)
                c_ids, c_weights = compiled(logits, bias, *hashed)
                problem = problem or compare(c_ids, c_weights, ref_ids, ref_weights)
                if problem:
                    sys.exit("%s T=%d: results differ: %s" % (template, t, problem))
                eager_t = median_seconds(lambda: eager(logits, bias, *hashed), args.reps)
                compile_t = median_seconds(lambda: compiled(logits, bias, *hashed), args.reps)
                m = row["median_us"]
                print("%8d %12.1f %12.1f %12.1f %8.1fx %8.1fx" % (
                    t, m, eager_t[0] * 1e6, compile_t[0] * 1e6,
                    eager_t[0] * 1e6 / m, compile_t[0] * 1e6 / m))
                moegen_rows.append(row)
                for impl, timing in (("eager", eager_t), ("compile", compile_t)):
                    peers[impl].append(dict(
                        row, median_us=timing[0] * 1e6, p10_us=timing[1] * 1e6,
                        p90_us=timing[2] * 1e6, tokens_per_s=t / timing[0],
                        gbs=row["bytes"] / timing[0] / 1e9,
                        copy_fraction=row["bytes"] / timing[0] / 1e9 /
                        report["copy_bandwidth_gbs"]))
    if args.json_dir and report:
        os.makedirs(args.json_dir, exist_ok=True)
        for impl, rows in (("moegen", moegen_rows), ("eager", peers["eager"]),
                           ("compile", peers["compile"])):
            out = dict(report, results=rows,
                       implementation={"moegen": "moegen",
                                       "eager": "torch eager",
                                       "compile": "torch.compile"}[impl],
                       torch=torch.__version__)
            with open(os.path.join(args.json_dir, impl + ".json"), "w") as f:
                json.dump(out, f, indent=2)
        print("\nwrote %s/{moegen,eager,compile}.json" % args.json_dir)


if __name__ == "__main__":
    main()
