//===- MoEOps.h - Operations of the moe dialect -----------------*- C++ -*-===//

#ifndef MOEGEN_DIALECT_MOE_IR_MOEOPS_H
#define MOEGEN_DIALECT_MOE_IR_MOEOPS_H

// Must precede the generated declarations (MLIR 19 pitfall: the generated ops
// name BytecodeOpInterface without including it).
#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "dialects/moe/IR/MoEDialect.h"
#include "dialects/moe/IR/MoEEnums.h"

#define GET_OP_CLASSES
#include "dialects/moe/IR/MoEOps.h.inc"

#endif // MOEGEN_DIALECT_MOE_IR_MOEOPS_H
