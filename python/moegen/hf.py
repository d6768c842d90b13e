"""Hugging Face transformers integration: route MoE models through moegen,
and capture or replay their routing.

    with moegen.hf.patch(model):                 # every MoE router -> moegen
        out = model(input_ids)
    with moegen.hf.capture(model) as rec:        # patches too
        model(input_ids)
    np.save("routes.npy", rec.routes.numpy())    # [T, L, k], as the C++ runtime writes
    with moegen.hf.replay(model, np.load("routes.npy")):
        model(input_ids)                          # the same experts, weights from new logits

Each router module of a supported family (ROUTERS) gets its forward replaced
on the instance: the router logits are computed exactly as transformers
computes them, the selection and weights come from a moegen router compiled
from a spec derived from the module (expert count, k, groups, bias,
normalization, scaling), and the result is returned in the module's own
(logits, weights, indices) form, so the experts, the shared experts and
output_router_logits work unchanged. When the logits need a gradient, the
weights are recomputed in torch at moegen's indices (differentiable, the
same formula), which is what training with replayed routes needs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ._router import InputError, Router

# --------------------------------------------------------------------------
# The router families transformers 5.24 ships, by router class name.


@dataclass
class Family:
    """How one transformers router class routes."""

    name: str
    # The spec keys (beyond name/num_experts/top_k) derived from the module.
    spec: Callable[[torch.nn.Module, object], dict]
    # (module, hidden, *extra args) -> router logits [T, E], as transformers.
    logits: Callable
    # The selection bias [E] float32 (or None) from the module and the extra
    # forward arguments.
    bias: Callable = lambda module, args: None
    # The weights' dtype, given the logits and the hidden states.
    weight_dtype: Callable = lambda logits, hidden: logits.dtype
    hash_routed: bool = False


def _linear(module, hidden):
    return F.linear(hidden, module.weight)


def _normalized(spec: dict, normalize: bool, epsilon: float) -> dict:
    """spec with normalize and (only when normalizing) its epsilon."""
    spec["normalize"] = bool(normalize)
    if normalize:
        spec["normalize_epsilon"] = epsilon
    return spec


def _softmax_spec(normalize: bool):
    return _normalized({"scoring": "softmax"}, normalize, 0)


def _sigmoid_groups_spec(module, config):
    spec = _normalized({"scoring": "sigmoid", "score_bias": True,
                        "scaling_factor": float(module.routed_scaling_factor)},
                       module.norm_topk_prob, 1e-20)
    if module.num_group > 1:
        spec.update(groups=int(module.num_group), topk_groups=int(module.topk_group),
                    group_score="top2_sum")
    return spec


def _fp32_flat_logits(module, hidden):
    flat = hidden.reshape(-1, module.hidden_dim)
    return F.linear(flat.type(torch.float32), module.weight.type(torch.float32))


def _ernie_logits(module, hidden):
    device_type = hidden.device.type if hidden.device.type != "mps" else "cpu"
    with torch.autocast(device_type=device_type, enabled=False):
        return F.linear(hidden.float(), module.weight.float())


def _v4_spec(module, config):
    scoring = getattr(config, "scoring_func", "sqrtsoftplus")
    return {"scoring": scoring, "normalize": True, "normalize_epsilon": 1e-20,
            "scaling_factor": float(module.routed_scaling_factor)}


_QWEN_LIKE = dict(spec=lambda m, c: _softmax_spec(m.norm_topk_prob), logits=_linear)

ROUTERS: dict[str, Family] = {
    "Qwen3MoeTopKRouter": Family("qwen3_moe", **_QWEN_LIKE),
    "Qwen2MoeTopKRouter": Family("qwen2_moe", **_QWEN_LIKE),
    "OlmoeTopKRouter": Family("olmoe", **_QWEN_LIKE),
    "MixtralTopKRouter": Family(
        "mixtral", spec=lambda m, c: _softmax_spec(True), logits=_linear,
        weight_dtype=lambda logits, hidden: torch.float32),
    # topk of the raw logits then a softmax over the k: the same ids and
    # weights as a renormalized softmax.
    "GptOssTopKRouter": Family(
        "gpt_oss", spec=lambda m, c: _softmax_spec(True),
        logits=lambda m, h: F.linear(h, m.weight, m.bias)),
    "DeepseekV3TopkRouter": Family(
        "deepseek_v3", spec=_sigmoid_groups_spec, logits=_fp32_flat_logits,
        bias=lambda m, args: m.e_score_correction_bias),
    "Glm4MoeTopkRouter": Family(
        "glm4_moe", spec=_sigmoid_groups_spec, logits=_fp32_flat_logits,
        bias=lambda m, args: m.e_score_correction_bias),
    "Ernie4_5_MoeTopKRouter": Family(
        "ernie4_5_moe",
        # clamp(sum, min=1e-12) equals the sum for any softmax top-k.
        spec=lambda m, c: {"scoring": "softmax", "score_bias": True,
                           "normalize": True, "normalize_epsilon": 0},
        logits=_ernie_logits,
        bias=lambda m, args: m.moe_statics.e_score_correction_bias.reshape(-1),
        weight_dtype=lambda logits, hidden: hidden.dtype),
    "Lfm2MoeTopKRouter": Family(
        "lfm2_moe",
        spec=lambda m, c: _normalized(
            {"scoring": "sigmoid", "score_bias": bool(m.use_expert_bias),
             "scaling_factor": float(m.routed_scaling_factor)}, m.norm_topk_prob, 1e-6),
        logits=_linear,
        bias=lambda m, args: args[0] if m.use_expert_bias else None),
    "DeepseekV4TopKRouter": Family(
        "deepseek_v4", spec=lambda m, c: dict(_v4_spec(m, c), score_bias=True),
        logits=lambda m, h: F.linear(h.reshape(-1, m.hidden_dim), m.weight),
        bias=lambda m, args: m.e_score_correction_bias),
    "DeepseekV4HashRouter": Family(
        "deepseek_v4_hash",
        spec=lambda m, c: dict(_v4_spec(m, c), selection="hash"),
        logits=lambda m, h: F.linear(h.reshape(-1, m.hidden_dim), m.weight),
        hash_routed=True),
}


def router_spec(module: torch.nn.Module, config=None) -> dict:
    """The moegen spec (a dict) of a transformers router module."""
    family = ROUTERS.get(type(module).__name__)
    if family is None:
        raise InputError(f"{type(module).__name__}: not a router moegen knows "
                         f"(known: {', '.join(sorted(ROUTERS))})")
    spec = {"name": family.name, "num_experts": int(module.num_experts),
            "top_k": int(module.top_k)}
    spec.update(family.spec(module, config))
    if not family.hash_routed:
        spec["replay"] = True
    spec["capture"] = True
    return spec


def recompute_weights(spec: dict, logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The weights of `spec` at the given ids, in torch and differentiable:
    score the logits, gather, renormalize, scale (docs/semantics.md)."""
    x = logits.float()
    scoring = spec["scoring"]
    if scoring == "softmax":
        scores = torch.softmax(x, dim=-1)
    elif scoring == "sigmoid":
        scores = torch.sigmoid(x)
    else:
        scores = F.softplus(x).sqrt()
    weights = scores.gather(1, ids.long())
    if spec.get("normalize"):
        weights = weights / (weights.sum(dim=-1, keepdim=True) + spec.get("normalize_epsilon", 1e-20))
    return weights * spec.get("scaling_factor", 1.0)


