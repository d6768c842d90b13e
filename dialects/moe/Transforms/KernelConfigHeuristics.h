//===- KernelConfigHeuristics.h - Schedule choices per shape ----*- C++ -*-===//
//
// The one place where kernel schedules are chosen. Rewrites read the chosen
// `moe.kernel_config` and never decide anything themselves, so an autotuner
// can sweep these choices without touching a lowering.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_DIALECT_MOE_TRANSFORMS_KERNELCONFIGHEURISTICS_H
#define MOEGEN_DIALECT_MOE_TRANSFORMS_KERNELCONFIGHEURISTICS_H

#include "dialects/moe/IR/MoEDialect.h"
#include "dialects/moe/IR/MoEEnums.h"

#include "mlir/IR/Block.h"

#include <cstdint>

namespace mlir::moe {

// KernelTarget and TopKMethod are the IR's enums (MoEEnums.td): the
// heuristics fill a #moe.kernel_config.

/// What the heuristics look at.
struct KernelShape {
  int64_t numExperts = 0;
  int64_t topK = 0;
  int64_t groups = 1;
  /// Bytes per logit (4 for f32, 2 for bf16/f16).
  int64_t logitBytes = 4;
  /// Permute and combine: a token's work is copying (or summing) rows of
  /// H elements of `rowElementBytes` each, H known only at run time.
  bool movesRows = false;
  int64_t rowElementBytes = 2;
  /// Every op of the entry has a token-lanes form (hasTokenLanesForm).
  bool tokenLanesForm = false;
};

/// The widest row the token-lanes layout unrolls over its experts.
inline constexpr int64_t kMaxTokenLanesExperts = 128;
/// Whether an entry can take the host's token-lanes layout (tokens across
/// the vector lanes, TokenLanesToLoops.cpp): its ops are scorings, biases,
/// one top-k, gathers, normalizations, scalings and a capture, over rows
/// of at most kMaxTokenLanesExperts experts.
bool hasTokenLanesForm(Block &body);

struct KernelConfig {
  KernelTarget target = KernelTarget::Cpu;
  int64_t vectorWidth = 1;
  int64_t tokensPerTask = 1;
  TopKMethod topkMethod = TopKMethod::ArgmaxPasses;
};

/// The default schedule for `shape` on `target`. On nvptx, `lanesPerToken`
/// > 0 pins the lanes per token (vector_width) and the rest follows it.
KernelConfig chooseKernelConfig(KernelTarget target, const KernelShape &shape,
                                int64_t lanesPerToken = 0);

} // namespace mlir::moe

#endif // MOEGEN_DIALECT_MOE_TRANSFORMS_KERNELCONFIGHEURISTICS_H
