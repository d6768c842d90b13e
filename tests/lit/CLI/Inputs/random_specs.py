#!/usr/bin/env python3
"""Writes N seeded random routing specs into DIR, one YAML file each.

Covers every scoring function, selection kind, dtype and option, with expert
counts from 2 to 8192 (powers of two and not) and k up to 64, plus the
extremes (E = 2, E = 8192, k = 64). Usage: random_specs.py DIR N SEED
"""
import os
import random
import sys


def divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


def spec(rng, index, experts=None, top_k=None):
    experts = experts or rng.choice(
        [2, 3, 8, 12, 60, 64, 128, 160, 256, 384, 512, 1000, 1024, 2048, 4096, 8192])
    top_k = top_k or rng.randint(1, min(experts, 64))
    lines = [f"name: random_{index}", f"num_experts: {experts}", f"top_k: {top_k}",
             f"scoring: {rng.choice(['softmax', 'sigmoid', 'sqrtsoftplus'])}",
             f"logits_dtype: {rng.choice(['f32', 'bf16', 'f16'])}"]
    selection = rng.choice(["topk", "topk", "grouped", "hash"])
    if selection == "hash":
        lines.append("selection: hash")
    else:
        if rng.random() < 0.5:
            lines.append("score_bias: true")
        if selection == "grouped":
            groups = [g for g in divisors(experts) if 1 < g <= 64 and g < experts]
            if groups:
                g = rng.choice(groups)
                per_group = experts // g
                keep = [kg for kg in range(1, g + 1) if kg * per_group >= top_k]
                if keep:
                    lines += [f"groups: {g}", f"topk_groups: {rng.choice(keep)}",
                              f"group_score: {rng.choice(['max', 'top2_sum'])}"]
        if rng.random() < 0.4:
            lines.append("capture: true")
    normalize = rng.random() < 0.6
    lines.append(f"normalize: {str(normalize).lower()}")
    if rng.random() < 0.5:
        lines.append(f"scaling_factor: {rng.choice([0.5, 1.5, 2.5, 16.0])}")
    for key in ("replay", "dispatch"):
        if rng.random() < 0.5:
            lines.append(f"{key}: true")
    # Logit transforms and an epsilon of their own (LFM2, Grok-style).
    if rng.random() < 0.2:
        lines.append(f"temperature: {rng.choice([0.5, 2.0])}")
    if rng.random() < 0.2:
        lines.append(f"logit_softcap: {rng.choice([1.0, 30.0])}")
    if normalize and rng.random() < 0.3:
        lines.append(f"normalize_epsilon: {rng.choice([0.0, 1e-6])}")
    return "\n".join(lines) + "\n"


def main():
    out, count, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    os.makedirs(out, exist_ok=True)
    fixed = [(2, 1), (2, 2), (8192, 64), (8192, 8), (1000, 64), (60, 4)]
    for i in range(count):
        e, k = fixed[i] if i < len(fixed) else (None, None)
        with open(os.path.join(out, f"random_{i}.yaml"), "w") as f:
            f.write(spec(rng, i, e, k))


if __name__ == "__main__":
    main()
