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

/// The PTX module `ptx` with only the kernels (`.entry` functions) named in
/// `renames`, each renamed to its pair's second, and every other
/// module-scope statement (declarations, helpers) as it was: a module to
/// join with another compile of the same kernels under other names. nullopt
/// when `ptx` is not laid out as the backend prints PTX or lacks a kernel
/// of `renames`.
std::optional<std::string> selectAndRenameKernels(
    const std::string &ptx,
    llvm::ArrayRef<std::pair<std::string, std::string>> renames);

} // namespace mlir::moe

#endif // MOEGEN_DIALECT_MOE_TRANSFORMS_PTXJOIN_H
