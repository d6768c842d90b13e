"""moegen.hf on small random transformers models built from real configs
(no downloads): patched outputs equal transformers' own, capture then replay
under perturbed weights forces exactly the captured experts and equals
transformers' own forced-routing computation, and bad routes raise."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers

import moegen
import moegen.hf

COMMON = dict(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2)
# Three layers where the first is dense, so that two are MoE.
DEEPSEEK_V3 = dict(COMMON, num_hidden_layers=3, num_key_value_heads=4, intermediate_size=64, moe_intermediate_size=32,
                   n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2, first_k_dense_replace=1,
                   kv_lora_rank=16, q_lora_rank=32, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8)
CONFIGS = {
    "qwen3_moe": ("Qwen3MoeConfig", dict(COMMON, intermediate_size=64, moe_intermediate_size=32, num_experts=8,
                                         num_experts_per_tok=2, norm_topk_prob=True, head_dim=16)),
    "qwen2_moe": ("Qwen2MoeConfig", dict(COMMON, intermediate_size=64, moe_intermediate_size=32,
                                         shared_expert_intermediate_size=64, num_experts=8, num_experts_per_tok=2)),
    "mixtral": ("MixtralConfig", dict(COMMON, intermediate_size=32, num_local_experts=8, num_experts_per_tok=2)),
    "olmoe": ("OlmoeConfig", dict(COMMON, intermediate_size=32, num_experts=8, num_experts_per_tok=2,
                                  eos_token_id=None)),
    "gpt_oss": ("GptOssConfig", dict(COMMON, intermediate_size=32, num_local_experts=8, num_experts_per_tok=2,
                                     head_dim=16, sliding_window=8)),
    "deepseek_v3": ("DeepseekV3Config", dict(DEEPSEEK_V3, n_group=2, topk_group=1, routed_scaling_factor=2.5)),
    # Kimi-K2 is a DeepSeek-V3 architecture: one group, scaling 2.827.
    "kimi_k2": ("DeepseekV3Config", dict(DEEPSEEK_V3, n_group=1, topk_group=1, routed_scaling_factor=2.827)),
    "glm4_moe": ("Glm4MoeConfig", dict(COMMON, num_hidden_layers=3, intermediate_size=64, moe_intermediate_size=32, n_routed_experts=8,
                                       n_shared_experts=1, num_experts_per_tok=2, n_group=2, topk_group=1,
                                       first_k_dense_replace=1, head_dim=16, routed_scaling_factor=2.5)),
    "ernie4_5_moe": ("Ernie4_5_MoeConfig", dict(COMMON, num_hidden_layers=3, intermediate_size=64, moe_intermediate_size=32,
                                                moe_num_experts=8, moe_k=2, moe_num_shared_experts=1,
                                                moe_layer_start_index=1)),
    "lfm2_moe": ("Lfm2MoeConfig", dict(COMMON, num_hidden_layers=3, intermediate_size=64,
                                       moe_intermediate_size=32, num_experts=8, num_experts_per_tok=2,
                                       num_dense_layers=1, layer_types=["conv", "full_attention", "conv"],
                                       routed_scaling_factor=2.5)),
    # One hash-routed layer and one learned layer.
    "deepseek_v4": ("DeepseekV4Config", dict(
        vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
        head_dim=32, q_lora_rank=32, o_groups=2, o_lora_rank=16, index_n_heads=2, index_head_dim=16,
        index_topk=4, hc_mult=2, sliding_window=8,
        compress_rates={"compressed_sparse_attention": 4, "heavily_compressed_attention": 8},
        moe_intermediate_size=32, n_routed_experts=8, num_experts_per_tok=2,
        mlp_layer_types=["hash_moe", "moe"])),
}


def build(family, seed=0):
    torch.manual_seed(seed)
    name, kwargs = CONFIGS[family]
    config = getattr(transformers, name)(**kwargs)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    for module in model.modules():
        # Checkpoints carry trained biases and hash tables; make them matter.
        bias = getattr(module, "e_score_correction_bias", None)
        if isinstance(bias, torch.Tensor):
            bias.data.uniform_(-0.1, 0.1)
        if isinstance(getattr(module, "expert_bias", None), torch.Tensor):
            module.expert_bias.data.uniform_(-0.1, 0.1)
        if hasattr(module, "tid2eid"):
            module.tid2eid.data = torch.stack([torch.randperm(module.num_experts)[:module.top_k]
                                               for _ in range(module.tid2eid.shape[0])])
    return model


def routers(model):
    return [m for m in model.modules() if type(m).__name__ in moegen.hf.ROUTERS]


def forced_weights(module, logits, ids):
    """transformers' weight formula of each family at given ids, written
    from its modeling code (not from moegen's specs)."""
    cls = type(module).__name__
    ids = ids.long()
    if cls in ("Qwen3MoeTopKRouter", "Qwen2MoeTopKRouter", "OlmoeTopKRouter"):
        w = torch.softmax(logits, dtype=torch.float, dim=-1).gather(1, ids)
        return (w / w.sum(-1, keepdim=True) if module.norm_topk_prob else w).to(logits.dtype)
    if cls == "MixtralTopKRouter":
        w = torch.softmax(logits.float(), dim=-1).gather(1, ids)
        return w / w.sum(-1, keepdim=True)
    if cls == "GptOssTopKRouter":
        return torch.softmax(logits.gather(1, ids), dim=1, dtype=logits.dtype)
    if cls in ("DeepseekV3TopkRouter", "Glm4MoeTopkRouter"):
        w = logits.sigmoid().gather(1, ids)
        if module.norm_topk_prob:
            w = w / (w.sum(-1, keepdim=True) + 1e-20)
        return w * module.routed_scaling_factor
    if cls == "Ernie4_5_MoeTopKRouter":
        w = F.softmax(logits, dim=1, dtype=torch.float).gather(1, ids)
        return w / torch.clamp(w.sum(-1, keepdim=True), min=module.norm_min)
    if cls == "Lfm2MoeTopKRouter":
        w = logits.sigmoid().gather(1, ids)
        if module.norm_topk_prob:
            w = w / (w.sum(-1, keepdim=True) + 1e-6)
        return w * module.routed_scaling_factor
    if cls in ("DeepseekV4TopKRouter", "DeepseekV4HashRouter"):
        w = F.softplus(logits).sqrt().gather(1, ids)
        return w / (w.sum(-1, keepdim=True) + 1e-20) * module.routed_scaling_factor
    raise AssertionError(cls)


def force_in_transformers(model, routes):
    """Patches each router's own forward to return the given experts with
    transformers' weights at them: transformers' forced routing."""
    originals = []
    for layer, module in enumerate(routers(model)):
        original = module.forward

        def forward(hidden, *args, _original=original, _module=module, _layer=layer):
            logits, _, _ = _original(hidden, *args)
            ids = routes[:, _layer, :].long()
            return logits, forced_weights(_module, logits, ids), ids

        module.forward = forward
        originals.append(module)
    return originals


def relative_error(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_patched_equals_transformers_and_replay_forces_the_captured_experts(family):
    model = build(family)
    tokens = torch.randint(0, 128, (2, 9))
    with torch.no_grad():
        want = model(tokens).logits
        with moegen.hf.patch(model) as patched:
            got = model(tokens).logits
        assert patched.num_layers == len(routers(model)) >= 2
        assert relative_error(got, want) < 1e-5

        with moegen.hf.capture(model) as recorded:
            model(tokens)
        routes = recorded.routes
        assert routes.shape == (18, patched.num_layers, 2) and routes.dtype == torch.int16

        # Perturb every weight: routing would change, replay must not.
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
        chosen = {}

        def record(module, _inputs, output):
            chosen[id(module)] = output[2]

        hooks = [m.register_forward_hook(record) for m in routers(model)]
        with moegen.hf.replay(model, routes.numpy()):
            replayed = model(tokens).logits
        for hook in hooks:
            hook.remove()
        for layer, module in enumerate(routers(model)):
            assert torch.equal(chosen[id(module)].sort(dim=1).values,
                               routes[:, layer, :].long().sort(dim=1).values)

        force_in_transformers(model, routes)
        reference = model(tokens).logits
        assert relative_error(replayed, reference) < 1e-5


def test_replay_trains_through_the_recomputed_weights():
    model = build("qwen3_moe")
    tokens = torch.randint(0, 128, (1, 6))
    with moegen.hf.capture(model) as recorded, torch.no_grad():
        model(tokens)
    gate = routers(model)[0]
    with moegen.hf.replay(model, recorded.routes):
        model(tokens).logits.sum().backward()
    assert gate.weight.grad is not None and gate.weight.grad.abs().sum() > 0


def test_routes_round_trip_through_npy(tmp_path):
    model = build("mixtral")
    tokens = torch.randint(0, 128, (1, 5))
    with torch.no_grad(), moegen.hf.capture(model) as recorded:
        model(tokens)
    np.save(tmp_path / "routes.npy", recorded.routes.numpy())
    loaded = np.load(tmp_path / "routes.npy")
    assert loaded.dtype == np.int16 and loaded.shape == (5, 2, 2)
    with torch.no_grad(), moegen.hf.replay(model, loaded):
        model(tokens)


def bad_routes(routes):
    out_of_range = routes.clone()
    out_of_range[3, 1, 0] = 8
    duplicate = routes.clone()
    duplicate[2, 0, 1] = duplicate[2, 0, 0]
    return [
        (routes[:, :1], "routes: shape (5, 1, 2) must be [T, L, k] = [T, 2, 2]: layer count 1, "
                        "but the model has 2 MoE layers"),
        (routes[:, :, :1], "dimension 2 is 1, not k = 2 (top_k)"),
        (routes[0], "it has 2 dimensions, not 3"),
        (routes.float(), "routes: dtype torch.float32 must be int16 or int32"),
        (out_of_range, "routes[3][1][0] = 8: expert id outside [0, 8) (layer 1 has 8 experts)"),
        (duplicate, f"routes[2][0] = [{int(duplicate[2, 0, 0])}, {int(duplicate[2, 0, 0])}]: expert "
                    f"{int(duplicate[2, 0, 0])} chosen twice"),
    ]


def test_bad_routes_raise_before_anything_runs():
    model = build("qwen3_moe")
    tokens = torch.randint(0, 128, (1, 5))
    with torch.no_grad(), moegen.hf.capture(model) as recorded:
        model(tokens)
    routes = recorded.routes
    for bad, message in bad_routes(routes):
        with pytest.raises(moegen.InputError) as info:
            moegen.hf.replay(model, bad)
        assert message in str(info.value)
        assert not hasattr(model, "_moegen_state")  # nothing left patched
    # wrong token counts: too few routes for the forward, or some unused
    with pytest.raises(moegen.InputError, match="routes 5 tokens, but only 3 of the 3"):
        with torch.no_grad(), moegen.hf.replay(model, routes[:3]):
            model(tokens)
    with pytest.raises(moegen.InputError, match="routes: 10 tokens given, but the forwards inside replay.. routed 5"):
        with torch.no_grad(), moegen.hf.replay(model, torch.cat([routes, routes])):
            model(tokens)
    assert not hasattr(model, "_moegen_state")


def test_patch_refuses_a_model_without_routers():
    with pytest.raises(moegen.InputError, match="no MoE router moegen knows"):
        moegen.hf.patch(torch.nn.Linear(4, 4))


def test_the_sample_runs(tmp_path):
    import os
    import subprocess
    import sys

    from conftest import REPO

    sample = REPO / "samples" / "python" / "hf_capture_replay.py"
    result = subprocess.run([sys.executable, str(sample), str(tmp_path)], capture_output=True,
                            text=True, env=dict(os.environ), timeout=300)
    assert result.returncode == 0, result.stderr
    assert "captured (24, 4, 4) torch.int16 routes" in result.stdout
    assert "replayed: loss" in result.stdout
    assert np.load(tmp_path / "routes.npy").shape == (24, 4, 4)


def test_routes_are_the_files_the_cli_writes(tmp_path):
    """moegen run's capture.npy (the C++ runtime's recorder layout) and
    moegen.hf's routes are the same kind of file: replay takes the CLI's."""
    import subprocess

    from conftest import BIN

    model = build("qwen3_moe")
    tokens = torch.randint(0, 128, (1, 7))
    with torch.no_grad(), moegen.hf.capture(model) as recorded:
        model(tokens)
    # The same routing through the CLI, one layer at a time, into one buffer.
    spec = tmp_path / "spec.yaml"
    spec.write_text(moegen.spec_to_yaml(moegen.hf.router_spec(routers(model)[0])))
    capture = np.zeros((7, 2, 2), dtype=np.int16)
    np.save(tmp_path / "capture.npy", capture)
    for layer, module in enumerate(routers(model)):
        hidden = {}
        hook = module.register_forward_pre_hook(lambda m, args: hidden.setdefault("h", args[0]))
        with torch.no_grad():
            model(tokens)
        hook.remove()
        logits = torch.nn.functional.linear(hidden["h"], module.weight).detach().float().numpy()
        np.save(tmp_path / "logits.npy", logits)
        out = tmp_path / f"out{layer}"
        subprocess.run([str(BIN / "moegen"), "run", str(spec), "--backend", "cpu",
                        "--in", f"logits={tmp_path / 'logits.npy'}", "--in", f"capture={tmp_path / 'capture.npy'}",
                        "--layer", str(layer), "--out", str(out)], check=True, capture_output=True)
        np.save(tmp_path / "capture.npy", np.load(out / "capture.npy"))
    written = np.load(tmp_path / "capture.npy")
    assert written.dtype == np.int16 and written.shape == (7, 2, 2)
    assert (written == recorded.routes.numpy()).all()
    with torch.no_grad(), moegen.hf.replay(model, written):
        model(tokens)


def test_replay_under_gradient_checkpointing():
    """A checkpointed layer recomputes its forward in backward: it gets the
    same routes again, and the gradients equal those without checkpointing."""
    tokens = torch.randint(0, 128, (1, 6))
    grads = []
    for checkpointing in (False, True):
        model = build("qwen3_moe")
        with torch.no_grad(), moegen.hf.capture(model) as recorded:
            model(tokens)
        model.train()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        with moegen.hf.replay(model, recorded.routes):
            model(tokens, labels=tokens).loss.backward()
        grads.append(routers(model)[1].weight.grad.clone())
    torch.testing.assert_close(grads[1], grads[0])


def test_a_forward_that_raises_is_left_out_of_the_routes():
    model = build("qwen3_moe")
    tokens = torch.randint(0, 128, (1, 4))

    def fail(_module, _args):
        raise RuntimeError("out of memory")

    hook = routers(model)[1].register_forward_pre_hook(fail)
    with torch.no_grad(), moegen.hf.capture(model) as recorded:
        with pytest.raises(RuntimeError, match="out of memory"):
            model(tokens)
        hook.remove()
        model(tokens)
    assert recorded.routes.shape == (4, 2, 2)
    assert (recorded.routes >= 0).all()


def test_patch_failures_leave_the_model_as_it_was():
    model = build("qwen3_moe")
    gates = routers(model)
    own = gates[0].forward  # an instance forward (as accelerate's hooks install)
    gates[0].forward = own
    gates[1].top_k = 99  # not a valid spec: the second layer fails to compile
    with pytest.raises(moegen.InputError, match=r"MoE layer 1 \(Qwen3MoeTopKRouter\): .*'top_k' = 99"):
        moegen.hf.patch(model)
    assert gates[0].__dict__["forward"] is own and "forward" not in gates[1].__dict__
    assert not hasattr(model, "_moegen_state")
    gates[1].top_k = 3  # valid, but k differs between layers
    with pytest.raises(moegen.InputError, match="different top_k"):
        moegen.hf.capture(model)
    assert gates[0].__dict__["forward"] is own and not hasattr(model, "_moegen_state")
    gates[1].top_k = 2
    with moegen.hf.patch(model):
        assert gates[0].__dict__["forward"] is not own
    assert gates[0].__dict__["forward"] is own


def test_capture_and_replay_through_generate():
    model = build("qwen3_moe")
    prompt = torch.randint(0, 128, (2, 5))
    with torch.no_grad(), moegen.hf.capture(model) as recorded:
        generated = model.generate(prompt, max_new_tokens=4, do_sample=False)
    # prompt (10 tokens), then one token per sequence and step
    assert recorded.routes.shape[0] == 10 + 2 * 3
    with torch.no_grad(), moegen.hf.replay(model, recorded.routes):
        again = model.generate(prompt, max_new_tokens=4, do_sample=False)
    assert torch.equal(generated, again)


# Families that score in f32 whatever the model's dtype. LFM2-MoE and
# DeepSeek-V4 score in the model's dtype, so in bf16 their near-ties can
# break otherwise than moegen's f32 scores (docs/python.md).
@pytest.mark.parametrize("family", ["qwen3_moe", "mixtral", "deepseek_v3", "ernie4_5_moe"])
def test_bf16_models_route_bf16_logits_as_transformers(family):
    """A bf16 model's router logits reach the kernels as bf16 (a spec with
    logits_dtype: bf16, no f32 copy); the experts chosen are transformers'
    own and the outputs match to bf16 precision."""
    model = build(family).to(torch.bfloat16)
    tokens = torch.randint(0, 128, (2, 7))
    chosen = []

    def record(_module, _inputs, output):
        chosen.append((output[2].sort(dim=1).values, output[1]))

    hooks = [m.register_forward_hook(record) for m in routers(model)]
    with torch.no_grad():
        want = model(tokens).logits
        with moegen.hf.patch(model):
            got = model(tokens).logits
    for hook in hooks:
        hook.remove()
    half = len(chosen) // 2
    for (ids_hf, w_hf), (ids_mg, w_mg) in zip(chosen[:half], chosen[half:]):
        assert torch.equal(ids_hf, ids_mg)
        assert w_mg.dtype == w_hf.dtype
    torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2)
