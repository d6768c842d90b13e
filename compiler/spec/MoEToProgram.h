//===- MoEToProgram.h - moe dialect IR as a router source -------*- C++ -*-===//
//
// `moegen compile` and `moegen run` take a textual `moe` dialect module as
// well as a spec: its entry functions (marked `moe.entry`) are verified,
// then raised op by op to the gating program that builds them (Program.h),
// so that a module goes through the same checks, IR builder, backends,
// cache keys and golden reference as a spec. The raise is exact: the
// program compiles back to the module's ops and types.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_COMPILER_SPEC_MOETOPROGRAM_H
#define MOEGEN_COMPILER_SPEC_MOETOPROGRAM_H

#include "compiler/spec/RoutingSpec.h"

#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/StringRef.h"

#include <optional>
#include <string>

namespace moegen {

/// The program spec that builds `module`'s entry points, or nullopt with
/// one "FILE:LINE:COL: error: ..." line (the offending op's location) in
/// `error`. The module must verify.
std::optional<RoutingSpec> raiseRouterModule(mlir::ModuleOp module,
                                             std::string &error);

/// Reads a router: moe dialect IR when `path` ends in ".mlir", else a
/// routing spec (SpecParser.h). Errors are one line, as for specs; a
/// module that fails to parse or verify gets MLIR's located diagnostic.
std::optional<RoutingSpec> parseRouterFile(llvm::StringRef path,
                                           std::string &error);

/// Whether `path` names moe dialect IR rather than a spec.
bool isIRPath(llvm::StringRef path);

} // namespace moegen

#endif // MOEGEN_COMPILER_SPEC_MOETOPROGRAM_H
