//===- MoEAttrs.td - Attributes of the moe dialect ---------*- tablegen -*-===//
//
// The schedule a lowering reads (`#moe.kernel_config`), the launch geometry
// a GPU kernel reports (`#moe.launch`), and the kernel ABI stamped on every
// kernel argument (`#moe.kernel_arg`, `#moe.kernel_size`). Each has its own
// verifier; docs/kernel-abi.md describes the ABI they carry.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_DIALECT_MOE_IR_MOEATTRS_TD
#define MOEGEN_DIALECT_MOE_IR_MOEATTRS_TD

include "dialects/moe/IR/MoEDialect.td"
include "dialects/moe/IR/MoEEnums.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/EnumAttr.td"

class MoE_Attr<string name, string attrMnemonic>
    : AttrDef<MoE_Dialect, name> {
  let mnemonic = attrMnemonic;
}

def MoE_KernelConfigAttr : MoE_Attr<"KernelConfig", "kernel_config"> {
  let summary = "the schedule of an entry point";
  let description = [{
    Set by `moe-kernel-config` on every `moe.entry` function (under the name
    `moe.kernel_config`); the lowerings read it and decide nothing
    themselves.

    - `target`: `cpu` (host) or `nvptx`;
    - `vector_width`: lanes over the expert dimension, a power of two up to
      64; on nvptx the lanes of a warp that one token owns (1 to 32), so a
      warp routes 32 / `vector_width` tokens;
    - `tokens_per_task`: tokens per thread-pool task (cpu) or per block
      (nvptx, where `tokens_per_task * vector_width` is a whole number of
      warps, at most 1024 threads);
    - `topk`: `argmax_passes`, `insertion` or `lane_lists`; or
      `token_lanes`: the lanes hold `vector_width` tokens instead of
      experts (a route whose ops all have that form; the others keep the
      token-per-row layout with arg-max passes), on nvptx a token per
      thread, a segment of `vector_width` lanes a group of as many tokens.

    Example: `#moe.kernel_config<target = cpu, vector_width = 8,
    tokens_per_task = 256, topk = argmax_passes>`.
  }];
  let parameters = (ins
    EnumParameter<MoE_KernelTarget>:$target,
    "int64_t":$vector_width,
    "int64_t":$tokens_per_task,
    EnumParameter<MoE_TopKMethod>:$topk);
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// The warps of an nvptx block: tokens_per_task * vector_width / 32
    /// (the verifier keeps it whole).
    int64_t getWarpsPerBlock() const;
  }];
}

def MoE_LaunchAttr : MoE_Attr<"Launch", "launch"> {
  let summary = "the launch geometry of a GPU kernel";
  let description = [{
    Set by `convert-moe-loops-to-gpu` on every `gpu.func` it creates (under
    the name `moe.launch`), and copied into the manifest: blockDim.x =
    `block_dim`; gridDim.x = ceil(T / `tokens_per_block`), or 1 when
    `tokens_per_block` is 0; `dynamic_shared_memory_bytes` per block. A row
    kernel routes each token on `lanes_per_token` lanes of a warp, so
    `block_dim` = `tokens_per_block` * `lanes_per_token`.

    A cooperative kernel (the GPU dispatch, which synchronizes its whole
    grid) has `max_blocks` > 0: the runtime launches it with every block
    resident, one block per `slots_per_block` slots, at most `max_blocks`
    and at most one per SM (abi::dispatchGridDim). Both default to 0.
  }];
  let parameters = (ins
    "int64_t":$block_dim,
    "int64_t":$tokens_per_block,
    "int64_t":$dynamic_shared_memory_bytes,
    DefaultValuedParameter<"int64_t", "0">:$max_blocks,
    DefaultValuedParameter<"int64_t", "0">:$slots_per_block,
    DefaultValuedParameter<"int64_t", "0">:$lanes_per_token);
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
}

def MoE_KernelArgAttr : MoE_Attr<"KernelArg", "kernel_arg"> {
  let summary = "what a kernel argument is, by the kernel ABI";
  let description = [{
    Stamped by `convert-moe-to-loops` on every argument of a kernel (under
    the name `moe.kernel_arg`), from the catalogue of abi/KernelAbi.h, and
    carried onto the pointer parameter of a GPU kernel by
    `convert-moe-loops-to-gpu`. Backends bind buffers to arguments by
    `name`; the NVPTX manifest lists them.

    - `name`: the ABI name (`logits`, `bias`, ..., `error`, `token_begin`);
    - `role`: `tensor`, `scalar`, `error_record`, `token_begin`,
      `token_end` or `scratch`;
    - `dtype`: the element type (i64 for scalars and the token range);
    - `shape`: one entry per dimension, an extent or a symbol: `"T"`
      tokens, `"V"` hash-table rows, `"L"` capture layers, `"T*k"` slots;
    - `access`: `read`, `write` or `readwrite`.

    Example: `#moe.kernel_arg<name = "logits", role = tensor, dtype = f32,
    shape = ["T", 256], access = read>`.
  }];
  let parameters = (ins
    StringRefParameter<"the ABI name">:$name,
    EnumParameter<MoE_KernelArgRole>:$role,
    "::mlir::Type":$dtype,
    "::mlir::ArrayAttr":$shape,
    EnumParameter<MoE_KernelArgAccess>:$access);
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// The symbol of dimension `dim`, or "" for a static extent.
    ::llvm::StringRef getSymbol(unsigned dim) const;
  }];
}

def MoE_KernelSizeAttr : MoE_Attr<"KernelSize", "kernel_size"> {
  let summary = "a GPU kernel parameter that carries a tensor's size";
  let description = [{
    Set by `convert-moe-loops-to-gpu` on the i64 parameters that follow a
    tensor's pointer (under the name `moe.kernel_size`): dimension `dim` of
    the tensor called `of`. The manifest names it `<of>.size<dim>`.
  }];
  let parameters = (ins
    StringRefParameter<"the tensor's ABI name">:$of,
    "int64_t":$dim);
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
}

#endif // MOEGEN_DIALECT_MOE_IR_MOEATTRS_TD
