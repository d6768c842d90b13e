//===- SpecToMoE.h - Routing spec to moe dialect IR -------------*- C++ -*-===//

#ifndef MOEGEN_COMPILER_SPEC_SPECTOMOE_H
#define MOEGEN_COMPILER_SPEC_SPECTOMOE_H

#include "compiler/spec/RoutingSpec.h"
#include "dialects/moe/IR/MoEDialect.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OwningOpRef.h"

namespace moegen {

/// Names of the entry points a spec can produce (func.func symbols).
namespace entry {
inline constexpr const char *kRoute = "route";          // selection: topk
inline constexpr const char *kRouteHash = "route_hash"; // selection: hash
inline constexpr const char *kReplay = "replay";        // replay: true
inline constexpr const char *kDispatch = "dispatch";    // dispatch: true
inline constexpr const char *kPermute = "permute";      // permute: true
inline constexpr const char *kCombine = "combine";      // permute: true
} // namespace entry

/// The attribute marking a func.func as a moegen entry point.
using mlir::moe::kEntryAttrName;

/// Builds `module @<name>` with one func.func per entry point of a valid
/// spec (see docs/semantics.md for their signatures). The context must have
/// the moe, func and tensor dialects loaded (registerMoEGenDialects).
mlir::OwningOpRef<mlir::ModuleOp> buildRouterModule(const RoutingSpec &spec,
                                                    mlir::MLIRContext &context);

} // namespace moegen

#endif // MOEGEN_COMPILER_SPEC_SPECTOMOE_H
