//===- Passes.td - Transformations of the moe dialect ------*- tablegen -*-===//
//
// Passes that stay within (or annotate) the moe dialect. Lowerings out of it
// are in dialects/moe/Conversion/Passes.td.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_DIALECT_MOE_TRANSFORMS_PASSES_TD
#define MOEGEN_DIALECT_MOE_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

def MoEKernelConfig : Pass<"moe-kernel-config", "ModuleOp"> {
  let summary = "choose the kernel configuration of every entry point";
  let description = [{
    Attaches `moe.kernel_config` to each `moe.entry` function: a
    `#moe.kernel_config` (MoEAttrs.td) holding the schedule choices the
    lowerings read but never make themselves.

    - `target`: `"cpu"` (host) or `"nvptx"`;
    - `vector_width`: lanes over the expert dimension, a power of two;
    - `tokens_per_task`: tokens one thread-pool task (CPU) or one block (GPU)
      handles;
    - `topk`: how a row's top-k is found, `"argmax_passes"`,
      `"insertion"` or `"lane_lists"` (same ids, different cost).

    The values come from the heuristics in KernelConfigHeuristics.h, from
    (E, k, groups, logits dtype, target), unless an option pins them; an
    autotuner sweeps them through these options. An existing configuration
    is replaced, so the pass is idempotent.

    Example: `moegen-opt --moe-kernel-config="target=cpu vector-width=4"`.
  }];
  let options = [
    Option<"target", "target", "std::string", /*default=*/"\"cpu\"",
           "Target of the kernels: cpu or nvptx">,
    Option<"vectorWidth", "vector-width", "int64_t", /*default=*/"0",
           "Lanes over experts (a power of two up to 64); 0 = heuristic">,
    Option<"tokensPerTask", "tokens-per-task", "int64_t", /*default=*/"0",
           "Tokens per task; 0 = heuristic">,
    Option<"topk", "topk", "std::string", /*default=*/"\"\"",
           "Top-k method: argmax_passes, insertion or lane_lists; empty = heuristic">,
  ];
}

def MoEApproximateMath : Pass<"moe-approximate-math", "ModuleOp"> {
  let summary = "expand exp, log1p and friends into vectorizable polynomials";
  let description = [{
    Rewrites the `math` ops the scoring functions use (exp, log1p, ...) into
    MLIR's polynomial approximations (a few ulp in f32), so that the host
    backend keeps them in vector registers instead of calling libm once per
    lane. The GPU path does not run it: there, math lowers to libdevice.
  }];
  let dependentDialects = ["mlir::arith::ArithDialect",
                           "mlir::math::MathDialect",
                           "mlir::vector::VectorDialect"];
}

def MoEGpuFastMath : Pass<"moe-gpu-fast-math", "mlir::gpu::GPUModuleOp"> {
  let summary = "map approximate (`afn`) f32 exp and division to PTX's "
                "approximate instructions";
  let description = [{
    The scoring lowering marks with `afn` only the f32 exps whose argument
    is at most 0 and the divisions whose divisor lies in [1, 2^126]
    (ScoringToLoops.cpp); this pass gives them the fast forms CUDA's
    `__expf` and `__fdividef` use, instead of libdevice's correctly rounded
    sequences:

    - `math.exp %x {afn}` -> `llvm.nvvm.ex2.approx.f(%x * log2(e))`
      (ex2.approx.f32: 2 ulp, subnormal results kept);
    - `arith.divf %a, %b {afn}`, whose divisor must lie in [1, 2^126] ->
      `%a * llvm.nvvm.rcp.approx.ftz.f(%b)` (1 ulp; the reciprocal is a
      normal number there, so flushing subnormals changes nothing), or
      the reciprocal alone when %a is 1.

    Ops without `afn`, other types, and everything outside `gpu.module`s
    are left alone. Runs before `convert-gpu-to-nvvm`.
  }];
  let dependentDialects = ["mlir::arith::ArithDialect",
                           "mlir::LLVM::LLVMDialect"];
}

def MoEExternDynamicSharedMemory
    : Pass<"moe-extern-dynamic-shared-memory", "ModuleOp"> {
  let summary = "give the dynamic shared memory symbol external linkage";
  let description = [{
    MLIR 19's `convert-gpu-to-nvvm` lowers `gpu.dynamic_shared_memory` to an
    `llvm.mlir.global` in address space 3 named `__dynamic_shmem__N` with
    internal linkage, which the NVPTX backend prints as a 1-byte static
    `.shared` variable that the kernels then index past. External linkage
    gives CUDA's `.extern .shared .align 16 .b8 __dynamic_shmem__N[]`, the
    base of the dynamic allocation the launch sizes. Runs on the LLVM
    dialect inside `gpu.module`s, after `convert-gpu-to-nvvm`; other globals
    are left alone.
  }];
  let dependentDialects = ["mlir::LLVM::LLVMDialect"];
}

#endif // MOEGEN_DIALECT_MOE_TRANSFORMS_PASSES_TD
