//===- MoEEnums.h - Enumerations of the moe dialect -------------*- C++ -*-===//

#ifndef MOEGEN_DIALECT_MOE_IR_MOEENUMS_H
#define MOEGEN_DIALECT_MOE_IR_MOEENUMS_H

#include "mlir/IR/Attributes.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "llvm/ADT/StringRef.h"

#include "dialects/moe/IR/MoEEnums.h.inc"

#endif // MOEGEN_DIALECT_MOE_IR_MOEENUMS_H
