"""The Python package on a GPU: the runtime-only build (python/runtime-only/,
no compiler) loads DeepSeek-V3's kernels compiled on a machine with the
compiler and runs them on CUDA tensors, checked against the plain-torch
reference of docs/semantics.md (python/tests/reference.py).

    PYTHONPATH=BUILD_DIR MOEGEN_TEST_KERNEL_DIR=gpu-carry/deepseek-v3 \\
      python3 -m pytest -q tests/gpu/test_python_cuda.py

Run by tests/gpu/run-on-device.sh, which builds the package first. Prints
the Python path's time per call next to the kernels' own (bench.txt).
"""

import os
import pathlib
import sys

import pytest
import torch

import moegen
import moegen.ops

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "python" / "tests"))
import reference  # noqa: E402

KERNELS = os.environ.get("MOEGEN_TEST_KERNEL_DIR", "gpu-carry/deepseek-v3")
SPEC = dict(k=8, scoring="sigmoid", groups=8, keep=4, normalize=True, scale=2.5)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def router():
    return moegen.Router.load(KERNELS)


def inputs(t, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    logits = torch.randn(t, 256, device="cuda", generator=g)
    bias = torch.randn(256, device="cuda", generator=g) * 0.1
    return logits, bias


def test_facts(router):
    assert (router.num_experts, router.top_k, router.backend) == (256, 8, "cuda")
    assert router.facts["dispatch"] and router.facts["replay"] and router.facts["capture"]


@pytest.mark.parametrize("t", [0, 1, 37, 4096])
def test_route_on_a_side_stream_matches_the_reference(router, t):
    logits, bias = inputs(t, seed=t)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        # The logits are written on the side stream after a delay: a route
        # launched on any other stream would read them before they are.
        final = logits.clone()
        logits.zero_()
        torch.cuda._sleep(50_000_000)
        logits.copy_(final)
        out = router.route(logits, bias, check=False)
    stream.synchronize()
    router.check_errors()
    ids, weights = reference.route(logits, bias, **SPEC)
    assert out.topk_ids.is_cuda and out.topk_ids.dtype == torch.int32
    assert torch.equal(out.topk_ids, ids)
    torch.testing.assert_close(out.topk_weights, weights, rtol=1e-5, atol=1e-6)
    for name, want in zip(moegen.Dispatch._fields, reference.dispatch(ids, 256)):
        assert torch.equal(getattr(out, name), want), name


def test_replay_dispatch_and_capture(router):
    logits, bias = inputs(300, seed=1)
    out = router.route(logits, bias)
    again = router.replay(logits * 0.5, out.topk_ids)
    _, weights = reference.route(logits * 0.5, **SPEC, forced=out.topk_ids)
    assert torch.equal(again.topk_ids, out.topk_ids)
    torch.testing.assert_close(again.topk_weights, weights, rtol=1e-5, atol=1e-6)
    alone = router.dispatch(out.topk_ids)
    for name in moegen.Dispatch._fields:
        assert torch.equal(getattr(alone, name), getattr(out, name)), name
    capture = torch.full((300, 4, 8), -1, dtype=torch.int16, device="cuda")
    router.route(logits, bias, capture=capture, layer=2)
    assert torch.equal(capture[:, 2].int(), out.topk_ids)


def test_bad_input_raises_one_line(router):
    logits, bias = inputs(16, seed=2)
    bad = torch.full((16, 8), 999, dtype=torch.int32, device="cuda")
    with pytest.raises(moegen.InputError, match=r"forced_ids\[0\]\[0\] = 999: expert id outside \[0, 256\)"):
        router.replay(logits, bad)
    with pytest.raises(moegen.InputError, match="logits: on cpu, but this router runs on the cuda backend"):
        router.route(logits.cpu(), bias)
    # unchecked calls keep the error record for check_errors()
    router.replay(logits, bad, check=False)
    with pytest.raises(moegen.InputError, match="forced_ids"):
        router.check_errors()
    router.route(logits, bias)  # the router is usable afterwards


def test_op_under_torch_compile_and_in_a_cuda_graph(router):
    key = moegen.ops.register(router)
    logits, bias = inputs(512, seed=3)

    def layer(x, b):
        ids, w = torch.ops.moegen.route(x, b, None, None, None, key)
        return ids, w * 2

    got = torch.compile(layer, fullgraph=True)(logits, bias)
    want = router.route(logits, bias)
    assert torch.equal(got[0], want.topk_ids)
    torch.testing.assert_close(got[1], want.topk_weights * 2)

    static_x = logits.clone()
    layer(static_x, bias)  # warm-up outside capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        ids, w = layer(static_x, bias)
    new_logits, _ = inputs(512, seed=4)
    static_x.copy_(new_logits)
    graph.replay()
    torch.cuda.synchronize()
    ref_ids, ref_w = reference.route(new_logits, bias, **SPEC)
    assert torch.equal(ids, ref_ids)
    torch.testing.assert_close(w, ref_w * 2, rtol=1e-5, atol=1e-6)
    router.check_errors()


def test_time_per_call(router):
    """Prints the Python path's time per route call (CUDA events, median of
    100 after warm-up); bench.txt has the kernels' own time."""
    for t in (64, 8192, 65536):
        logits, bias = inputs(t, seed=5)
        for _ in range(10):
            router.route(logits, bias, dispatch=False, check=False)
        times = []
        for _ in range(100):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            router.route(logits, bias, dispatch=False, check=False)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) * 1000)
        times.sort()
        print(f"\npython route T={t}: median {times[50]:.1f} us, p10 {times[10]:.1f}, p90 {times[90]:.1f}")


def test_permute_and_combine_on_the_gpu():
    """DeepSeek-V3 with bf16 hidden rows (the suite's permute case):
    permute is a bit copy into expert order, combine the f32 weighted sum
    rounded once, as on the CPU (python/tests/test_router.py)."""
    kernels = os.environ.get("MOEGEN_TEST_PERMUTE_KERNEL_DIR",
                             "gpu-carry/suite/deepseek-v3-permute-bf16/kernels")
    router = moegen.Router.load(kernels)
    logits, bias = inputs(131, seed=6)
    out = router.route(logits, bias)
    hidden = torch.randn(131, 7168, device="cuda").bfloat16()
    permuted = router.permute(hidden, out.sorted_slots)
    assert torch.equal(permuted, hidden[(out.sorted_slots // 8).long()])
    expert_output = (permuted.float() * 3 - 1).bfloat16()
    combined = router.combine(expert_output, out.topk_weights, out.slot_positions)
    rows = expert_output.float()[out.slot_positions.long()].view(131, 8, 7168)
    want = (out.topk_weights.unsqueeze(-1) * rows).sum(1)
    torch.testing.assert_close(combined.float(), want, rtol=2**-7, atol=1e-5)
    with pytest.raises(moegen.InputError, match=r"sorted_slots\[0\] = 9999: outside the slots"):
        router.permute(hidden, torch.full_like(out.sorted_slots, 9999))
