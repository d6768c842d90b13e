"""The torch custom op: eager, fake tensors, torch.compile, CUDA graphs."""

import pytest
import torch

import moegen
import moegen.ops


def test_op_under_torch_compile_equals_eager(template):
    router = moegen.Router(template("deepseek-v3"))
    key = moegen.ops.register(router)

    def layer(x, bias):
        ids, weights = torch.ops.moegen.route(x, bias, None, None, None, key)
        return ids.long() + 1, weights * 2

    torch.manual_seed(5)
    x, bias = torch.randn(11, 256), torch.randn(256) * 0.1
    compiled = torch.compile(layer, fullgraph=True)
    got, want = compiled(x, bias), layer(x, bias)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    ref = router.route(x, bias)
    assert torch.equal(want[0], ref.topk_ids.long() + 1)


def test_gated_op_under_torch_compile(template):
    router = moegen.Router(template("qwen2-57b-a14b"))
    key = moegen.ops.register(router)

    def layer(x, g):
        ids, weights, gate = torch.ops.moegen.route_gated(x, None, None, None, None, g, key)
        return ids, weights, gate * 2

    torch.manual_seed(6)
    x, g = torch.randn(9, 64).bfloat16(), torch.randn(9, 1).bfloat16()
    got = torch.compile(layer, fullgraph=True)(x, g)
    ref = router.route(x, shared_gate_logits=g)
    assert torch.equal(got[0], ref.topk_ids) and torch.equal(got[1], ref.topk_weights)
    assert torch.equal(got[2], ref.shared_gate * 2)
    # replay through the op: the same gate
    again = torch.ops.moegen.route_gated(x, None, None, None, ref.topk_ids, g, key)
    assert torch.equal(again[2], ref.shared_gate)


def test_fake_shapes():
    router = moegen.Router({"name": "f", "num_experts": 16, "top_k": 3, "scoring": "softmax"})
    key = moegen.ops.register(router)
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        ids, w = torch.ops.moegen.route(torch.empty(7, 16), None, None, None, None, key)
    assert ids.shape == (7, 3) and ids.dtype == torch.int32
    assert w.shape == (7, 3) and w.dtype == torch.float32


def test_unknown_key():
    with pytest.raises(moegen.InputError, match="not registered"):
        torch.ops.moegen.route(torch.randn(2, 8), None, None, None, None, "nope")


@pytest.mark.skipif(not torch.cuda.is_available() or not moegen.has_cuda, reason="needs a CUDA device")
def test_op_in_a_cuda_graph(template):
    router = moegen.Router(template("deepseek-v3"), backend="cuda")
    key = moegen.ops.register(router)
    x = torch.randn(64, 256, device="cuda")
    bias = torch.zeros(256, device="cuda")
    torch.ops.moegen.route(x, bias, None, None, None, key)  # warm up outside capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        ids, weights = torch.ops.moegen.route(x, bias, None, None, None, key)
    x.copy_(torch.randn(64, 256, device="cuda"))
    graph.replay()
    torch.cuda.synchronize()
    ref = router.route(x, bias)
    assert torch.equal(ids, ref.topk_ids)
    router.check_errors()
