//===- PtxJoin.h - One PTX module from kernels compiled apart ---*- C++ -*-===//

#ifndef MOEGEN_DIALECT_MOE_TRANSFORMS_PTXJOIN_H
#define MOEGEN_DIALECT_MOE_TRANSFORMS_PTXJOIN_H

#include "llvm/ADT/ArrayRef.h"

#include <optional>
#include <string>

namespace mlir::moe {

/// Joins PTX modules the NVPTX backend printed for kernels of one module
/// serialized apart: the first header (`.version`, `.target`,
/// `.address_size`), then every module-scope statement once, in order.
/// A statement repeated word for word (a shared declaration, a helper every
/// part kept) is kept once. Returns nullopt when the headers differ, when
/// two parts declare one symbol differently, or when a part is not laid out
/// as the backend prints PTX.
std::optional<std::string> joinPtx(llvm::ArrayRef<std::string> parts);

} // namespace mlir::moe

#endif // MOEGEN_DIALECT_MOE_TRANSFORMS_PTXJOIN_H
