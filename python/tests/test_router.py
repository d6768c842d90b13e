"""moegen.Router against an independent torch reference, on torch tensors
and NumPy arrays, and its one-line errors."""

import numpy as np
import pytest
import torch

import moegen
from reference import dispatch as reference_dispatch
from reference import route as reference


def test_deepseek_v3_matches_the_reference(template):
    router = moegen.Router(template("deepseek-v3"))
    assert (router.num_experts, router.top_k) == (256, 8)
    torch.manual_seed(1)
    logits, bias = torch.randn(33, 256), torch.randn(256) * 0.1
    out = router.route(logits, bias)
    ids, w = reference(logits, bias, k=8, scoring="sigmoid", groups=8, keep=4,
                       normalize=True, scale=2.5)
    assert torch.equal(out.topk_ids, ids)
    torch.testing.assert_close(out.topk_weights, w, rtol=1e-5, atol=1e-6)
    # replay of the routed ids gives the same weights; dispatch alone the
    # same metadata as route's
    again = router.replay(logits, out.topk_ids)
    assert torch.equal(again.topk_ids, out.topk_ids)
    torch.testing.assert_close(again.topk_weights, out.topk_weights)
    alone = router.dispatch(out.topk_ids)
    for name, want in zip(moegen.Dispatch._fields, reference_dispatch(ids, 256)):
        assert torch.equal(getattr(alone, name), want), name
        assert torch.equal(getattr(out, name), want), name


def test_qwen2_shared_expert_gate(template):
    router = moegen.Router(template("qwen2-57b-a14b"))
    assert router.facts["shared_gate"]
    torch.manual_seed(4)
    logits = torch.randn(21, 64).bfloat16()
    gate_logits = (torch.randn(21, 1) * 4).bfloat16()
    gate_logits[3, 0] = float("-inf")
    out = router.route(logits, shared_gate_logits=gate_logits)
    ids, w = reference(logits.float(), k=8, scoring="softmax")
    assert torch.equal(out.topk_ids, ids)
    torch.testing.assert_close(out.topk_weights, w, rtol=1e-5, atol=1e-6)
    # Qwen2-MoE: F.sigmoid(shared_expert_gate(x)), computed here in f32
    assert out.shared_gate.shape == (21, 1) and out.shared_gate.dtype == torch.float32
    torch.testing.assert_close(out.shared_gate, torch.sigmoid(gate_logits.float()),
                               rtol=1e-6, atol=0)
    assert out.shared_gate[3, 0] == 0
    again = router.replay(logits, out.topk_ids, shared_gate_logits=gate_logits)
    torch.testing.assert_close(again.shared_gate, out.shared_gate, rtol=0, atol=0)
    # NumPy: bf16 as raw bits, as the logits
    bits = lambda x: x.view(torch.int16).numpy().view(np.uint16)  # noqa: E731
    arrays = router.route(bits(logits), shared_gate_logits=bits(gate_logits))
    np.testing.assert_array_equal(arrays.shared_gate, out.shared_gate.numpy())
    # a spec without the gate returns None
    plain = {"name": "plain", "num_experts": 64, "top_k": 8, "scoring": "softmax",
             "logits_dtype": "bf16"}
    assert moegen.Router(plain).route(logits).shared_gate is None


@pytest.mark.parametrize("call, message", [
    (lambda r, x, g: r.route(x), "shared_gate_logits: required by shared_expert_gate"),
    (lambda r, x, g: r.route(x, shared_gate_logits=g[:, :0]),
     "shared_gate_logits: shape (5, 0) must be [T, 1]"),
    (lambda r, x, g: r.route(x, shared_gate_logits=g[:4]),
     "shared_gate_logits: shape (4, 1) must be [T, 1] = [5, 1]"),
    (lambda r, x, g: r.route(x, shared_gate_logits=g.float()),
     "shared_gate_logits: dtype float32"),
    (lambda r, x, g: r.route(x, shared_gate_logits=g.index_fill(0, torch.tensor([2]), float("nan"))),
     "shared_gate_logits[2][0] is nan: shared gate logits must be finite or -inf"),
])
def test_shared_gate_errors(template, call, message):
    router = moegen.Router(template("qwen2-57b-a14b"))
    x, g = torch.randn(5, 64).bfloat16(), torch.randn(5, 1).bfloat16()
    with pytest.raises(moegen.InputError) as error:
        call(router, x, g)
    assert message in str(error.value) and "\n" not in str(error.value)
    plain = moegen.Router({"name": "plain", "num_experts": 64, "top_k": 8,
                           "scoring": "softmax", "logits_dtype": "bf16"})
    with pytest.raises(moegen.InputError, match="the spec has no shared expert gate"):
        plain.route(x, shared_gate_logits=g)