# --------------------------------------------------------------------------
# Patching.


@dataclass
class _Layer:
    """One patched router: its MoE layer ordinal and compiled router."""

    module: torch.nn.Module
    family: Family
    spec: dict
    router: Router
    index: int
    # The module's own instance forward (an accelerate hook's), if any.
    had_forward: bool = False
    original: Optional[Callable] = None
    # The hash table as int32, and the version of tid2eid it was made from.
    table: Optional[torch.Tensor] = None
    table_key: tuple = ()


@dataclass
class _Chunk:
    """One forward's capture: a [T, L, k] buffer per device (the kernels of
    each layer write on its own device) and the layers written so far."""

    tokens: int
    buffers: dict = field(default_factory=dict)
    # Layer index -> the device whose buffer it wrote.
    written: dict = field(default_factory=dict)


@dataclass
class _State:
    model: torch.nn.Module
    layers: list = field(default_factory=list)
    hooks: list = field(default_factory=list)
    capturing: bool = False
    captured: list = field(default_factory=list)
    # Replay: the [T, L, k] routes, the next token row per layer, and per
    # layer the slices handed out, for recomputation in backward.
    routes: Optional[torch.Tensor] = None
    cursor: list = field(default_factory=list)
    handed: list = field(default_factory=list)
    input_ids: Optional[torch.Tensor] = None


_compiled: dict[tuple, Router] = {}


def _router_for(spec: dict, backend: str, device) -> Router:
    key = (tuple(sorted(spec.items())), backend, str(device))
    if key not in _compiled:
        _compiled[key] = Router(spec, backend, device=device if backend == "cuda" else None)
    return _compiled[key]


