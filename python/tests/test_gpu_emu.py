"""The CUDA launch path of the package (python/src/Module.cpp's device
branch: device pointers, entry selection, the error record) run where no
GPU is: backend "gpu-emu" launches the NVPTX kernels through the runtime's
CudaRouter on the host's GPU emulator, over CPU tensors. Checked against
the CPU backend and the plain-torch reference."""

import pytest
import torch

import moegen
import moegen.ops
from reference import dispatch as reference_dispatch
from reference import route as reference

pytestmark = pytest.mark.skipif(not moegen.has_cuda, reason="built without the CUDA runtime")

DSV3 = dict(k=8, scoring="sigmoid", groups=8, keep=4, normalize=True, scale=2.5)


@pytest.fixture(scope="module")
def dsv3(template):
    return moegen.Router(template("deepseek-v3"), backend="gpu-emu")


@pytest.fixture(scope="module")
def template():
    from conftest import REPO

    return lambda name: str(REPO / "templates" / f"{name}.yaml")


@pytest.mark.parametrize("t", [0, 1, 37])
def test_route_dispatch_replay_capture(dsv3, t):
    torch.manual_seed(t)
    logits, bias = torch.randn(t, 256), torch.randn(256) * 0.1
    out = dsv3.route(logits, bias)
    ids, weights = reference(logits, bias, **DSV3)
    assert torch.equal(out.topk_ids, ids)
    torch.testing.assert_close(out.topk_weights, weights, rtol=1e-5, atol=1e-6)
    for name, want in zip(moegen.Dispatch._fields, reference_dispatch(ids, 256)):
        assert torch.equal(getattr(out, name), want), name
    again = dsv3.replay(logits, out.topk_ids)
    assert torch.equal(again.topk_ids, ids) and torch.equal(again.topk_weights, out.topk_weights)
    alone = dsv3.dispatch(out.topk_ids)
    for name in moegen.Dispatch._fields:
        assert torch.equal(getattr(alone, name), getattr(out, name)), name
    capture = torch.full((t, 3, 8), -1, dtype=torch.int16)
    dsv3.route(logits, bias, capture=capture, layer=2)
    assert torch.equal(capture[:, 2].int(), ids) and (capture[:, :2] == -1).all()


def test_errors_come_from_the_kernels_error_record(dsv3):
    logits, bias = torch.randn(5, 256), torch.zeros(256)
    bad = torch.full((5, 8), 999, dtype=torch.int32)
    with pytest.raises(moegen.InputError, match=r"forced_ids\[0\]\[0\] = 999: expert id outside \[0, 256\)"):
        dsv3.replay(logits, bad)
    dsv3.replay(logits, bad, check=False)  # recorded, not raised
    with pytest.raises(moegen.InputError, match=r"forced_ids\[0\]\[0\] = 999"):
        dsv3.check_errors()
    nan = logits.clone()
    nan[3, 7] = float("nan")
    with pytest.raises(moegen.InputError, match=r"logits\[3\]\[7\] is nan"):
        dsv3.route(nan, bias)
    dsv3.check_errors()  # reported: the record is clear again
    # Unchecked calls: an error stays in the record through the valid calls
    # after it, until check_errors() reports it (no call clears it).
    dsv3.route(nan, bias, check=False)
    dsv3.route(logits, bias, check=False)
    dsv3.replay(logits, torch.zeros(5, 8, dtype=torch.int32) + torch.arange(8, dtype=torch.int32),
                check=False)
    with pytest.raises(moegen.InputError, match=r"logits\[3\]\[7\] is nan"):
        dsv3.check_errors()
    dsv3.check_errors()
    dsv3.route(logits, bias)


def test_hash_and_bf16_specs_match_the_cpu_backend(template):
    torch.manual_seed(9)
    hashed = template("deepseek-v4-flash-hash")
    table = torch.stack([torch.randperm(256)[:6] for _ in range(40)]).int()
    tokens = torch.randint(0, 40, (11,), dtype=torch.int32)
    logits = torch.randn(11, 256)
    cpu = moegen.Router(hashed).route(logits, token_ids=tokens, hash_table=table)
    emu = moegen.Router(hashed, backend="gpu-emu").route(logits, token_ids=tokens, hash_table=table)
    for name in moegen.Routing._fields:
        a, b = getattr(emu, name), getattr(cpu, name)
        if name == "shared_gate":  # the spec has none
            assert a is None and b is None
            continue
        assert torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-6), name
    qwen = template("qwen3-30b-a3b")  # bf16 logits
    x = torch.randn(9, 128).bfloat16()
    cpu, emu = moegen.Router(qwen).route(x), moegen.Router(qwen, backend="gpu-emu").route(x)
    assert torch.equal(emu.topk_ids, cpu.topk_ids)
    torch.testing.assert_close(emu.topk_weights, cpu.topk_weights, rtol=1e-5, atol=1e-6)


def test_the_op_on_the_emulated_backend(dsv3):
    key = moegen.ops.register(dsv3)
    x, bias = torch.randn(6, 256), torch.randn(256) * 0.1
    ids, weights = torch.compile(lambda a, b: torch.ops.moegen.route(a, b, None, None, None, key),
                                 fullgraph=True)(x, bias)
    want = reference(x, bias, **DSV3)
    assert torch.equal(ids, want[0])
    torch.testing.assert_close(weights, want[1], rtol=1e-5, atol=1e-6)


def test_permute_and_combine_on_the_emulated_gpu():
    from test_router import PERMUTE_SPEC, permute_and_combine

    spec = dict(PERMUTE_SPEC, hidden_dtype="bf16", hidden_size=64)
    emulated = moegen.Router(spec, backend="gpu-emu")
    permute_and_combine(emulated, torch.bfloat16)
    # and bit for bit as the CPU backend
    cpu = moegen.Router(spec)
    out = cpu.route(torch.randn(5, 16))
    hidden = torch.randn(5, 64).bfloat16()
    rows = torch.randn(20, 64).bfloat16()
    assert torch.equal(emulated.permute(hidden, out.sorted_slots), cpu.permute(hidden, out.sorted_slots))
    assert torch.equal(emulated.combine(rows, out.topk_weights, out.slot_positions),
                       cpu.combine(rows, out.topk_weights, out.slot_positions))


def test_shared_expert_gate_matches_the_cpu_backend(template):
    qwen2 = template("qwen2-57b-a14b")
    torch.manual_seed(12)
    x, g = torch.randn(13, 64).bfloat16(), (torch.randn(13, 1) * 5).bfloat16()
    cpu = moegen.Router(qwen2).route(x, shared_gate_logits=g)
    emu = moegen.Router(qwen2, backend="gpu-emu").route(x, shared_gate_logits=g)
    assert torch.equal(emu.topk_ids, cpu.topk_ids)
    # the GPU's sigmoid uses ex2.approx and rcp.approx
    torch.testing.assert_close(emu.shared_gate, cpu.shared_gate, rtol=1e-5, atol=0)