def test_dispatch_metadata_follows_the_semantics():
    router = moegen.Router({"name": "m", "num_experts": 8, "top_k": 2, "scoring": "softmax",
                            "dispatch": True})
    ids = torch.tensor([[3, 0], [1, 3], [3, 0]], dtype=torch.int32)
    # the worked example of docs/semantics.md §10, with E = 8
    d = router.dispatch(ids)
    assert d.expert_counts.tolist() == [2, 1, 0, 3, 0, 0, 0, 0]
    assert d.expert_offsets.tolist() == [0, 2, 3, 3, 6, 6, 6, 6, 6]
    assert d.sorted_slots.tolist() == [1, 5, 2, 0, 3, 4]
    assert d.slot_positions.tolist() == [3, 0, 2, 4, 5, 1]


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_softmax_top_k_on_numpy_and_torch(dtype):
    spec = {"name": "qwen_like", "num_experts": 64, "top_k": 4, "scoring": "softmax",
            "normalize": True, "logits_dtype": dtype}
    router = moegen.Router(spec)
    torch.manual_seed(2)
    logits = torch.randn(17, 64)
    if dtype == "bf16":
        logits = logits.bfloat16()
    out = router.route(logits)
    ids, w = reference(logits.float(), k=4, scoring="softmax", normalize=True)
    assert torch.equal(out.topk_ids, ids)
    torch.testing.assert_close(out.topk_weights, w, rtol=1e-5, atol=1e-6)
    # NumPy in, NumPy out; bf16 as its raw bits (NumPy has no bf16)
    arr = logits.view(torch.int16).numpy().view(np.uint16) if dtype == "bf16" else logits.numpy()
    np_out = router.route(arr)
    assert isinstance(np_out.topk_ids, np.ndarray)
    assert (np_out.topk_ids == ids.numpy()).all()
    assert np.allclose(np_out.topk_weights, out.topk_weights.numpy())


def test_hash_routing_and_capture(template):
    router = moegen.Router(template("deepseek-v4-flash-hash"))
    torch.manual_seed(3)
    vocab, t, k = 50, 9, 6
    table = torch.stack([torch.randperm(256)[:k] for _ in range(vocab)]).int()
    tokens = torch.randint(0, vocab, (t,), dtype=torch.int32)
    logits = torch.randn(t, 256)
    out = router.route(logits, token_ids=tokens, hash_table=table)
    assert torch.equal(out.topk_ids, table[tokens.long()])
    _, w = reference(logits, k=k, scoring="sqrtsoftplus", normalize=True, scale=1.5,
                     forced=table[tokens.long()])
    torch.testing.assert_close(out.topk_weights, w, rtol=1e-5, atol=1e-6)
    # int64 token ids (torch's default) are narrowed
    out64 = router.route(logits, token_ids=tokens.long(), hash_table=table.long())
    assert torch.equal(out64.topk_ids, out.topk_ids)


def test_capture_writes_its_layer(template):
    router = moegen.Router(template("deepseek-v3"))
    logits, bias = torch.randn(5, 256), torch.zeros(256)
    buffer = torch.full((5, 3, 8), -1, dtype=torch.int16)
    out = router.route(logits, bias, capture=buffer, layer=1)
    assert torch.equal(buffer[:, 1].int(), out.topk_ids)
    assert (buffer[:, 0] == -1).all() and (buffer[:, 2] == -1).all()


def test_zero_tokens(template):
    router = moegen.Router(template("deepseek-v3"))
    out = router.route(torch.empty(0, 256), torch.zeros(256))
    assert out.topk_ids.shape == (0, 8) and out.expert_offsets.tolist() == [0] * 257
    # PyTorch's empty tensors have a null data pointer: still replay
    again = router.replay(torch.empty(0, 256), torch.empty(0, 8, dtype=torch.int32))
    assert again.topk_ids.shape == (0, 8) and again.expert_counts.tolist() == [0] * 256
    assert router.dispatch(torch.empty(0, 8, dtype=torch.int32)).expert_offsets.tolist() == [0] * 257