def _moe_routers(model: torch.nn.Module):
    return [m for m in model.modules() if type(m).__name__ in ROUTERS]


def _in_backward() -> bool:
    """Whether autograd's engine is running: a gradient-checkpointed layer
    recomputing its forward during backward."""
    return torch._C._current_graph_task_id() != -1


class Patch(contextlib.AbstractContextManager):
    """The handle patch() returns: a context manager that unpatches on exit
    (or call unpatch())."""

    def __init__(self, state: _State):
        self._state = state

    @property
    def num_layers(self) -> int:
        """MoE layers routed by moegen (the L of [T, L, k] routes)."""
        return len(self._state.layers)

    @property
    def specs(self) -> list:
        return [layer.spec for layer in self._state.layers]

    def unpatch(self) -> None:
        _unpatch(self._state)

    def __exit__(self, *exc):
        self.unpatch()
        return False


def _unpatch(state: _State) -> None:
    for layer in state.layers:
        if layer.had_forward:
            layer.module.forward = layer.original
        else:
            layer.module.__dict__.pop("forward", None)
    for hook in state.hooks:
        hook.remove()
    state.hooks = []
    if getattr(state.model, "_moegen_state", None) is state:
        del state.model._moegen_state


def patch(model: torch.nn.Module, backend: Optional[str] = None) -> Patch:
    """Routes every MoE router of `model` through moegen. backend: "cpu" or
    "cuda" (default: where each router's weight is). Every router is
    compiled before any is patched, so a failure leaves the model as it was."""
    if getattr(model, "_moegen_state", None) is not None:
        raise InputError("model: already patched by moegen (unpatch it first)")
    modules = _moe_routers(model)
    if not modules:
        raise InputError(f"{type(model).__name__}: no MoE router moegen knows "
                         f"(known: {', '.join(sorted(ROUTERS))})")
    config = getattr(model, "config", None)
    state = _State(model=model)
    for index, module in enumerate(modules):
        family = ROUTERS[type(module).__name__]
        device = module.weight.device
        backend_here = backend or ("cuda" if device.type == "cuda" else "cpu")
        try:
            spec = router_spec(module, config)
            router = _router_for(spec, backend_here, device)
        except InputError as error:
            raise InputError(f"MoE layer {index} ({type(module).__name__}): {error}") from None
        had_forward = "forward" in module.__dict__
        state.layers.append(_Layer(module, family, spec, router, index, had_forward,
                                   module.__dict__.get("forward")))
    for layer in state.layers:
        layer.module.forward = _patched_forward(state, layer)
    # Hash layers read the token ids, which reach the block only: remember
    # the ids of the model's forward.
    if any(layer.family.hash_routed for layer in state.layers):
        def remember_ids(_module, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            state.input_ids = ids
        state.hooks.append(model.register_forward_pre_hook(remember_ids, with_kwargs=True))
    model._moegen_state = state
    return Patch(state)


def _hash_table(layer: _Layer) -> torch.Tensor:
    """tid2eid as int32, converted again only when the buffer changes."""
    table = layer.module.tid2eid
    key = (table.data_ptr(), table._version, table.device)
    if layer.table is None or layer.table_key != key:
        layer.table = table.to(torch.int32).contiguous()
        layer.table_key = key
    return layer.table


_LOGITS_DTYPES = {torch.float32: "f32", torch.bfloat16: "bf16", torch.float16: "f16"}


def _router_for_logits(layer: _Layer, logits: torch.Tensor) -> Optional[Router]:
    """The layer's router for logits of this dtype: bf16 and f16 logits
    (a bf16 or f16 model's router) go to the kernels as they are, through
    the spec with that logits_dtype, compiled on first use."""
    dtype = _LOGITS_DTYPES.get(logits.dtype)
    if dtype is None:
        return None
    if dtype == "f32":
        return layer.router
    backend = layer.router.backend
    return _router_for(dict(layer.spec, logits_dtype=dtype), backend,
                       logits.device if backend == "cuda" else None)


def _patched_forward(state: _State, layer: _Layer):
    module, family, spec = layer.module, layer.family, layer.spec

    def forward(hidden_states, *args):
        logits = family.logits(module, hidden_states)
        x = logits.detach()
        if not x.is_contiguous():
            x = x.contiguous()
        router = _router_for_logits(layer, x)
        if router is None:  # a dtype without a spec form: exact in f32
            x = x.float()
            router = layer.router
        t = x.shape[0]
        # A sync to check the kernels' error record is not allowed while a
        # CUDA graph is being captured.
        check = not (x.is_cuda and torch.cuda.is_current_stream_capturing())
        if state.routes is not None and not family.hash_routed:
            out = router.replay(x, _take_routes(state, layer, t), dispatch=False, check=check)
        else:
            bias = family.bias(module, args)
            if bias is not None:
                bias = bias.detach().float().contiguous()
            token_ids = table = None
            if family.hash_routed:
                ids = args[0] if args else state.input_ids
                if ids is None:
                    raise InputError(f"MoE layer {layer.index} ({type(module).__name__}): hash "
                                     "routing needs the token ids (call the model with input_ids)")
                token_ids = ids.reshape(-1).to(torch.int32).contiguous()
                table = _hash_table(layer)
            capture = None
            if state.capturing and not _in_backward():
                capture = _capture_buffer(state, layer, t, x.device)
            out = router.route(x, bias, token_ids, hash_table=table, capture=capture,
                               layer=layer.index if capture is not None else 0,
                               dispatch=False, check=check)
            if capture is not None:
                state.captured[-1].written[layer.index] = x.device
            if state.routes is not None:  # a hash layer under replay: check it
                _check_hash_layer(state, layer, out.topk_ids)
        ids = out.topk_ids.long()
        if torch.is_grad_enabled() and logits.requires_grad:
            weights = recompute_weights(spec, logits, ids)
        else:
            weights = out.topk_weights
        return logits, weights.to(family.weight_dtype(logits, hidden_states)), ids

    return forward


# --------------------------------------------------------------------------
# Capture and replay.


def _capture_buffer(state: _State, layer: _Layer, t: int, device):
    """Layer `layer`'s buffer in this forward's chunk; a forward starts a
    chunk at the first MoE layer (or when the token count changes). Rows
    start at -1, so a layer that never ran can never pass as routes."""
    chunks = state.captured
    if layer.index == 0 or not chunks or chunks[-1].tokens != t:
        chunks.append(_Chunk(tokens=t))
    chunk = chunks[-1]
    if device not in chunk.buffers:
        k = layer.spec["top_k"]
        dtype = torch.int16 if max(l.spec["num_experts"] for l in state.layers) <= 32767 else torch.int32
        chunk.buffers[device] = torch.full((t, len(state.layers), k), -1, dtype=dtype, device=device)
    return chunk.buffers[device]


class Capture(Patch):
    """capture()'s handle: `routes` is the routing of every forward inside
    the context that reached all MoE layers (a forward that raised midway
    is left out), [tokens, layers, k]: int16 while expert ids fit, else
    int32, the layout of the C++ runtime's capture files."""

    @property
    def routes(self) -> torch.Tensor:
        state = self._state
        layers = len(state.layers)
        k = state.layers[0].spec["top_k"]
        wide = max(l.spec["num_experts"] for l in state.layers) > 32767
        parts = []
        for chunk in state.captured:
            if len(chunk.written) != layers:
                continue
            out = torch.empty((chunk.tokens, layers, k), dtype=torch.int32 if wide else torch.int16)
            for index, device in chunk.written.items():
                out[:, index] = chunk.buffers[device][:, index].cpu()
            parts.append(out)
        if not parts:
            return torch.zeros((0, layers, k), dtype=torch.int32 if wide else torch.int16)
        return torch.cat(parts)


def capture(model: torch.nn.Module, backend: Optional[str] = None) -> Capture:
    """Patches `model` (as patch()) and records the experts every MoE layer
    chooses, for all forwards inside the context."""
    handle = patch(model, backend)
    try:
        _check_uniform_k(handle._state)
    except BaseException:
        handle.unpatch()
        raise
    handle._state.capturing = True
    return Capture(handle._state)


def _check_uniform_k(state: _State) -> None:
    ks = {layer.spec["top_k"] for layer in state.layers}
    if len(ks) != 1:
        raise InputError(f"model: MoE layers with different top_k {sorted(ks)} "
                         "cannot share one [T, L, k] routes tensor")


def _as_routes(routes) -> torch.Tensor:
    if isinstance(routes, torch.Tensor):
        r = routes.detach().cpu()
    else:
        import numpy as np  # noqa: PLC0415

        r = torch.from_numpy(np.ascontiguousarray(routes))
    if r.dtype not in (torch.int16, torch.int32, torch.int64):
        raise InputError(f"routes: dtype {r.dtype} must be int16 or int32 (or int64)")
    return r


def validate_routes(routes, layers: list) -> torch.Tensor:
    """routes as [T, L, k] int64 after checking them against the patched
    layers: shape, range and distinct ids per token and layer. Raises
    InputError naming the first violation."""
    r = _as_routes(routes)
    num_layers = len(layers)
    k = layers[0].spec["top_k"]
    if r.dim() != 3:
        raise InputError(f"routes: shape {tuple(r.shape)} must be [T, L, k] "
                         f"= [T, {num_layers}, {k}]: it has {r.dim()} dimensions, not 3")
    if r.shape[1] != num_layers:
        raise InputError(f"routes: shape {tuple(r.shape)} must be [T, L, k] = [T, {num_layers}, {k}]: "
                         f"layer count {r.shape[1]}, but the model has {num_layers} MoE layers")
    if r.shape[2] != k:
        raise InputError(f"routes: shape {tuple(r.shape)} must be [T, L, k] = [T, {num_layers}, {k}]: "
                         f"dimension 2 is {r.shape[2]}, not k = {k} (top_k)")
    r = r.long()
    for layer in layers:
        e = layer.spec["num_experts"]
        ids = r[:, layer.index, :]
        bad = (ids < 0) | (ids >= e)
        if bool(bad.any()):
            t, j = bad.nonzero()[0].tolist()
            raise InputError(f"routes[{t}][{layer.index}][{j}] = {int(ids[t, j])}: "
                             f"expert id outside [0, {e}) (layer {layer.index} has {e} experts)")
        sorted_ids, _ = ids.sort(dim=1)
        dup = sorted_ids[:, 1:] == sorted_ids[:, :-1]
        if bool(dup.any()):
            t = int(dup.any(dim=1).nonzero()[0])
            row = ids[t].tolist()
            value = int(sorted_ids[t][1:][dup[t]][0])
            raise InputError(f"routes[{t}][{layer.index}] = {row}: expert {value} "
                             "chosen twice (ids must be distinct per token)")
    return r


class Replay(Patch):
    """replay()'s handle; on exit, every route must have been used."""

    def __exit__(self, exc_type, exc, tb):
        state = self._state
        used = state.cursor[0] if state.cursor else 0
        total = state.routes.shape[0]
        self.unpatch()
        if exc_type is None and any(c != total for c in state.cursor):
            raise InputError(f"routes: {total} tokens given, but the forwards inside replay() "
                             f"routed {used}")
        return False


def replay(model: torch.nn.Module, routes, backend: Optional[str] = None) -> Replay:
    """Patches `model` and forces every MoE layer to the experts in `routes`
    ([T, L, k], as capture() records them; T is the tokens of all forwards
    inside the context, in order), recomputing the weights from the new
    logits. Hash-routed layers keep their table and are checked against the
    routes. The routes are validated before anything runs."""
    handle = patch(model, backend)
    try:
        state = handle._state
        _check_uniform_k(state)
        state.routes = validate_routes(routes, state.layers)
        state.cursor = [0] * len(state.layers)
        state.handed = [[] for _ in state.layers]
    except BaseException:
        handle.unpatch()
        raise
    return Replay(state)


def _take_routes(state: _State, layer: _Layer, t: int) -> torch.Tensor:
    """The next t rows of layer `layer`'s routes. A gradient-checkpointed
    layer recomputing its forward in backward gets the rows it was given
    in that forward again (the latest of its size not yet recomputed)."""
    handed = state.handed[layer.index]
    if _in_backward():
        for i in range(len(handed) - 1, -1, -1):
            if handed[i][1].shape[0] == t:
                return handed.pop(i)[1]
        raise InputError(f"routes: MoE layer {layer.index} recomputes {t} tokens in backward "
                         "(gradient checkpointing) that replay() did not route; call backward "
                         "inside the replay() context")
    start = state.cursor[layer.index]
    total = state.routes.shape[0]
    if start + t > total:
        raise InputError(f"routes: layer {layer.index} routes {t} tokens, but only "
                         f"{total - start} of the {total} replayed tokens are left")
    state.cursor[layer.index] = start + t
    forced = state.routes[start:start + t, layer.index, :].to(torch.int32)
    forced = forced.to(layer.module.weight.device).contiguous()
    if torch.is_grad_enabled():  # a backward may recompute this forward
        handed.append((start, forced))
    return forced


def _check_hash_layer(state: _State, layer: _Layer, ids: torch.Tensor) -> None:
    t = ids.shape[0]
    start = state.cursor[layer.index]
    forced = _take_routes(state, layer, t).to(ids.device)
    if not torch.equal(forced.sort(dim=1).values, ids.sort(dim=1).values):
        row = int((forced.sort(dim=1).values != ids.sort(dim=1).values).any(dim=1).nonzero()[0])
        raise InputError(f"routes[{start + row}][{layer.index}]: differs from the hash "
                         "table of this hash-routed layer")
