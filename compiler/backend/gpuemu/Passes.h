//===- Passes.h - The GPU emulator's lowering -------------------*- C++ -*-===//

#ifndef MOEGEN_COMPILER_BACKEND_GPUEMU_PASSES_H
#define MOEGEN_COMPILER_BACKEND_GPUEMU_PASSES_H

#include "mlir/Pass/Pass.h"

#include <memory>
#include <string>

namespace moegen::gpuemu {

#define GEN_PASS_DECL
#include "compiler/backend/gpuemu/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "compiler/backend/gpuemu/Passes.h.inc"

} // namespace moegen::gpuemu

#endif // MOEGEN_COMPILER_BACKEND_GPUEMU_PASSES_H
