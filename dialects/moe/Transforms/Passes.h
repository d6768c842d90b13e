//===- Passes.h - Transformations of the moe dialect ------------*- C++ -*-===//

#ifndef MOEGEN_DIALECT_MOE_TRANSFORMS_PASSES_H
#define MOEGEN_DIALECT_MOE_TRANSFORMS_PASSES_H

#include "abi/KernelAbi.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Pass/Pass.h"

#include <memory>
#include <string>

namespace mlir::moe {

#define GEN_PASS_DECL
#include "dialects/moe/Transforms/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "dialects/moe/Transforms/Passes.h.inc"

} // namespace mlir::moe

#endif // MOEGEN_DIALECT_MOE_TRANSFORMS_PASSES_H
