"""moegen.Router: a routing spec compiled for the CPU or a CUDA device, called
on PyTorch tensors or NumPy arrays.

The outputs are allocated here, in the framework and on the device of the
logits, and filled in place by the native router (moegen._moegen): no copies,
and CUDA work is queued on the caller's current stream.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, NamedTuple, Optional

from . import _moegen

InputError = _moegen.InputError
Error = _moegen.Error

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


class Routing(NamedTuple):
    """What route and replay return: [T, k] int32 ids and float32 weights,
    then the dispatch metadata when it was asked for (else None), then the
    shared expert's [T, 1] float32 gate when the spec has one (else None)."""

    topk_ids: Any
    topk_weights: Any
    expert_counts: Any = None
    expert_offsets: Any = None
    sorted_slots: Any = None
    slot_positions: Any = None
    shared_gate: Any = None


class Dispatch(NamedTuple):
    """Dispatch metadata: [E] counts, [E + 1] offsets, [T * k] sorted slots
    and [T * k] slot positions, all int32."""

    expert_counts: Any
    expert_offsets: Any
    sorted_slots: Any
    slot_positions: Any


def _torch():
    try:
        import torch  # noqa: PLC0415 - optional dependency
    except ImportError:
        return None
    return torch


def _is_torch(x) -> bool:
    torch = _torch()
    return torch is not None and isinstance(x, torch.Tensor)


def spec_to_yaml(spec: dict) -> str:
    """A spec given as a dict, as the YAML text the spec parser reads. Scalars
    and lists are written as JSON, which is YAML's flow form; `program` as a
    literal block."""
    if not isinstance(spec, dict):
        raise InputError(f"spec: expected a path, YAML text or a dict, got {type(spec).__name__}")
    lines = []
    for key, value in spec.items():
        if not isinstance(key, str):
            raise InputError(f"spec: key {key!r} must be a string")
        if key == "program":
            if not isinstance(value, str):
                raise InputError("spec: 'program' must be a string")
            lines.append("program: |")
            lines.extend("  " + line if line else "" for line in value.splitlines())
        else:
            try:
                lines.append(f"{key}: {json.dumps(value, default=_json_scalar)}")
            except TypeError as error:
                raise InputError(f"spec: key {key!r}: {error}") from None
    return "\n".join(lines) + "\n"


def _json_scalar(value):
    """NumPy and torch scalars (np.int64(8), torch.tensor(2.5)) as Python's."""
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    raise TypeError(f"{type(value).__name__} is not a number, string, bool or list")


def _tensor(name: str, value):
    """`value` if it is a tensor moegen takes (a torch.Tensor, a NumPy
    array, anything with __dlpack__), with a torch tensor's lazy negation or
    conjugation applied (DLPack would drop it), else InputError."""
    if _is_torch(value):
        if value.device.type not in ("cpu", "cuda"):
            raise InputError(f"{name}: on {value.device}, but moegen runs on cpu or cuda tensors")
        if value.is_neg():
            value = value.resolve_neg()
        if value.is_conj():
            value = value.resolve_conj()
        if value.requires_grad:
            value = value.detach()
        return value
    dtype = getattr(value, "dtype", None)
    if getattr(dtype, "isnative", True) is False:
        raise InputError(f"{name}: dtype {dtype.str!r} is not in this machine's byte order "
                         "(use .astype(dtype.newbyteorder('=')))")
    if hasattr(value, "__dlpack__"):
        return value
    raise InputError(f"{name}: expected a tensor (torch.Tensor or numpy.ndarray), "
                     f"got {type(value).__name__}")


def _check_flag(name: str, value) -> None:
    if not isinstance(value, bool):
        raise InputError(f"{name}: expected True or False, got {value!r}")


def _on_device(backend: str, index: int):
    """Makes device `index` current while a CUDA router loads, so that its
    kernels go into that device's context (the driver loads into the
    current one)."""
    torch = _torch()
    if backend != "cuda" or torch is None or not torch.cuda.is_available():
        return contextlib.nullcontext()
    return torch.cuda.device(index)


