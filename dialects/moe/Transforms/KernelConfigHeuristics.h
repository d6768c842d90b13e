//===- KernelConfigHeuristics.h - Schedule choices per shape ----*- C++ -*-===//
//
// The one place where kernel schedules are chosen. Rewrites read the chosen
// `moe.kernel_config` and never decide anything themselves, so an autotuner
// can sweep these choices without touching a lowering.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_DIALECT_MOE_TRANSFORMS_KERNELCONFIGHEURISTICS_H
#define MOEGEN_DIALECT_MOE_TRANSFORMS_KERNELCONFIGHEURISTICS_H

#include <cstdint>
#include <optional>
#include <string_view>

namespace mlir::moe {

enum class KernelTarget { Cpu, Nvptx };

std::optional<KernelTarget> parseKernelTarget(std::string_view text);
std::string_view toString(KernelTarget target);

/// How a row's top-k is found. Both give the same ids (the total order of
/// docs/semantics.md); they differ in cost.
enum class TopKMethod {
  /// k passes of a vectorized arg-max, each after the previous pick:
  /// O(k * E / lanes), branch-free (the GPU's warp arg-max is this).
  ArgmaxPasses,
  /// One pass in expert order that keeps the best k in a sorted list and
  /// looks at a chunk lane by lane only when one of its keys beats the k-th:
  /// about O(E / lanes + k log(E / k) * k) on typical rows.
  Insertion,
};

std::optional<TopKMethod> parseTopKMethod(std::string_view text);
std::string_view toString(TopKMethod method);

/// What the heuristics look at.
struct KernelShape {
  int64_t numExperts = 0;
  int64_t topK = 0;
  int64_t groups = 1;
  /// Bytes per logit (4 for f32, 2 for bf16/f16).
  int64_t logitBytes = 4;
};

struct KernelConfig {
  KernelTarget target = KernelTarget::Cpu;
  int64_t vectorWidth = 1;
  int64_t tokensPerTask = 1;
  TopKMethod topkMethod = TopKMethod::ArgmaxPasses;
};

/// Lanes of an NVIDIA warp: the vector width of every nvptx kernel.
inline constexpr int64_t kWarpSize = 32;

/// Largest vector width the lowerings accept.
inline constexpr int64_t kMaxVectorWidth = 64;

/// The default schedule for `shape` on `target`.
KernelConfig chooseKernelConfig(KernelTarget target, const KernelShape &shape);

} // namespace mlir::moe

#endif // MOEGEN_DIALECT_MOE_TRANSFORMS_KERNELCONFIGHEURISTICS_H
