//===- Registration.h - Dialects and passes of moegen -----------*- C++ -*-===//

#ifndef MOEGEN_COMPILER_REGISTRATION_H
#define MOEGEN_COMPILER_REGISTRATION_H

namespace mlir {
class DialectRegistry;
} // namespace mlir

namespace moegen {

/// Every dialect moegen's IR can contain: moe and the upstream dialects it
/// composes with (func, tensor, arith).
void registerMoEGenDialects(mlir::DialectRegistry &registry);

/// moegen's own passes and the upstream passes its tools expose.
void registerMoEGenPasses();

} // namespace moegen

#endif // MOEGEN_COMPILER_REGISTRATION_H
