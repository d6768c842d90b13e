"""docs/semantics.md in plain torch (float64), independent of moegen's
compiler: the oracle of the Python tests here and of the CUDA checks on a
GPU machine (tests/gpu/test_python_cuda.py)."""

import torch
import torch.nn.functional as F

_SCORING = {
    "softmax": lambda v: torch.softmax(v, -1),
    "sigmoid": torch.sigmoid,
    "sqrtsoftplus": lambda v: F.softplus(v).sqrt(),
}


def top(values, k):
    """Indices of the k largest along the last dimension, larger first,
    ties to the lower index (a stable descending sort)."""
    return torch.sort(values, dim=-1, descending=True, stable=True).indices[..., :k]


def route(logits, bias=None, *, k, scoring, groups=1, keep=1, normalize=False,
          epsilon=1e-20, scale=1.0, forced=None):
    """(ids int32, weights float32) of one routing call."""
    x = logits.double()
    scores = _SCORING[scoring](x)
    if forced is None:
        keys = scores + (bias.double() if bias is not None else 0)
        if groups > 1:
            t, e = keys.shape
            group_scores = keys.view(t, groups, e // groups).topk(2, -1).values.sum(-1)
            mask = torch.zeros(t, groups, dtype=torch.bool, device=keys.device)
            mask.scatter_(1, top(group_scores, keep), True)
            keys = keys.masked_fill(~mask.repeat_interleave(e // groups, 1), float("-inf"))
        ids = top(keys, k)
    else:
        ids = forced.long()
    weights = scores.gather(1, ids)
    if normalize:
        weights = weights / (weights.sum(-1, keepdim=True) + epsilon)
    return ids.int(), (weights * scale).float()


def dispatch(ids, num_experts):
    """(counts, offsets, sorted_slots, slot_positions) of docs/semantics.md
    §10: slots sorted by (expert, slot)."""
    flat = ids.reshape(-1).long()
    counts = torch.bincount(flat, minlength=num_experts)
    offsets = torch.zeros(num_experts + 1, dtype=torch.long, device=ids.device)
    offsets[1:] = counts.cumsum(0)
    sorted_slots = torch.sort(flat, stable=True).indices
    positions = torch.empty_like(sorted_slots)
    positions[sorted_slots] = torch.arange(flat.numel(), device=ids.device)
    return counts.int(), offsets.int(), sorted_slots.int(), positions.int()
