//===- Passes.h - Lowerings out of the moe dialect --------------*- C++ -*-===//

#ifndef MOEGEN_DIALECT_MOE_CONVERSION_PASSES_H
#define MOEGEN_DIALECT_MOE_CONVERSION_PASSES_H

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Pass/Pass.h"

#include <memory>

namespace mlir::moe {

#define GEN_PASS_DECL
#include "dialects/moe/Conversion/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "dialects/moe/Conversion/Passes.h.inc"

} // namespace mlir::moe

#endif // MOEGEN_DIALECT_MOE_CONVERSION_PASSES_H
