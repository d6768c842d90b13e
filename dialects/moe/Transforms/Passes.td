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
      `"insertion"` or `"lane_lists"` (same ids, different cost); on the
      host also `"token_lanes"`, where the lanes hold `vector_width` tokens
      instead of experts (for routes whose ops all have that form), and
      `"lane_tree"`, the lane lists merged by a bitonic tree across the
      lanes.

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
           "Top-k method: argmax_passes, insertion, lane_lists or (host) "
           "token_lanes or lane_tree; empty = heuristic">,
  ];
}

def MoEFuseDispatch : Pass<"moe-fuse-dispatch", "ModuleOp"> {
  let summary = "add a route kernel that also dispatches, for small calls";
  let description = [{
    A decode step routes a few tokens: the route and the dispatch each do
    a few microseconds of work or less, and the second launch (a
    cooperative one) costs about as much again. For each row entry point
    (`moe.entry` route, route_hash or replay, not an expert choice) of a
    module with a dispatch entry point, this pass adds `@<name>_dispatch`:
    the entry's body, then the dispatch's `moe.dispatch` on its `topk_ids`,
    returning the entry's results and then the dispatch's. It carries the
    entry's `moe.entry` and `moe.kernel_config`, and
    `moe.fused_dispatch_max_slots`, the largest T * k it serves;
    convert-moe-to-loops lowers the dispatch after the token loop, run by
    the block that finishes last (docs/kernel-abi.md, "Fused dispatch"),
    and the runtime launches it instead of the pair when T * k is at most
    that. The entries stay as they are, for larger calls.

    Only for `nvptx` kernels (run `moe-kernel-config` first): the host runs
    both in one call already. An entry is left alone when its block has
    more warps than the dispatch's scratch layout has partitions
    (abi::fusedDispatchFits).

    ```mlir
    func.func @route(%logits: tensor<?x64xf32>) -> (tensor<?x4xi32>, tensor<?x4xf32>)
        attributes {moe.entry = "route", moe.kernel_config = #moe.kernel_config<...>}
    // gains
    func.func @route_dispatch(%logits: tensor<?x64xf32>)
        -> (tensor<?x4xi32>, tensor<?x4xf32>, tensor<64xi32>, tensor<65xi32>,
            tensor<?xi32>, tensor<?xi32>)
        attributes {moe.entry = "route", moe.fused_dispatch_max_slots = 2048 : i64, ...}
    ```
  }];
  let options = [
    Option<"maxSlots", "max-slots", "int64_t",
           /*default=*/"moegen::abi::kFusedDispatchMaxSlots",
           "The largest T * k a fused kernel serves (1 to 2048); 0: add "
           "none">,
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

def MoEButterflyReductions : Pass<"moe-butterfly-reductions", "ModuleOp"> {
  let summary = "turn f32 maximum and sum reductions of vectors into "
                "log2(width) shuffle steps";
  let description = [{
    LLVM expands `vector.reduction <maximumf>` (NaN-propagating
    `fmaximum`) and `vector.reduction <add>` (an in-order `fadd` without
    reassociation) into a chain of one scalar step per lane. The row
    kernels reduce a chunk to a scalar several times per token (the row's
    maximum and sum, each arg-max pass, each lane-list round), so on the
    host this pass rewrites each such reduction of a 1-D f32 vector of
    2^n > 1 lanes, without an accumulator, into a butterfly: n steps, each
    combining lane i with lane i ^ d (d = width / 2 .. 1) by one
    `vector.shuffle` and one vector `arith.maximumf` or `arith.addf`, then
    the first lane. The maximum is the same value (maximum is associative
    and NaN-propagating either way); the sum adds in a pairwise tree, the
    order the GPU's lanes use, instead of lane order. Other kinds and types
    (integer, `or`) already reduce in log2 steps and are kept. The GPU path
    does not run it: its lanes reduce by shuffles.

    ```mlir
    %m = vector.reduction <maximumf>, %v : vector<4xf32> into f32
    // becomes
    %0 = vector.shuffle %v, %v [2, 3, 0, 1] : vector<4xf32>, vector<4xf32>
    %1 = arith.maximumf %v, %0 : vector<4xf32>
    %2 = vector.shuffle %1, %1 [1, 0, 3, 2] : vector<4xf32>, vector<4xf32>
    %3 = arith.maximumf %1, %2 : vector<4xf32>
    %m = vector.extract %3[0] : f32 from vector<4xf32>
    ```
  }];
  let dependentDialects = ["mlir::arith::ArithDialect",
                           "mlir::vector::VectorDialect"];
}

def MoEZeroSignFreeMinMax : Pass<"moe-zero-sign-free-minmax", "ModuleOp"> {
  let summary = "let f32 maxima and minima return either zero for -0 and +0";
  let description = [{
    `arith.maximumf` and `arith.minimumf` order -0 below +0 and propagate
    NaN; on x86 that costs six instructions per vector maximum instead of
    one `vmaxps` (a sign test and blends for the zeros, a compare and a
    blend for NaN), and the row kernels take many (row maxima, group top-2,
    lane lists). This pass marks each of them `nsz` (no signed zeros): which
    zero comes out of max(-0, +0) is then unspecified, while NaN still
    propagates. No pick or written value depends on it: the kernels compare
    keys with IEEE predicates, under which -0 = +0 (ties then go to the
    lower expert, as for any equal keys), and a maximum reaches an output
    only through a sum or difference that is the same for either zero.
    Measured on the host: DeepSeek-V3's route 1.3-1.4x faster
    (docs/benchmarks.md). The GPU path does not run it.
  }];
  let dependentDialects = ["mlir::arith::ArithDialect"];
}

def MoEGpuFastMath : Pass<"moe-gpu-fast-math", "mlir::gpu::GPUModuleOp"> {
  let summary = "map approximate (`afn`) f32 exp and division to PTX's "
                "approximate instructions, and abs, fma, ceil and floor to "
                "intrinsics";
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

    It also maps f32 and f64 `math.absf` to LLVM's intrinsic (`abs` in PTX,
    exact like libdevice's `__nv_fabsf`), so that a kernel without other
    math calls needs no libdevice, whose parsing and linking cost more than
    the kernel's own code generation; likewise `math.fma` (combine's
    accumulation) to LLVM's `fma` (`fma.rn` in PTX, exact), for which
    `convert-gpu-to-nvvm` has no pattern, and `math.ceil` / `math.floor`
    (an expert-choice capacity, ceil(c * T / E)) to LLVM's `ceil` / `floor`
    (`cvt.rpi` / `cvt.rmi`, exact). `math.sqrt` stays libdevice's: with
    LLVM's `sqrt` intrinsic instead, ptxas no longer unrolled DeepSeek-V4's
    scoring loop (835 -> 997 SASS warp-instructions per token).

    Other ops, other types, and everything outside `gpu.module`s are left
    alone. Runs before `convert-gpu-to-nvvm`.
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

def MoESplitGpuModule : Pass<"moe-split-gpu-module", "ModuleOp"> {
  let summary = "move each kernel of a gpu.module into a gpu.module of its "
                "own, so that the passes on gpu.modules run a kernel per "
                "thread";
  let description = [{
    The NVVM lowering (`convert-gpu-to-nvvm` and the passes around it)
    works on a whole `gpu.module`. Kernels share nothing, so a module of
    two kernels or more is replaced, where it stood, by one module per
    kernel, in the kernels' order: `@<module>_<kernel>` (numbered on a
    clash), with the module's attributes (its targets among them) and
    `moe.split_from = "<module>"`; the kernel is moved into it, and every
    op of the module that is not a kernel (declarations, globals) is
    copied into each. The pass manager then runs a nested `gpu.module`
    pipeline on the parts on the context's threads. `moe-join-gpu-modules`
    puts them back together.

    Nothing may refer to the module by name meanwhile (the NVPTX
    pipeline's host module holds only the gpu.module then).
  }];
  let dependentDialects = ["mlir::gpu::GPUDialect"];
}

def MoEJoinGpuModules : Pass<"moe-join-gpu-modules", "ModuleOp"> {
  let summary = "join the parts moe-split-gpu-module made back into their "
                "gpu.module";
  let description = [{
    The gpu.modules with `moe.split_from = "<module>"` become one
    `gpu.module @<module>` where the first of them stood, with the first
    part's attributes but `moe.split_from`: the parts' ops part by part,
    each kernel, and of the ops that are not kernels the first copy of
    each symbol (so a declaration the first part holds comes before the
    second kernel even where it followed it in the split module). The parts' copies of one symbol must have stayed the same (a
    lowering that declares a function in two parts declares it alike); a
    symbol two parts define differently, or a second kernel of one name,
    is an error.
  }];
  let dependentDialects = ["mlir::gpu::GPUDialect"];
}

def MoEGpuModuleToPtx : Pass<"moe-gpu-module-to-ptx", "ModuleOp"> {
  let summary = "serialize each kernel of a gpu.module to PTX on its own "
                "thread and join them into one PTX module";
  let description = [{
    Replaces every `gpu.module` carrying one `#nvvm.target` with a
    `gpu.binary` holding PTX (`#gpu.object<..., assembly = "...">`), as
    `gpu-module-to-binary{format=isa}` does, but faster on a machine with
    several cores: each kernel (an `llvm.func` with `nvvm.kernel`) is cut
    out into a copy of the module holding only what it uses, the copies go
    through LLVM's optimizer and NVPTX code generation on the context's
    threads, and their PTX is joined. Kernels are independent, so each
    comes out as it would from the whole module.

    The join keeps one header (`.version`, `.target`, `.address_size`),
    keeps the first of module-scope statements that repeat word for word
    (such as the dynamic shared memory declaration), and gives up when two
    parts declare one symbol differently; then, and when `split-kernels`
    is off or the module has fewer than two kernels, the module is
    serialized whole.

    A copy that calls no libdevice function (`__nv_*`) is serialized
    without it, which spares parsing and linking the library.
  }];
  let options = [
    Option<"toolkitPath", "toolkit", "std::string", /*default=*/"\"\"",
           "CUDA toolkit whose libdevice resolves __nv_* calls">,
    Option<"splitKernels", "split-kernels", "bool", /*default=*/"true",
           "Serialize each kernel on its own thread (off: the module "
           "whole)">,
  ];
  let dependentDialects = ["mlir::gpu::GPUDialect",
                           "mlir::LLVM::LLVMDialect",
                           "mlir::NVVM::NVVMDialect"];
}

#endif // MOEGEN_DIALECT_MOE_TRANSFORMS_PASSES_TD
