"""The GPU benchmark's peers (tests/gpu/bench_routing.py) on the CPU: each
bench spec's eager twin, as the benchmark picks it from the spec, gives the
same picks and weights as moegen's CPU backend on the same inputs, by the
benchmark's own comparison, and the dispatch check accepts moegen's
metadata. So a difference found on a GPU is the GPU kernels', not a peer's
or the checker's."""

import pathlib
import re
import sys

import pytest
import torch

import moegen

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tests" / "gpu"))
import bench_routing  # noqa: E402

# The specs tests/gpu/prepare-device-carry.sh compiles for the benchmark.
BENCH_TEMPLATES = ["deepseek-v3", "qwen3-30b-a3b", "kimi-k2", "deepseek-v4-flash",
                   "deepseek-v4-flash-hash", "expert-choice-64"]


def bench_spec(template_path, directory):
    """The template as prepare-device-carry.sh rewrites it for the
    benchmark (f32 logits, no capture or replay), as DIR/spec.yaml."""
    text = pathlib.Path(template_path).read_text()
    lines = [line for line in text.splitlines()
             if not re.match(r"(capture|replay):", line)]
    lines = [("logits_dtype: f32" if line.startswith("logits_dtype:") else line)
             for line in lines]
    if not any(line.startswith("logits_dtype:") for line in lines):
        lines.append("logits_dtype: f32")
    directory.mkdir()
    (directory / "spec.yaml").write_text("\n".join(lines) + "\n")
    return directory


@pytest.mark.parametrize("name", BENCH_TEMPLATES)
@pytest.mark.parametrize("tokens", [1, 37, 512])
def test_peer_matches_moegen_on_the_cpu(template, tmp_path, name, tokens):
    directory = bench_spec(template(name), tmp_path / name)
    spec = bench_routing.load_spec(directory)
    choice = bench_routing.expert_choice_facts(directory)
    if choice:
        spec["expert_choice"] = choice
        spec["top_k"] = choice[0]
    peer = bench_routing.peer_for(spec)
    assert peer is not None, "the benchmark has no peer for " + name
    _, eager = peer
    router = moegen.Router(str(directory / "spec.yaml"))
    e, k = router.num_experts, router.top_k
    assert (spec["num_experts"], spec["top_k"]) == (e, k)

    # The benchmark's inputs, drawn the same way on the CPU.
    gen = torch.Generator().manual_seed(tokens)
    logits = 2.0 * torch.randn(tokens, e, generator=gen)
    bias = 0.01 * torch.randn(e, generator=gen)
    extra, kwargs = (), {}
    if spec.get("selection") == "hash":
        token_ids, table = bench_routing.hash_inputs(tokens, e, k, "cpu", gen)
        extra = (token_ids.long(), table.long())
        kwargs = dict(token_ids=token_ids, hash_table=table)
    out = router.route(logits, bias if router.facts.get("score_bias") else None,
                       **kwargs)
    peer_ids, peer_weights = eager(logits, bias, *extra)
    assert bench_routing.compare(out.topk_ids, out.topk_weights, peer_ids,
                                 peer_weights) == ""
    if out.expert_counts is not None:
        tensors = {"topk_ids": out.topk_ids, "expert_counts": out.expert_counts,
                   "expert_offsets": out.expert_offsets,
                   "sorted_slots": out.sorted_slots}
        assert bench_routing.check_dispatch(tensors, tokens, e) == ""


def test_the_checks_can_fail():
    """compare and check_dispatch name what differs."""
    ids = torch.tensor([[0, 1], [2, 3]], dtype=torch.int32)
    weights = torch.tensor([[0.5, 0.5], [0.25, 0.75]])
    assert bench_routing.compare(ids, weights, ids.flip(1), weights.flip(1)) == ""
    assert "weights differ" in bench_routing.compare(
        ids, weights, ids, weights + torch.tensor([[0.0, 1e-3], [0.0, 0.0]]))
    # One token of a thousand may differ (fp32 near-ties), at least one.
    other = torch.tensor([[0, 1], [2, 4]], dtype=torch.int32)
    assert bench_routing.compare(other, weights, ids, weights) == ""
    other = torch.tensor([[0, 4], [2, 4]], dtype=torch.int32)
    assert bench_routing.compare(other, weights, ids, weights) == \
        "2 of 2 tokens pick other experts"
    tensors = {"topk_ids": ids, "expert_counts": torch.tensor([1, 1, 1, 1, 0]),
               "expert_offsets": torch.tensor([0, 1, 2, 3, 4, 4]),
               "sorted_slots": torch.tensor([0, 1, 2, 3])}
    assert bench_routing.check_dispatch(tensors, 2, 5) == ""
    tensors["sorted_slots"] = torch.tensor([0, 2, 1, 3])
    assert bench_routing.check_dispatch(tensors, 2, 5) == "sorted_slots differ"


