//===- KernelConfigHeuristics.cpp - Schedule choices per shape ------------===//

#include "dialects/moe/Transforms/KernelConfigHeuristics.h"

#include <algorithm>

namespace mlir::moe {

KernelConfig chooseKernelConfig(KernelTarget target, const KernelShape &shape) {
  KernelConfig config;
  config.target = target;
  if (target == KernelTarget::Nvptx) {
    // One warp per token: the expert dimension is spread over the 32 lanes
    // (vector_width is the warp size), so reductions are warp shuffles.
    // A block holds `tokens_per_task` warps; each warp's rows live in
    // dynamic shared memory, so large rows get fewer warps per block to
    // keep the block's share under the 48 KiB every arch grants unasked.
    config.vectorWidth = kWarpSize;
    const int64_t rowBytes = std::max<int64_t>(1, shape.numExperts) * 4;
    config.tokensPerTask =
        std::clamp<int64_t>((48 * 1024) / (4 * rowBytes), 1, 4);
    // Rows of at most 16 chunks (E <= 512) sort each lane's elements in
    // registers once and merge the lanes' heads k times; wider rows make
    // k arg-max passes over the row.
    config.topkMethod = (shape.numExperts + kWarpSize - 1) / kWarpSize <=
                                kMaxLaneListChunks
                            ? TopKMethod::LaneLists
                            : TopKMethod::ArgmaxPasses;
    return config;
  }
  // Host: 8 f32 lanes fill an AVX2 register; tiny expert counts would pay
  // for a masked tail on every row, so they get the narrowest power of two
  // that covers them.
  int64_t width = 8;
  while (width > 1 && width / 2 >= shape.numExperts)
    width /= 2;
  config.vectorWidth = width;
  // A task should stream a few hundred KiB of logits: large enough to hide
  // the thread-pool hand-off (microseconds), small enough to balance.
  const int64_t bytesPerToken =
      std::max<int64_t>(1, shape.numExperts * shape.logitBytes);
  config.tokensPerTask =
      std::clamp<int64_t>((256 * 1024) / bytesPerToken, 16, 4096);
  // k branch-free passes pipeline well while a row is a few dozen chunks;
  // past that, skipping the chunks that cannot enter the top k wins.
  // Measured on a 2-core AVX2 host, T = 8192, softmax (docs/benchmarks.md):
  // E = 256, k = 8: passes 1.3-1.7x faster; E = 1024, k = 8: insertion
  // 1.1-1.25x; E = 4096, k = 8: insertion 1.7-2x.
  config.topkMethod = shape.numExperts >= 1024 ? TopKMethod::Insertion
                                               : TopKMethod::ArgmaxPasses;
  return config;
}

} // namespace mlir::moe