def test_read_only_and_lazy_views(template):
    router = moegen.Router(template("deepseek-v3"))
    torch.manual_seed(6)
    logits, bias = torch.randn(6, 256), torch.randn(256) * 0.1
    want = router.route(logits, bias)
    frozen = logits.numpy().copy()
    frozen.flags.writeable = False
    got = router.route(frozen, bias.numpy())
    assert (got.topk_ids == want.topk_ids.numpy()).all()
    # a negated view (torch's lazy negation) routes the negated values
    negated = router.route((-logits)._neg_view(), bias)
    assert torch.equal(negated.topk_ids, want.topk_ids)
    assert not torch.equal(router.route(-logits, bias).topk_ids, want.topk_ids)


BAD_ARGUMENTS = [
    (lambda r: r.route([[0.0] * 256], np.zeros(256, np.float32)), "logits: expected a tensor (torch.Tensor or numpy.ndarray), got list"),
    (lambda r: r.route(np.zeros((2, 256), ">f4"), np.zeros(256, np.float32)), "logits: dtype '>f4' is not in this machine's byte order"),
    (lambda r: r.route(torch.zeros(2, 256, device="meta"), torch.zeros(256)), "logits: on meta, but moegen runs on cpu or cuda tensors"),
    (lambda r: r.route(torch.zeros(2, 256, dtype=torch.float8_e4m3fn), torch.zeros(256)), "logits: dtype DLPack dtype (code"),
    (lambda r: r.route(torch.zeros(1, 256).expand(10**12, 256), torch.zeros(256)), "logits: must be contiguous"),
    (lambda r: r.route(torch.zeros(2, 256), torch.zeros(256), layer=2**63), "layer: expected an int in [0, 2**63)"),
    (lambda r: r.route(torch.zeros(2, 256), torch.zeros(256), check=0), "check: expected True or False, got 0"),
    (lambda r: r.dispatch([[1, 2]]), "topk_ids: expected a tensor"),
]


@pytest.mark.parametrize("call,message", BAD_ARGUMENTS)
def test_bad_arguments_raise_input_errors(template, call, message):
    router = moegen.Router(template("deepseek-v3"))
    with pytest.raises(moegen.InputError) as info:
        call(router)
    assert message in str(info.value)


BAD_CALLS = [
    (lambda r, x, b: r.route(x), "bias: required by score_bias"),
    (lambda r, x, b: r.route(x[:, :255], b), "logits: shape (4, 255) must be [T, E] = [T, 256]: dimension 1 is 255, not E = 256"),
    (lambda r, x, b: r.route(x.double(), b), "logits: dtype float64 must be float32 (logits_dtype: f32)"),
    (lambda r, x, b: r.route(torch.randn(256, 4).t(), b), "logits: must be contiguous"),
    (lambda r, x, b: r.route(x, b[:3]), "bias: shape (3,) must be [E] = [256]"),
    (lambda r, x, b: r.route(x.clone().fill_(float("nan")), b), "logits[0][0] is nan: logits must be finite or -inf"),
    (lambda r, x, b: r.replay(x, torch.full((4, 8), 300, dtype=torch.int32)), "forced_ids[0][0] = 300: expert id outside [0, 256)"),
    (lambda r, x, b: r.replay(x, torch.tensor([[1, 1, 2, 3, 4, 5, 6, 7]] * 4, dtype=torch.int32)), "forced_ids[0][1] = 1: repeats an expert of the same token"),
    (lambda r, x, b: r.replay(x, torch.full((4, 8), 2**40)), "forced_ids[0][0] = 1099511627776: outside int32"),
    (lambda r, x, b: r.replay(x, torch.zeros(4, 7, dtype=torch.int32)), "forced_ids: shape (4, 7) must be [T, k]"),
    (lambda r, x, b: r.dispatch(torch.full((2, 8), -1, dtype=torch.int32)), "topk_ids[0][0] = -1"),
    (lambda r, x, b: r.route(x, b, capture=torch.zeros(4, 2, 8, dtype=torch.int16), layer=2), "capture: layer 2 is outside the buffer's 2 layers"),
    (lambda r, x, b: r.route(x, b, capture=torch.zeros(4, 2, 8, dtype=torch.int32)), "capture: dtype int32 must be int16"),
]


