//===- MoEDialect.h - The moe dialect ---------------------------*- C++ -*-===//

#ifndef MOEGEN_DIALECT_MOE_IR_MOEDIALECT_H
#define MOEGEN_DIALECT_MOE_IR_MOEDIALECT_H

#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Dialect.h"

#include "dialects/moe/IR/MoEDialect.h.inc"

namespace mlir::moe {
/// Marks a func.func as an entry point; its value names the kind.
inline constexpr const char *kEntryAttrName = "moe.entry";
/// The schedule of an entry point, set by `moe-kernel-config`: a dictionary
/// {target: "cpu"|"nvptx", vector_width: i64, tokens_per_task: i64,
///  topk: "argmax_passes"|"insertion"}.
inline constexpr const char *kKernelConfigAttrName = "moe.kernel_config";
/// Launch geometry of a GPU kernel, set by convert-moe-loops-to-gpu:
/// {block_dim, tokens_per_block, dynamic_shared_memory_bytes}.
inline constexpr const char *kLaunchAttrName = "moe.launch";
} // namespace mlir::moe

#endif // MOEGEN_DIALECT_MOE_IR_MOEDIALECT_H