def test_graph_parts_leave_out_what_they_say(monkeypatch, capsys):
    """graph_parts captures the call with the memset and the dispatch left
    out in turn (the graphs and timers stood in for: no GPU here)."""
    calls = []

    class Kernels:
        def call(self, tensors, tokens, dispatch, zero_record=False,
                 plain_one_block=False, pair=False):
            calls.append((tokens, dispatch, zero_record, plain_one_block,
                          pair))

    class Graph:
        def __init__(self, fn):
            self.replay = fn

    monkeypatch.setattr(bench_routing, "graphed", lambda fn: (Graph(fn), ""))
    monkeypatch.setattr(bench_routing, "time_calls",
                        lambda fn, flusher, reps: (fn(), {"median_us": 1.5})[1])
    tensors = {"error": torch.zeros(6, dtype=torch.int64)}
    parts = bench_routing.graph_parts(Kernels(), tensors, 64, True, None, 50)
    assert list(parts) == ["tiny_kernel", "route", "memset_route",
                           "route_dispatch", "memset_route_dispatch",
                           "route_then_dispatch", "route_dispatch_plain"]
    assert calls == [(64, False, False, False, False),
                     (64, False, True, False, False),
                     (64, True, False, False, False),
                     (64, True, True, False, False),
                     (64, True, False, False, True),
                     (64, True, False, True, True)]
    calls.clear()
    assert list(bench_routing.graph_parts(Kernels(), tensors, 8, False, None,
                                          50)) == ["tiny_kernel", "route",
                                                   "memset_route"]
    bench_routing.print_graph_parts([
        {"spec": "deepseek_v3", "tokens": 64, "graph_parts": parts},
        {"spec": "qwen3", "tokens": 8, "graph_parts": {"error": "no graph"}},
        {"spec": "kimi_k2", "tokens": 65536}])
    out = capsys.readouterr().out.splitlines()
    assert out[-2].split() == ["deepseek_v3", "64", "1.50", "1.50", "1.50",
                               "1.50", "1.50", "1.50", "1.50"]
    assert out[-1].split() == ["qwen3", "8", "-", "-", "-", "-", "-", "-",
                               "-"]


def test_calls_fuse_the_dispatch_as_the_runtime_does(template, tmp_path):
    """The benchmark launches what the runtime would: a bench spec's
    manifest (compiled here for sm_90) gives a route with a fused dispatch
    beside the plain one, and a call fuses up to its slots (2,048: T = 256
    at k = 8), never for T = 0 or without dispatch outputs."""
    import json
    import subprocess

    from conftest import BIN

    directory = bench_spec(template("deepseek-v3"), tmp_path / "ds3")
    out = tmp_path / "kernels"
    subprocess.run([str(BIN / "moegen"), "compile", str(directory / "spec.yaml"),
                    "--emit=ptx", "--arch", "sm_90", "-o", str(out)], check=True)
    manifest = json.loads((out / "manifest.json").read_text())
    keys = [bench_routing.kernel_key(k) for k in manifest["kernels"]]
    assert keys == ["route", "route+dispatch", "dispatch"]
    assert bench_routing.kernel_key({"entry": "route", "min_tokens": 64}) is None

    launched = []

    class Stub(bench_routing.MoegenKernels):
        def __init__(self):  # no CUDA: the manifest alone
            self.manifest = manifest
            self.kernels = {key: (k, None)
                            for key, k in zip(keys, manifest["kernels"])}

        def launch(self, entry, tensors, tokens, plain_one_block=False):
            launched.append(entry)

    kernels = Stub()
    assert kernels.fuses(1) and kernels.fuses(256)
    assert not kernels.fuses(0) and not kernels.fuses(257)
    for tokens, dispatch, pair in [(256, True, False), (257, True, False),
                                   (64, True, True), (64, False, False)]:
        launched.clear()
        kernels.call({}, tokens, dispatch, pair=pair)
        want = (["route+dispatch"] if dispatch and not pair and tokens <= 256
                else ["route", "dispatch"] if dispatch else ["route"])
        assert launched == want, (tokens, dispatch, pair)
