//===- HostJit.h - JIT-compile lowered kernels for this host ----*- C++ -*-===//
//
// The CPU backend and the GPU emulator both turn an LLVM-dialect module into
// machine code for the host with MLIR's ExecutionEngine (LLVM ORC): -O3, the
// host's CPU features, and the few symbols lowered code may call that the
// process does not provide (the bf16 conversions).
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_COMPILER_BACKEND_CPU_HOSTJIT_H
#define MOEGEN_COMPILER_BACKEND_CPU_HOSTJIT_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <memory>
#include <utility>

namespace mlir {
class ExecutionEngine;
class ModuleOp;
} // namespace mlir

namespace moegen::cpu {

/// A symbol the JIT-compiled code may call, by name and address.
using HostSymbol = std::pair<llvm::StringRef, void *>;

/// JIT-compiles `module` (LLVM dialect) for this host at -O`optLevel`,
/// resolving the bf16 conversions and `extraSymbols` besides the process's
/// own symbols.
llvm::Expected<std::unique_ptr<mlir::ExecutionEngine>>
createHostEngine(mlir::ModuleOp module,
                 llvm::ArrayRef<HostSymbol> extraSymbols = {},
                 unsigned optLevel = 3);

} // namespace moegen::cpu

#endif // MOEGEN_COMPILER_BACKEND_CPU_HOSTJIT_H
