//===- NvptxPipeline.h - moe IR to GPU binaries ------------------*- C++ -*-===//
//
// The NVPTX backend's pass pipeline, stage by stage as `--dump-dir` writes
// it out (02-config ... 06-binary). Also registered as `moegen-opt
// --moe-nvptx-to-nvvm` (stages 02 to 05) for lit tests and debugging.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_COMPILER_BACKEND_NVPTX_NVPTXPIPELINE_H
#define MOEGEN_COMPILER_BACKEND_NVPTX_NVPTXPIPELINE_H

#include "abi/KernelAbi.h"

#include <cstdint>
#include <string>

namespace mlir {
class OpPassManager;
} // namespace mlir

namespace moegen::nvptx {

struct NvptxPipelineOptions {
  /// Tokens per block; 0: chosen by the kernel-config heuristics.
  int64_t tokensPerBlock = 0;
  /// Lanes of a warp per token (1, 2, 4, ..., 32); 0: heuristic.
  int64_t lanesPerToken = 0;
  /// "argmax_passes", "insertion" or "lane_lists"; empty: heuristic.
  std::string topk;
  /// The chip the NVVM target names (LLVM 19 knows archs up to sm_90a).
  std::string chip = "sm_90";
  /// The CUDA toolkit whose libdevice the binary stage links.
  std::string toolkitPath = "/usr/local/cuda";
  /// moe-fuse-dispatch's max-slots: the largest T * k a route kernel with
  /// a fused dispatch serves; 0: none.
  int64_t fusedDispatchMaxSlots = abi::kFusedDispatchMaxSlots;
};

/// Stage 02: moe-kernel-config with target=nvptx, then moe-fuse-dispatch.
void addNvptxConfigStage(mlir::OpPassManager &pm,
                         const NvptxPipelineOptions &options);
/// Stage 03: convert-moe-to-loops (vectors of lanes-per-token lanes),
/// canonicalize, cse.
void addNvptxLoopsStage(mlir::OpPassManager &pm);
/// Stage 04: convert-moe-loops-to-gpu (a warp segment per token),
/// canonicalize, cse.
void addNvptxGpuStage(mlir::OpPassManager &pm);
/// Stage 05: the NVVM target, then gpu to NVVM inside the gpu.module.
void addNvptxNvvmStage(mlir::OpPassManager &pm,
                       const NvptxPipelineOptions &options);
/// Stage 06: extern dynamic shared memory, moe-gpu-module-to-ptx (each
/// kernel on its own thread, one PTX module).
void addNvptxBinaryStage(mlir::OpPassManager &pm,
                         const NvptxPipelineOptions &options);

/// Registers `moe-nvptx-to-nvvm` (stages 02 to 05) for moegen-opt.
void registerNvptxPipeline();

} // namespace moegen::nvptx

#endif // MOEGEN_COMPILER_BACKEND_NVPTX_NVPTXPIPELINE_H