class Router:
    """A router compiled from a spec.

    spec: a path to a YAML spec or a `.mlir` moe module, YAML text, or a dict
    of spec keys. backend: "cpu" (compiled in process), "cuda" (compiled on
    first use and kept in the kernel cache, MOEGEN_CACHE_DIR), or "gpu-emu"
    (the CUDA kernels on the host's GPU emulator, over CPU tensors: slow,
    for tests of the CUDA launch path where no GPU is). device: the
    CUDA device (an int or torch.device; default: the current one).
    threads: the CPU backend's worker threads (0: one per hardware thread).
    tuning_db: a tuning database `moegen autotune` wrote (default: the
    MOEGEN_TUNING_DB environment variable; False: none). Each call on the
    CPU then runs the configuration tuned for its token count on this
    machine and build (compiled on first use), else the heuristic's; on
    cuda and gpu-emu, the route schedules tuned for the device, arch and
    build, a route kernel per token bucket where they differ (each call
    launching its bucket's). config(T) says which.
    """

    def __init__(self, spec, backend: str = "cpu", *, device=None, threads: int = 0,
                 tuning_db=None):
        if not isinstance(backend, str):
            raise InputError(f"backend: expected 'cpu' or 'cuda', got {backend!r}")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise InputError(f"threads: expected a non-negative int, got {threads!r}")
        index = 0
        if backend == "cuda":
            index = self._cuda_index(device)
        elif device is not None:
            raise InputError(f"device: only the cuda backend takes a device, got {device!r}")
        if not _moegen.has_compiler:
            raise Error("moegen.Router(spec): this moegen was built without the compiler "
                        "(the runtime-only package); load compiled kernels with "
                        "moegen.Router.load(DIRECTORY)")
        if isinstance(spec, dict):
            text, is_path, name = spec_to_yaml(spec), False, "<spec dict>"
        elif isinstance(spec, os.PathLike):
            text, is_path, name = os.fspath(spec), True, os.fspath(spec)
        elif isinstance(spec, str):
            # YAML text has a key; a path is one line without ": ".
            is_path = "\n" not in spec and ": " not in spec
            text, name = spec, (spec if is_path else "<spec>")
        else:
            raise InputError(f"spec: expected a path, YAML text or a dict, got {type(spec).__name__}")
        if tuning_db is None:
            tuning_db = os.environ.get("MOEGEN_TUNING_DB", "")
        elif tuning_db is False:
            tuning_db = ""
        elif isinstance(tuning_db, (str, os.PathLike)):
            tuning_db = os.fspath(tuning_db)
        else:
            raise InputError(f"tuning_db: expected a path, None or False, got {tuning_db!r}")
        with _on_device(backend, index):
            self._native = _moegen.Router(text, is_path, name, backend, threads, index,
                                          tuning_db)
        self._facts = dict(self._native.facts)
        self.backend = backend
        self.device_index = index

    @classmethod
    def load(cls, directory, device=None) -> "Router":
        """Kernels compiled ahead for a CUDA device (`moegen compile SPEC
        --emit=cubin -o DIRECTORY`, or a kernel cache entry), loaded without
        the compiler: the way to run on a GPU machine that has only the
        runtime-only package (python/runtime-only/)."""
        index = cls._cuda_index(device)
        self = cls.__new__(cls)
        with _on_device("cuda", index):
            self._native = _moegen.Router.load(os.fspath(directory), index)
        self._facts = dict(self._native.facts)
        self.backend = "cuda"
        self.device_index = index
        return self

    @staticmethod
    def _cuda_index(device) -> int:
        torch = _torch()
        if device is None:
            if torch is None or not torch.cuda.is_available():
                raise Error("backend cuda: no CUDA device is visible to PyTorch; give device=N")
            return torch.cuda.current_device()
        if torch is not None and isinstance(device, torch.device):
            if device.type != "cuda":
                raise InputError(f"device: {device} is not a CUDA device")
            return device.index if device.index is not None else torch.cuda.current_device()
        if isinstance(device, str) and device.startswith("cuda"):
            index = device.partition(":")[2]
            if not index:
                return torch.cuda.current_device() if torch is not None else 0
            if index.isdigit():
                return int(index)
        if isinstance(device, int) and not isinstance(device, bool) and device >= 0:
            return device
        raise InputError(f"device: expected a CUDA device index, got {device!r}")

    # Facts ---------------------------------------------------------------
    @property
    def facts(self) -> dict:
        """What the spec decides about calls: num_experts, top_k, the
        logits dtype, which inputs and entry points exist."""
        return dict(self._facts)

    @property
    def num_experts(self) -> int:
        return self._facts["num_experts"]

    @property
    def top_k(self) -> int:
        return self._facts["top_k"]

    @property
    def name(self) -> str:
        return self._facts["name"]

    @property
    def spec(self) -> str:
        """The spec in canonical form (every key explicit), or its program."""
        return self._native.spec

    def config(self, tokens: int) -> dict:
        """The configuration a call of `tokens` tokens runs with and its
        source: on the CPU vector_width and tokens_per_task (the heuristic's,
        or the tuning database entry they came from); on cuda and gpu-emu
        the route kernel's lanes_per_token, tokens_per_block and topk, with
        its manifest's schedule_source."""
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
            raise InputError(f"tokens: expected a non-negative int, got {tokens!r}")
        return dict(self._native.config(tokens))

    def __repr__(self) -> str:
        return (f"moegen.Router({self.name!r}, backend={self.backend!r}, "
                f"num_experts={self.num_experts}, top_k={self.top_k})")

    # Calls ---------------------------------------------------------------
    def route(self, logits, bias=None, token_ids=None, *, hash_table=None,
              capture=None, layer: int = 0, dispatch: Optional[bool] = None,
              shared_gate_logits=None, check: bool = True) -> Routing:
        """Top-k (or hash) routing of [T, E] logits. bias: [E] float32 when
        the spec has score_bias. token_ids, hash_table: selection: hash.
        capture: a [T, L, k] buffer (int16 while E fits) of which `layer` is
        written. dispatch: also build the dispatch metadata (default: when
        the spec has the entry point). shared_gate_logits: [T, 1] of the
        logits' dtype when the spec has shared_expert_gate; their sigmoid
        comes back as Routing.shared_gate. check (CUDA): wait for the stream
        and raise the kernels' first input error; pass False inside CUDA
        graph capture and call check_errors() later."""
        return self._run(logits, bias, token_ids, hash_table, None, capture,
                         layer, dispatch, check, shared_gate_logits)

    def replay(self, logits, forced_ids, *, dispatch: Optional[bool] = None,
               shared_gate_logits=None, check: bool = True) -> Routing:
        """Router replay: the [T, k] forced ids are the selection (checked:
        in [0, E), distinct per token); the weights (and the shared expert's
        gate) are computed from the logits as route computes them."""
        if forced_ids is None:
            raise InputError("forced_ids: required by replay ([T, k] int32)")
        return self._run(logits, None, None, None, forced_ids, None, 0,
                         dispatch, check, shared_gate_logits)

    def dispatch(self, topk_ids, *, check: bool = True) -> Dispatch:
        """Dispatch metadata alone from [T, k] ids (int32, or int64 in
        int32's range)."""
        _check_flag("check", check)
        ids = self._ids("topk_ids", _tensor("topk_ids", topk_ids))
        t = ids.shape[0] if len(ids.shape) == 2 else 0
        e, k = self.num_experts, self.top_k
        out = Dispatch(*(self._empty(ids, (n,), "int32") for n in (e, e + 1, t * k, t * k)))
        self._native.dispatch(ids, *out, stream=self._stream(ids), check=check)
        return out

    def permute(self, hidden, sorted_slots, *, check: bool = True):
        """Hidden rows [T, H] (of the spec's hidden_dtype) into expert order
        by dispatch's sorted_slots [T * k]: [T * k, H], row p =
        hidden[sorted_slots[p] // k] (spec permute: true)."""
        _check_flag("check", check)
        hidden = _tensor("hidden", hidden)
        sorted_slots = self._ids("sorted_slots", _tensor("sorted_slots", sorted_slots))
        shape = tuple(getattr(hidden, "shape", ()))
        if len(shape) != 2:
            raise InputError(f"hidden: shape {shape} must be [T, H]: it has {len(shape)} dimensions, not 2")
        permuted = self._empty_like_rows(hidden, (shape[0] * self.top_k, shape[1]))
        self._native.permute(hidden, sorted_slots, permuted, stream=self._stream(hidden), check=check)
        return permuted

    def combine(self, expert_output, topk_weights, slot_positions, *, check: bool = True):
        """The experts' rows [T * k, H] (in expert order) weighted by the
        routing weights [T, k] and summed back per token by dispatch's
        slot_positions [T * k]: [T, H] of the spec's hidden_dtype, summed in
        f32 and rounded once (spec permute: true)."""
        _check_flag("check", check)
        expert_output = _tensor("expert_output", expert_output)
        topk_weights = _tensor("topk_weights", topk_weights)
        slot_positions = self._ids("slot_positions", _tensor("slot_positions", slot_positions))
        rows, weights = tuple(getattr(expert_output, "shape", ())), tuple(getattr(topk_weights, "shape", ()))
        if len(weights) != 2:
            raise InputError(f"topk_weights: shape {weights} must be [T, k]: it has {len(weights)} "
                             "dimensions, not 2")
        if len(rows) != 2:
            raise InputError(f"expert_output: shape {rows} must be [T * k, H]: it has {len(rows)} "
                             "dimensions, not 2")
        combined = self._empty_like_rows(expert_output, (weights[0], rows[1]))
        self._native.combine(expert_output, topk_weights, slot_positions, combined,
                             stream=self._stream(expert_output), check=check)
        return combined

    def update_bias(self, bias, expert_counts, *, check: bool = True):
        """Auxiliary-loss-free balancing's step (a gating program's
        update_bias entry): bias [E] f32 moved by the program's rate against
        the loads expert_counts [E] int32 (dispatch's counts, or their sum
        over a step's batches): up for an expert below the mean load, down
        above it. Returns the new bias, [E] f32."""
        _check_flag("check", check)
        bias = _tensor("bias", bias)
        expert_counts = _tensor("expert_counts", expert_counts)
        updated = self._empty_like_rows(bias, tuple(getattr(bias, "shape", ())))
        self._native.update_bias(bias, expert_counts, updated,
                                 stream=self._stream(bias), check=check)
        return updated

    @staticmethod
    def _empty_like_rows(like, shape):
        """An output of `like`'s framework, device and dtype (a dtype the
        kernels refuse is reported by them, naming the input)."""
        if _is_torch(like):
            return _torch().empty(shape, dtype=like.dtype, device=like.device)
        import numpy as np  # noqa: PLC0415

        return np.empty(shape, dtype=getattr(like, "dtype", np.float32))

    def check_errors(self) -> None:
        """CUDA: waits for the current stream and raises the first input
        error recorded by the calls since the last report (calls made with
        check=False, graph replays); a report clears the record."""
        if self.backend == "cuda":
            self._native.check_errors(stream=self._current_stream())
        elif self.backend == "gpu-emu":
            self._native.check_errors(stream=0)

    # Internals -----------------------------------------------------------
    def _run(self, logits, bias, token_ids, hash_table, forced_ids, capture,
             layer, dispatch, check, shared_gate_logits=None) -> Routing:
        logits = _tensor("logits", logits)
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < 2**63:
            raise InputError(f"layer: expected an int in [0, 2**63), got {layer!r}")
        _check_flag("check", check)
        if dispatch is not None:
            _check_flag("dispatch", dispatch)
        bias = None if bias is None else _tensor("bias", bias)
        token_ids = None if token_ids is None else _tensor("token_ids", token_ids)
        hash_table = None if hash_table is None else _tensor("hash_table", hash_table)
        forced_ids = None if forced_ids is None else _tensor("forced_ids", forced_ids)
        if capture is not None:
            capture = _tensor("capture", capture)
            if not getattr(getattr(capture, "flags", None), "writeable", True):
                raise InputError("capture: the buffer is read-only; the kernels write it")
        # Outputs are sized by the logits: a shape, dtype or layout the
        # native checks would refuse is reported before any allocation.
        if not self._plain_logits(logits):
            self._native.check_logits(logits)
        if dispatch is None:
            dispatch = self._facts["dispatch"]
        elif dispatch and not self._facts["dispatch"]:
            raise InputError("dispatch: the spec has no dispatch entry point (set dispatch: true)")
        token_ids = None if token_ids is None else self._ids("token_ids", token_ids)
        hash_table = None if hash_table is None else self._ids("hash_table", hash_table)
        forced_ids = None if forced_ids is None else self._ids("forced_ids", forced_ids)
        shape = getattr(logits, "shape", None)
        t = int(shape[0]) if shape is not None and len(shape) >= 1 else 0
        k, e = self.top_k, self.num_experts
        if capture is None and forced_ids is None and self._facts["capture"]:
            # The kernels of a capture spec always write a capture buffer:
            # without one, a private single layer (as the CPU backend does).
            if layer != 0:
                raise InputError(f"layer: {layer} without a capture buffer; the "
                                 "private one has a single layer")
            capture = self._empty(logits, (t, 1, k), self._facts["capture_dtype"])
        ids = self._empty(logits, (t, k), "int32")
        weights = self._empty(logits, (t, k), "float32")
        meta = ()
        if dispatch:
            meta = tuple(self._empty(logits, (n,), "int32") for n in (e, e + 1, t * k, t * k))
        gate = None
        if shared_gate_logits is not None:
            shared_gate_logits = _tensor("shared_gate_logits", shared_gate_logits)
            if self._facts["shared_gate"]:
                gate = self._empty(logits, (t, 1), "float32")
        elif self._facts["shared_gate"]:
            raise InputError("shared_gate_logits: required by shared_expert_gate: "
                             "true ([T, 1] of the logits' dtype)")
        self._native.run(logits, bias, token_ids, hash_table, forced_ids,
                         capture, layer, ids, weights, *(meta or (None,) * 4),
                         stream=self._stream(logits), check=check,
                         shared_gate_logits=shared_gate_logits, shared_gate=gate)
        if not meta:
            meta = (None,) * 4
        return Routing(ids, weights, *meta, gate)

    def _plain_logits(self, logits) -> bool:
        """Whether the logits are a dense [T, E] torch tensor or NumPy
        array, whose T sizes the outputs safely; anything else goes through
        the native check first (which run repeats)."""
        shape = getattr(logits, "shape", ())
        if len(shape) != 2 or shape[1] != self.num_experts:
            return False
        if _is_torch(logits):
            return logits.is_contiguous()
        flags = getattr(logits, "flags", None)
        return bool(flags is not None and flags.c_contiguous)

    def _current_stream(self) -> int:
        torch = _torch()
        if torch is None:
            return 0
        return torch.cuda.current_stream(self.device_index).cuda_stream

    def _stream(self, tensor) -> int:
        if self.backend != "cuda" or not _is_torch(tensor) or tensor.device.type != "cuda":
            return 0
        return _torch().cuda.current_stream(tensor.device).cuda_stream

    @staticmethod
    def _empty(like, shape, dtype: str):
        if _is_torch(like):
            torch = _torch()
            return torch.empty(shape, dtype=getattr(torch, dtype), device=like.device)
        import numpy as np  # noqa: PLC0415

        return np.empty(shape, dtype=dtype)

    def _ids(self, name: str, ids):
        """int32 ids as they are; int64 ids narrowed to int32, where an id
        outside int32 is an error naming it (on the host), or becomes -1,
        which the kernels report as out of range (on a device, where finding
        it would wait for the stream)."""
        if _is_torch(ids):
            torch = _torch()
            if ids.dtype != torch.int64:
                return ids
            if ids.device.type == "cpu" and ids.numel():
                wide = (ids < _INT32_MIN) | (ids > _INT32_MAX)
                if bool(wide.any()):
                    self._raise_wide(name, ids, wide.nonzero()[0].tolist())
            elif ids.numel():
                ids = torch.where((ids < _INT32_MIN) | (ids > _INT32_MAX),
                                  torch.full_like(ids, -1), ids)
            return ids.to(torch.int32)
        import numpy as np  # noqa: PLC0415

        if isinstance(ids, np.ndarray) and ids.dtype == np.int64:
            wide = (ids < _INT32_MIN) | (ids > _INT32_MAX)
            if ids.size and wide.any():
                self._raise_wide(name, ids, [int(i) for i in np.argwhere(wide)[0]])
            return ids.astype(np.int32)
        return ids

    @staticmethod
    def _raise_wide(name, ids, index):
        where = "".join(f"[{i}]" for i in index)
        value = int(ids[tuple(index)])
        raise InputError(f"{name}{where} = {value}: outside int32 (ids are int32)")
