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
    `memref<5xi64>`, then the token range `%t0, %t1 : index` (not for
    dispatch). Input values that a kernel validates (non-finite logits, hash
    and forced ids, the capture layer) set the error record, first violation
    only, and are replaced by a safe value: no id read from an input ever
    reaches a memory access unchecked.

    Requires `moe.kernel_config` (run `moe-kernel-config` first).
  }];
  let dependentDialects = ["mlir::arith::ArithDialect",
                           "mlir::math::MathDialect",
                           "mlir::memref::MemRefDialect",
                           "mlir::scf::SCFDialect",
                           "mlir::vector::VectorDialect"];
}

#endif // MOEGEN_DIALECT_MOE_CONVERSION_PASSES_TD
