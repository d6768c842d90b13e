//===- MoEDialect.h - The moe dialect ---------------------------*- C++ -*-===//

#ifndef MOEGEN_DIALECT_MOE_IR_MOEDIALECT_H
#define MOEGEN_DIALECT_MOE_IR_MOEDIALECT_H

#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Dialect.h"

#include "dialects/moe/IR/MoEDialect.h.inc"

#endif // MOEGEN_DIALECT_MOE_IR_MOEDIALECT_H
