//===- Passes.td - Lowerings out of the moe dialect --------*- tablegen -*-===//

#ifndef MOEGEN_DIALECT_MOE_CONVERSION_PASSES_TD
#define MOEGEN_DIALECT_MOE_CONVERSION_PASSES_TD

include "mlir/Pass/PassBase.td"

def ConvertMoEToLoops : Pass<"convert-moe-to-loops", "ModuleOp"> {
  let summary = "fuse each entry point into one loop over tokens";
  let description = [{
    Rewrites every `moe.entry` function from tensors to a kernel over
    memrefs, with the moe ops lowered to scf, arith, math, vector and memref:

    - route, route_hash and replay become one loop over a token range; every
      row-wise op of the token is fused in its body, keeping one row of
      intermediate values in stack buffers, vectorized over experts with the
      `vector_width` of the function's `moe.kernel_config`;
    - dispatch becomes a counting sort over all tokens.

    Kernel ABI (docs/kernel-abi.md): the original arguments as memrefs (index
    arguments unchanged), then one output memref per result (a capture
    buffer is updated in place and gets none), then the error record
    `memref<5xi64>` (6 words on nvptx), then the token range
    `%t0, %t1 : index` (not for dispatch). Every argument is named by the op
    operand that reads it (or the op computing its result), checked against
    the catalogue of abi/KernelAbi.h and stamped with a `#moe.kernel_arg`;
    backends bind buffers by those names. Input values that a kernel validates (non-finite logits, hash
    and forced ids, the capture layer) set the error record, first violation
    only, and are replaced by a safe value: no id read from an input ever
    reaches a memory access unchecked.

    On the host, the token loop of a row kernel prefetches the rows of its
    per-token inputs (logits, gate logits) `host-prefetch-bytes` ahead: a
    row of DeepSeek-V3's logits is 1 KiB, so four of them share a 4 KiB
    page, and the hardware's stream prefetcher, which stops at page
    boundaries, starts over on every fourth token (docs/benchmarks.md).

    Requires `moe.kernel_config` (run `moe-kernel-config` first).
  }];
  let options = [
    Option<"hostPrefetchBytes", "host-prefetch-bytes", "int64_t",
           /*default=*/"4096",
           "How far ahead of the current token a host row kernel prefetches "
           "its per-token input rows, in bytes (0: no prefetch). Rows "
           "narrower than a cache line are not prefetched; of a row wider "
           "than this, only this many bytes">,
  ];
  let dependentDialects = ["mlir::arith::ArithDialect",
                           "mlir::gpu::GPUDialect",
                           "mlir::LLVM::LLVMDialect",
                           "mlir::NVVM::NVVMDialect",
                           "mlir::math::MathDialect",
                           "mlir::memref::MemRefDialect",
                           "mlir::scf::SCFDialect",
                           "mlir::vector::VectorDialect"];
}

def ConvertMoELoopsToGPU : Pass<"convert-moe-loops-to-gpu", "ModuleOp"> {
  let summary = "run nvptx row kernels on a warp segment per token";
  let description = [{
    Moves every kernel of `convert-moe-to-loops` whose `moe.kernel_config`
    targets `nvptx` into a `gpu.module` as a `gpu.func` kernel, with the
    bare-pointer ABI of docs/kernel-abi.md: each memref argument becomes its
    device pointer followed by its dynamic sizes (i64), each index an i64.

    A row kernel runs each token on a segment of W = `vector_width` lanes
    of a warp (1 to 32; 32 / W tokens per warp) and `tokens_per_task`
    tokens per block (gridDim.x = ceil(T / tokens_per_task)). The W lanes
    of its vectors become the segment's lanes: elementwise ops act on one
    element per lane, chunk loads and stores address `e0 + lane` (masked
    tails never leave the row), reductions are butterflies of
    `nvvm.shfl.sync bfly` (or one `nvvm.redux.sync` for i32). Stack rows
    become per-token slices of dynamic shared memory, every store to them
    fenced by `nvvm.bar.warp.sync`. A collective under token-dependent
    control flow names the segment's member mask,
    (2^W - 1) << (lane & ~(W - 1)), so segments whose tokens branch apart
    stay correct; elsewhere every lane gets there and it names the whole
    warp.
    The dispatch kernel (already written over threads, blocks and the grid
    by convert-moe-to-loops) runs cooperatively in blocks of 256 threads,
    with `moe.launch` naming its grid cap and slots per block.

    Each pointer parameter keeps its memref's `#moe.kernel_arg`, each size
    parameter gets a `#moe.kernel_size<of, dim>`, and each kernel gets
    `moe.launch = #moe.launch<block_dim, tokens_per_block,
    dynamic_shared_memory_bytes, ..., lanes_per_token>` and the known block
    size: the manifest is
    read off these. Arguments without a stamp are an error. Kernels for the
    host are left alone.
  }];
  let options = [
    Option<"moduleName", "module-name", "std::string",
           /*default=*/"\"moe_kernels\"",
           "Name of the gpu.module that receives the kernels">,
  ];
  let dependentDialects = ["mlir::arith::ArithDialect",
                           "mlir::gpu::GPUDialect",
                           "mlir::LLVM::LLVMDialect",
                           "mlir::NVVM::NVVMDialect",
                           "mlir::memref::MemRefDialect",
                           "mlir::scf::SCFDialect"];
}

#endif // MOEGEN_DIALECT_MOE_CONVERSION_PASSES_TD
