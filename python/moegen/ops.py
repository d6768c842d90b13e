"""torch custom ops over moegen routers, for torch.compile graphs and CUDA
graphs.

    router = moegen.Router(spec, backend="cuda")
    key = moegen.ops.register(router)
    ids, weights = torch.ops.moegen.route(logits, bias, None, None, None, key)
    # a spec with shared_expert_gate (Qwen2-MoE) also gates its shared expert:
    ids, weights, gate = torch.ops.moegen.route_gated(
        logits, None, None, None, None, shared_gate_logits, key)

The op takes the router by the key register() returns (a router is not a
tensor, so it cannot be an argument of a graph). Its fake implementation
gives the [T, k] int32 ids and float32 weights, so shapes propagate without
running. Inside CUDA graph capture the op does not wait for the stream to
check the kernels' error record; call router.check_errors() after a replay
of the graph to see an input error. The op has no autograd formula (ids are
not differentiable); for gradients through the weights, recompute them in
torch at the op's ids, as moegen.hf.recompute_weights does.
"""

from __future__ import annotations

from typing import Optional

import torch

from ._router import InputError, Router

_routers: dict[str, Router] = {}


def register(router: Router) -> str:
    """Makes `router` callable from the ops; returns its key (stable for
    the same spec, backend and device: a second router of the same three
    gets the first one's key and the first one runs, with the same
    results)."""
    if not isinstance(router, Router):
        raise InputError(f"router: expected a moegen.Router, got {type(router).__name__}")
    key = f"{router.facts['spec_hash']}:{router.backend}:{router.device_index}"
    _routers.setdefault(key, router)
    return key


def router_for(key: str) -> Router:
    try:
        return _routers[key]
    except KeyError:
        raise InputError(f"router key {key!r}: not registered (call moegen.ops.register(router))") from None


@torch.library.custom_op("moegen::route", mutates_args=())
def route(logits: torch.Tensor, bias: Optional[torch.Tensor],
          token_ids: Optional[torch.Tensor], hash_table: Optional[torch.Tensor],
          forced_ids: Optional[torch.Tensor], router: str) -> tuple[torch.Tensor, torch.Tensor]:
    """route, route_hash or replay (forced_ids given) of the registered
    router: [T, k] int32 ids and [T, k] float32 weights."""
    impl = router_for(router)
    check = not (logits.is_cuda and torch.cuda.is_current_stream_capturing())
    if forced_ids is not None:
        if bias is not None or token_ids is not None or hash_table is not None:
            raise InputError("forced_ids: replay takes no selection inputs (bias, token_ids, hash_table)")
        out = impl.replay(logits, forced_ids, dispatch=False, check=check)
    else:
        out = impl.route(logits, bias, token_ids, hash_table=hash_table,
                         dispatch=False, check=check)
    return out.topk_ids, out.topk_weights


@route.register_fake
def _(logits, bias, token_ids, hash_table, forced_ids, router):
    k = router_for(router).top_k
    t = logits.shape[0]
    return (logits.new_empty((t, k), dtype=torch.int32),
            logits.new_empty((t, k), dtype=torch.float32))


@torch.library.custom_op("moegen::route_gated", mutates_args=())
def route_gated(logits: torch.Tensor, bias: Optional[torch.Tensor],
                token_ids: Optional[torch.Tensor], hash_table: Optional[torch.Tensor],
                forced_ids: Optional[torch.Tensor], shared_gate_logits: torch.Tensor,
                router: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """route as above for a spec with shared_expert_gate: also the shared
    expert's [T, 1] float32 gate, sigmoid(shared_gate_logits)."""
    impl = router_for(router)
    check = not (logits.is_cuda and torch.cuda.is_current_stream_capturing())
    if forced_ids is not None:
        if bias is not None or token_ids is not None or hash_table is not None:
            raise InputError("forced_ids: replay takes no selection inputs (bias, token_ids, hash_table)")
        out = impl.replay(logits, forced_ids, dispatch=False,
                          shared_gate_logits=shared_gate_logits, check=check)
    else:
        out = impl.route(logits, bias, token_ids, hash_table=hash_table, dispatch=False,
                         shared_gate_logits=shared_gate_logits, check=check)
    return out.topk_ids, out.topk_weights, out.shared_gate


@route_gated.register_fake
def _(logits, bias, token_ids, hash_table, forced_ids, shared_gate_logits, router):
    impl = router_for(router)
    if not impl.facts["shared_gate"]:
        raise InputError("shared_gate_logits: not used: the spec has no shared expert gate "
                         "(set shared_expert_gate: true; call torch.ops.moegen.route)")
    k = impl.top_k
    t = logits.shape[0]
    return (logits.new_empty((t, k), dtype=torch.int32),
            logits.new_empty((t, k), dtype=torch.float32),
            logits.new_empty((t, 1), dtype=torch.float32))