@pytest.mark.parametrize("call,message", BAD_CALLS)
def test_bad_calls_raise_one_line(template, call, message):
    router = moegen.Router(template("deepseek-v3"))
    with pytest.raises(moegen.InputError) as info:
        call(router, torch.randn(4, 256), torch.zeros(256))
    text = str(info.value)
    assert message in text and "\n" not in text


def test_bad_specs_raise_one_line(tmp_path):
    with pytest.raises(moegen.InputError, match=r"nope\.yaml: error: cannot read spec"):
        moegen.Router(str(tmp_path / "nope.yaml"))
    with pytest.raises(moegen.InputError, match=r"<spec dict>:3:8: error: 'top_k' = 9 must be in \[1, 8\]"):
        moegen.Router({"name": "x", "num_experts": 8, "top_k": 9, "scoring": "softmax"})
    with pytest.raises(moegen.InputError, match="unknown backend"):
        moegen.Router({"name": "x", "num_experts": 8, "top_k": 2, "scoring": "softmax"}, backend="tpu")
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nnum_experts: 8\ntop_k: 2\nscoring: softmax\nbogus: 1\n")
    with pytest.raises(moegen.InputError, match=r"bad\.yaml:5:1: error: unknown key 'bogus'"):
        moegen.Router(path)


@pytest.mark.skipif(not torch.cuda.is_available() or not moegen.has_cuda, reason="needs a CUDA device")
def test_cuda_matches_cpu_on_the_current_stream(template):
    cpu = moegen.Router(template("deepseek-v3"))
    gpu = moegen.Router(template("deepseek-v3"), backend="cuda")
    torch.manual_seed(4)
    logits, bias = torch.randn(300, 256), torch.randn(256) * 0.1
    ref = cpu.route(logits, bias)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        out = gpu.route(logits.cuda(), bias.cuda())
    stream.synchronize()
    assert out.topk_ids.is_cuda
    for name in moegen.Routing._fields:
        a, b = getattr(out, name).cpu(), getattr(ref, name)
        if name == "topk_weights":
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        else:
            assert torch.equal(a, b), name
    with pytest.raises(moegen.InputError, match="forced_ids"):
        gpu.replay(logits.cuda(), torch.full((300, 8), 999, dtype=torch.int32, device="cuda"))
    with pytest.raises(moegen.InputError, match="logits: on cpu, but this router runs on the cuda backend"):
        gpu.route(logits, bias.cuda())


PERMUTE_SPEC = {"name": "moe_block", "num_experts": 16, "top_k": 4, "scoring": "softmax",
                "normalize": True, "dispatch": True, "permute": True}


