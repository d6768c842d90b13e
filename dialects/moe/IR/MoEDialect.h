//===- MoEDialect.h - The moe dialect ---------------------------*- C++ -*-===//

#ifndef MOEGEN_DIALECT_MOE_IR_MOEDIALECT_H
#define MOEGEN_DIALECT_MOE_IR_MOEDIALECT_H

#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Dialect.h"

#include "dialects/moe/IR/MoEDialect.h.inc"

#include <cstdint>

namespace mlir::moe {
/// Marks a func.func as an entry point; its value names the kind.
inline constexpr const char *kEntryAttrName = "moe.entry";
/// The schedule of an entry point, a `#moe.kernel_config`, set by
/// `moe-kernel-config`.
inline constexpr const char *kKernelConfigAttrName = "moe.kernel_config";
/// An entry point that also dispatches (an i64: the largest T * k it
/// serves), set by `moe-fuse-dispatch`.
inline constexpr const char *kFusedDispatchAttrName =
    "moe.fused_dispatch_max_slots";
/// A gpu.module that holds one kernel of the gpu.module this names (a
/// string), set by `moe-split-gpu-module` and removed by
/// `moe-join-gpu-modules`.
inline constexpr const char *kSplitFromAttrName = "moe.split_from";
/// Launch geometry of a GPU kernel, a `#moe.launch`, set by
/// convert-moe-loops-to-gpu.
inline constexpr const char *kLaunchAttrName = "moe.launch";
/// The ABI of a kernel argument, a `#moe.kernel_arg`, set by
/// convert-moe-to-loops.
inline constexpr const char *kKernelArgAttrName = "moe.kernel_arg";
/// A GPU kernel's size parameter, a `#moe.kernel_size`, set by
/// convert-moe-loops-to-gpu.
inline constexpr const char *kKernelSizeAttrName = "moe.kernel_size";

/// Lanes of an NVIDIA warp: the vector width of every nvptx kernel.
inline constexpr int64_t kWarpSize = 32;
/// Largest vector width the lowerings accept.
inline constexpr int64_t kMaxVectorWidth = 64;
/// The widest row (in vector chunks) the lane_lists top-k sorts in
/// registers; wider rows fall back to argmax passes.
inline constexpr int64_t kMaxLaneListChunks = 16;
/// Largest CUDA block.
inline constexpr int64_t kMaxBlockThreads = 1024;
} // namespace mlir::moe

#endif // MOEGEN_DIALECT_MOE_IR_MOEDIALECT_H
