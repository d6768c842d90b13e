//===- MoEAttrs.h - Attributes of the moe dialect ---------------*- C++ -*-===//

#ifndef MOEGEN_DIALECT_MOE_IR_MOEATTRS_H
#define MOEGEN_DIALECT_MOE_IR_MOEATTRS_H

#include "dialects/moe/IR/MoEDialect.h"
#include "dialects/moe/IR/MoEEnums.h"

#include "abi/KernelAbi.h"
#include "abi/Manifest.h"

#include "mlir/IR/Attributes.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/BuiltinTypes.h"

#define GET_ATTRDEF_CLASSES
#include "dialects/moe/IR/MoEAttrs.h.inc"

namespace mlir::moe {

/// The ABI's name of an element type, or nothing for types the ABI lacks.
std::optional<moegen::abi::DType> toAbiDType(Type type);
/// A `#moe.kernel_arg` shape entry as the manifest states it.
moegen::abi::Dim toAbiDim(Attribute entry);

/// The typed attributes of an op, or null.
KernelConfigAttr getKernelConfig(Operation *op);
LaunchAttr getLaunch(Operation *op);

} // namespace mlir::moe

#endif // MOEGEN_DIALECT_MOE_IR_MOEATTRS_H