def permute_and_combine(router, hidden_dtype):
    torch.manual_seed(7)
    out = router.route(torch.randn(9, 16))
    hidden = torch.randn(9, 64).to(hidden_dtype)
    permuted = router.permute(hidden, out.sorted_slots)
    # rows in expert order, bit copies
    assert permuted.dtype == hidden_dtype and permuted.shape == (36, 64)
    assert torch.equal(permuted, hidden[(out.sorted_slots // 4).long()])
    expert_output = (permuted.float() * 3 - 1).to(hidden_dtype)
    combined = router.combine(expert_output, out.topk_weights, out.slot_positions)
    rows = expert_output.float()[out.slot_positions.long()].view(9, 4, 64)
    want = (out.topk_weights.unsqueeze(-1) * rows).sum(1)
    assert combined.dtype == hidden_dtype
    # f32 sums in slot order, rounded once: within the hidden type's rounding
    tolerance = 1e-6 if hidden_dtype == torch.float32 else 2**-7
    torch.testing.assert_close(combined.float(), want, rtol=tolerance, atol=1e-6)
    return out, hidden


@pytest.mark.parametrize("dtype,hidden_dtype", [("f32", torch.float32), ("bf16", torch.bfloat16)])
def test_permute_and_combine(dtype, hidden_dtype):
    router = moegen.Router(dict(PERMUTE_SPEC, hidden_dtype=dtype, hidden_size=64))
    out, hidden = permute_and_combine(router, hidden_dtype)
    with pytest.raises(moegen.InputError, match=r"sorted_slots\[0\] = 99: outside the slots \[0, 36\)"):
        router.permute(hidden, torch.full((36,), 99, dtype=torch.int32))
    with pytest.raises(moegen.InputError, match=r"slot_positions\[0\] = -1: outside the permuted rows"):
        router.combine(router.permute(hidden, out.sorted_slots), out.topk_weights,
                       torch.full((36,), -1, dtype=torch.int32))
    with pytest.raises(moegen.InputError, match="sorted_slots: shape"):
        router.permute(hidden, out.sorted_slots[:5])
    if hidden_dtype != torch.float32:
        with pytest.raises(moegen.InputError, match=r"expert_output: dtype float32 must be bfloat16"):
            router.combine(torch.zeros(36, 64), out.topk_weights, out.slot_positions)
    plain = moegen.Router({"name": "r", "num_experts": 16, "top_k": 4, "scoring": "softmax"})
    with pytest.raises(moegen.InputError, match="hidden: the spec has no permute and combine entry points"):
        plain.permute(hidden, out.sorted_slots)


def test_tuning_database_picks_the_bucket_config(tmp_path, template, monkeypatch):
    """moegen autotune's database, read as moegen run reads it: each call
    runs its bucket's configuration, with the same results."""
    import subprocess

    from conftest import BIN

    db = tmp_path / "tuning.json"
    subprocess.run([str(BIN / "moegen"), "autotune", template("mixtral-8x7b"), "--tokens", "16,512",
                    "--db", str(db), "--max-candidates", "6", "--reps", "3"],
                   check=True, capture_output=True)
    tuned = moegen.Router(template("mixtral-8x7b"), tuning_db=db)
    plain = moegen.Router(template("mixtral-8x7b"), tuning_db=False)
    assert tuned.config(20)["source"] == f"tuned for T = 16 in {db}"
    assert tuned.config(4096)["source"] == f"tuned for T = 512 in {db}"
    assert plain.config(20)["source"] == "the heuristic's"
    monkeypatch.setenv("MOEGEN_TUNING_DB", str(db))
    assert moegen.Router(template("mixtral-8x7b")).config(600)["source"].startswith("tuned for T = 512")
    torch.manual_seed(8)
    for t in (20, 700):
        x = torch.randn(t, 8).bfloat16()
        a, b = tuned.route(x), plain.route(x)
        assert torch.equal(a.topk_ids, b.topk_ids)
        torch.testing.assert_close(a.topk_weights, b.topk_weights, rtol=1e-6, atol=1e-7)
    # another spec's entries are not this one's
    assert "has no entry for this spec" in moegen.Router(template("deepseek-v3"), tuning_db=db).config(16)["source"]
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(moegen.InputError, match=r"bad\.json: error: not a moegen tuning database"):
        moegen.Router(template("mixtral-8x7b"), tuning_db=bad)
    # The CPU's entries are no GPU's: gpu-emu finds none and keeps the
    # heuristic's schedule.
    emu = moegen.Router(template("mixtral-8x7b"), backend="gpu-emu", tuning_db=db)
    assert emu.config(20)["source"] == "heuristic"


def test_gpu_tuning_builds_a_route_kernel_per_bucket(tmp_path, template):
    """moegen autotune --backend gpu-emu's database on the emulated GPU:
    a route kernel per token bucket where the schedules differ, each call
    launching its bucket's, the results those of the heuristic's."""
    import json
    import subprocess

    from conftest import BIN

    db = tmp_path / "gpu.json"
    subprocess.run([str(BIN / "moegen"), "autotune", template("mixtral-8x7b"), "--backend", "gpu-emu",
                    "--tokens", "4,40", "--db", str(db), "--max-candidates", "3", "--reps", "3"],
                   check=True, capture_output=True)
    data = json.loads(db.read_text())
    for entry, config in zip(data["entries"], [(4, 32, "lane_lists"), (2, 16, "argmax_passes")]):
        entry["config"] = dict(lanes_per_token=config[0], tokens_per_block=config[1], topk=config[2])
    db.write_text(json.dumps(data))
    tuned = moegen.Router(template("mixtral-8x7b"), backend="gpu-emu", tuning_db=db)
    plain = moegen.Router(template("mixtral-8x7b"), backend="gpu-emu", tuning_db=False)
    assert tuned.config(10) == {"lanes_per_token": 4, "tokens_per_block": 32, "topk": "lane_lists",
                                "source": f"options: lanes_per_token = 4, tokens_per_block = 32, "
                                          f"topk = lane_lists (tuned for T = 4 in {db})"}
    assert tuned.config(50)["lanes_per_token"] == 2
    assert tuned.config(50)["source"].endswith(f"(tuned for T = 40 in {db})")
    assert plain.config(50)["source"] == "heuristic"
    torch.manual_seed(9)
    for t in (3, 10, 50):
        x = torch.randn(t, 8).bfloat16()
        a, b = tuned.route(x), plain.route(x)
        assert torch.equal(a.topk_ids, b.topk_ids)
        torch.testing.assert_close(a.topk_weights, b.topk_weights, rtol=1e-5, atol=1e-6)


TOPP_CAPACITY = """name: topp_capacity
num_experts: 16
hidden_dtype: f32
program: |
  route(logits) -> (ids, weights):
    s = softmax(logits)
    ids = topp(s, 4, p: 0.6)
    weights = normalize(gather(s, ids))
  replay(logits, forced_ids) -> (ids, weights):
    s = softmax(logits)
    ids = forced(forced_ids)
    weights = normalize(gather(s, ids))
  dispatch(topk_ids) -> (counts, offsets, sorted_slots, slot_positions):
    counts, offsets, sorted_slots, slot_positions = dispatch(topk_ids, capacity_factor: 0.5)
  permute(hidden, sorted_slots) -> permuted:
    permuted = permute(hidden, sorted_slots)
  combine(topk_weights, slot_positions, expert_output) -> combined:
    combined = combine(expert_output, slot_positions, topk_weights)
"""


def test_top_p_and_capacity():
    """Top-p leaves -1 in unused slots, the capacity drops each expert's
    slots past ceil(0.5 * T * k / E); both are facts of the router, and
    dispatch, permute and combine skip the slots without an expert row."""
    router = moegen.Router(TOPP_CAPACITY)
    assert router.facts["unused_slots"] and router.facts["capacity_factor"] == 0.5
    torch.manual_seed(7)
    t, k, e = 40, 4, 16
    logits = torch.randn(t, e) * torch.linspace(0.2, 4.0, t)[:, None]
    logits[:, :2] += 2.0  # a skewed load, so that the capacity binds
    out = router.route(logits)
    ids = out.topk_ids
    # top-p against torch: the sorted softmax, cut after the running sum
    # first passes 0.6
    scores = torch.softmax(logits, dim=-1)
    top, order = torch.topk(scores, k, dim=-1)
    keep = torch.cat([torch.ones(t, 1, dtype=torch.bool),
                      (top.cumsum(-1) <= 0.6)[:, :-1]], dim=-1)
    assert torch.equal(ids, torch.where(keep, order.int(), -1))
    used = (ids >= 0).sum(-1)
    assert used.min() == 1 and used.max() == k
    torch.testing.assert_close(out.topk_weights.sum(-1), torch.ones(t))
    # the capacity: each expert keeps its first C slots in slot order
    capacity = -(-t * k // (2 * e))
    flat = ids.flatten().tolist()
    seen = [0] * e
    for s, x in enumerate(flat):
        if x < 0:
            assert out.slot_positions[s] == -1
            continue
        seen[x] += 1
        assert (out.slot_positions[s] == -1) == (seen[x] > capacity), s
    assert out.expert_counts.tolist() == [min(n, capacity) for n in seen]
    kept = int(out.expert_offsets[-1])
    assert (out.sorted_slots[kept:] == -1).all()
    # identity experts: each token gets its kept slots' weights times its row
    hidden = torch.randn(t, 8)
    combined = router.combine(router.permute(hidden, out.sorted_slots),
                              out.topk_weights, out.slot_positions)
    kept_weight = torch.where(out.slot_positions.view(t, k) >= 0, out.topk_weights, 0.0)
    torch.testing.assert_close(combined, hidden * kept_weight.sum(-1, keepdim=True))
    # replay takes the -1 slots back; any other negative id is refused
    again = router.replay(logits, ids)
    assert torch.equal(again.topk_ids, ids)
    bad = ids.clone()
    bad[3, 0] = -2
    with pytest.raises(moegen.InputError, match=r"forced_ids\[3\]\[0\] = -2: expert id outside \[0, 16\)"):
        router.replay(logits, bad)


def test_expert_choice_template_against_torch(template):
    """The expert-choice template: each expert takes the ceil(2 * T / 64)
    tokens with the largest softmax scores (ties to the lower token), each
    token lists its takers by score, at most 8, then -1; every expert is
    full unless a token had more than 8 takers. Checked against torch's
    stable sorts on the same bf16 logits."""
    router = moegen.Router(template("expert-choice-64"))
    assert router.facts["unused_slots"]
    torch.manual_seed(11)
    t, e, k = 300, 64, 8
    logits = (torch.randn(t, e) * 2).to(torch.bfloat16)
    out = router.route(logits)
    scores = torch.softmax(logits.float(), dim=-1)
    c = -(-2 * t // e)
    takers = [[] for _ in range(t)]
    for x in range(e):
        order = torch.sort(scores[:, x], descending=True, stable=True).indices
        for token in order[:c].tolist():
            takers[token].append(x)
    want = torch.full((t, k), -1, dtype=torch.int32)
    for token, experts in enumerate(takers):
        experts.sort(key=lambda x: (-scores[token, x].item(), x))
        want[token, :min(k, len(experts))] = torch.tensor(experts[:k], dtype=torch.int32)
    # The kernels' f32 softmax and torch's may order two near-equal scores
    # of one expert's column apart; with these logits none are that close.
    assert torch.equal(out.topk_ids, want)
    weights = torch.where(want >= 0, scores.gather(1, want.clamp(min=0).long()), 0.0)
    torch.testing.assert_close(out.topk_weights, weights, rtol=1e-5, atol=1e-7)
    overflow = sum(max(0, len(x) - k) for x in takers)
    assert int(out.expert_counts.sum()) == c * e - overflow
    again = router.replay(logits, out.topk_ids)
    assert torch.equal(again.topk_ids, out.topk_ids)


BALANCED = """name: balanced
num_experts: 64
program: |
  route(logits, bias) -> (ids, weights):
    s = sigmoid(logits)
    ids = topk(s + bias, 4)
    weights = normalize(gather(s, ids))
  dispatch(topk_ids) -> (counts, offsets, sorted_slots, slot_positions):
    counts, offsets, sorted_slots, slot_positions = dispatch(topk_ids)
  update_bias(bias, expert_counts) -> updated_bias:
    updated_bias = update_bias(bias, expert_counts, rate: 0.001)
"""


def test_update_bias_moves_against_the_load():
    """DeepSeek-V3's auxiliary-loss-free balancing, as torch writes it:
    bias += rate * sign(mean(load) - load)."""
    router = moegen.Router(BALANCED)
    assert router.facts["update_bias"]
    torch.manual_seed(3)
    logits = torch.randn(50, 64)
    logits[:, :8] += 1.0
    bias = torch.randn(64) * 0.01
    counts = router.route(logits, bias).expert_counts
    updated = router.update_bias(bias, counts)
    want = bias + 0.001 * torch.sign(counts.float().mean() - counts.float())
    assert torch.equal(updated, want)
    # NumPy in, NumPy out
    np.testing.assert_array_equal(router.update_bias(bias.numpy(), counts.numpy()), want.numpy())
    with pytest.raises(moegen.InputError, match=r"expert_counts\[5\] = -1: a load must not be negative"):
        router.update_bias(bias, counts.index_fill(0, torch.tensor([5]), -1))
    with pytest.raises(moegen.InputError, match=r"expert_counts: shape"):
        router.update_bias(bias, counts[:10])
    plain = moegen.Router({"name": "r", "num_experts": 64, "top_k": 4, "scoring": "softmax"})
    with pytest.raises(moegen.InputError, match="the router has no update_bias entry point"):
        plain.update_bias(bias, counts)
