//===- CpuPipeline.h - moe IR to LLVM IR for the host -----------*- C++ -*-===//
//
// The CPU backend's pass pipeline, in three stages that `--dump-ir` writes
// out one by one: kernel configuration, moe -> loops, loops -> LLVM dialect.
// Also registered as `moegen-opt --moe-cpu-to-llvm` for lit tests and
// debugging.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_COMPILER_BACKEND_CPU_CPUPIPELINE_H
#define MOEGEN_COMPILER_BACKEND_CPU_CPUPIPELINE_H

#include <cstdint>
#include <string>

namespace mlir {
class OpPassManager;
} // namespace mlir

namespace moegen::cpu {

struct CpuPipelineOptions {
  /// 0: chosen by the kernel-config heuristics.
  int64_t vectorWidth = 0;
  int64_t tokensPerTask = 0;
  /// "argmax_passes", "insertion", "lane_lists", "lane_tree" or
  /// "token_lanes"; empty: heuristic.
  std::string topk;
};

/// Stage 1: moe-kernel-config with target=cpu.
void addCpuConfigStage(mlir::OpPassManager &pm,
                       const CpuPipelineOptions &options);
/// Stage 2: convert-moe-to-loops, then canonicalize and cse.
void addCpuLoopsStage(mlir::OpPassManager &pm);
/// Stage 3: polynomial math, then scf/vector/math/memref/arith/func to LLVM.
void addCpuLLVMStage(mlir::OpPassManager &pm);

/// Registers `moe-cpu-to-llvm` (all three stages) for moegen-opt.
void registerCpuPipeline();

} // namespace moegen::cpu

#endif // MOEGEN_COMPILER_BACKEND_CPU_CPUPIPELINE_H
