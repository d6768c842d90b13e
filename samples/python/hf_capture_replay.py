"""Router replay for a Hugging Face transformers model with moegen.

A "rollout" run of a small Qwen3-MoE model captures the experts every MoE
layer chooses for every token and saves them as routes.npy ([tokens, layers,
k] int16, the layout moegen's C++ runtime writes). A "training" run of the
same model with updated weights then replays those routes: each layer is
forced to the captured experts, and the routing weights are recomputed from
the new logits (differentiably, so the loss trains the router too).

    PYTHONPATH=build/python python3 samples/python/hf_capture_replay.py [OUT_DIR]

The model is built from a config with random weights (no download).
"""

import pathlib
import sys

import numpy as np
import torch
import transformers

import moegen.hf


def main() -> int:
    out_dir = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = transformers.Qwen3MoeConfig(
        vocab_size=256, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
        num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        num_experts=16, num_experts_per_tok=4, norm_topk_prob=True)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    prompt = torch.randint(0, config.vocab_size, (2, 12))

    # Rollout: route through moegen and record every layer's choice.
    with torch.no_grad(), moegen.hf.capture(model) as recorded:
        rollout_logits = model(prompt).logits
    routes_path = out_dir / "routes.npy"
    np.save(routes_path, recorded.routes.numpy())
    print(f"captured {tuple(recorded.routes.shape)} {recorded.routes.dtype} routes -> {routes_path}")

    # Training: the weights have moved on; left alone, routing would change.
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.01)
        with moegen.hf.capture(model) as fresh:
            model(prompt)
    changed = (fresh.routes.sort(-1).values != recorded.routes.sort(-1).values).any(-1).sum().item()
    print(f"without replay, {changed} of {fresh.routes.shape[0] * fresh.routes.shape[1]} "
          "token-layer routes would differ")

    # Replay the rollout's routes and train through the recomputed weights.
    model.train()
    with moegen.hf.replay(model, np.load(routes_path)):
        logits = model(prompt).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), prompt[:, 1:].flatten())
        loss.backward()
    gate = model.model.layers[0].mlp.gate
    print(f"replayed: loss {loss.item():.4f}, router gradient norm {gate.weight.grad.norm().item():.4e}, "
          f"max |logit change| vs rollout {(logits - rollout_logits).abs().max().item():.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
