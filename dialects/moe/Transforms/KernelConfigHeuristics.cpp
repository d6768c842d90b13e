//===- KernelConfigHeuristics.cpp - Schedule choices per shape ------------===//

#include "dialects/moe/Transforms/KernelConfigHeuristics.h"
#include "dialects/moe/IR/MoEOps.h"

#include "llvm/Support/MathExtras.h"

#include <algorithm>

namespace mlir::moe {

KernelConfig chooseKernelConfig(KernelTarget target, const KernelShape &shape,
                                int64_t lanesPerToken) {
  KernelConfig config;
  config.target = target;
  if (shape.movesRows) {
    const int64_t bytes = std::max<int64_t>(1, shape.rowElementBytes);
    if (target == KernelTarget::Nvptx) {
      // Rows are thousands of elements: a whole warp per token, each load
      // a warp-wide coalesced run of the row, four tokens (warps) a block.
      config.vectorWidth = lanesPerToken > 0 ? lanesPerToken : kWarpSize;
      config.tokensPerTask =
          std::max<int64_t>(1, 4 * kWarpSize / config.vectorWidth);
      return config;
    }
    // Host: 64-byte chunks (two AVX2 registers per row and chunk; measured
    // 5-15% faster than 32-byte ones at T = 4096, H = 2048, docs/
    // benchmarks.md). The runtime sizes the tasks from H (CpuRouter), which
    // this step does not know; 64 tokens is the fallback.
    config.vectorWidth = std::clamp<int64_t>(64 / bytes, 1, kMaxVectorWidth);
    config.tokensPerTask = 64;
    return config;
  }
  if (target == KernelTarget::Nvptx) {
    // A token owns a segment of `lanes` lanes of a warp (vector_width), so
    // reductions are shuffles within the segment and a warp routes
    // 32 / lanes tokens at once. Fewer lanes per token share the per-token
    // work (reductions, the top-k merge, scalar steps) among more tokens:
    // the smallest segment that keeps each lane's share of the row to at
    // most kMaxLaneListChunks elements (the register-sorted top-k) and
    // whose chunk loads still read 16 bytes of a row at once (4 f32 or 8
    // bf16 lanes; the other half of the 32-byte sector comes from L1 on
    // the next chunk) where the row is that wide. Fewer lanes would cut
    // instructions further (Mixtral on one lane per token) but split each
    // sector among more loads; the autotuner may weigh that on a device.
    const int64_t experts = std::max<int64_t>(1, shape.numExperts);
    // (A row narrower than a sector needs no more lanes than it has.)
    const int64_t sectorLanes = std::min<int64_t>(
        std::clamp<int64_t>(16 / std::max<int64_t>(1, shape.logitBytes), 1,
                            kWarpSize),
        int64_t(llvm::PowerOf2Ceil(uint64_t(experts))));
    const int64_t rowLanes = std::clamp<int64_t>(
        int64_t(llvm::PowerOf2Ceil(uint64_t(
            (experts + kMaxLaneListChunks - 1) / kMaxLaneListChunks))),
        1, kWarpSize);
    const int64_t lanes = lanesPerToken > 0
                              ? lanesPerToken
                              : std::max(sectorLanes, rowLanes);
    config.vectorWidth = lanes;
    // Each token's rows live in dynamic shared memory, so a block holds as
    // many tokens as keep its share under the 48 KiB every arch grants
    // unasked (a row of 4-byte elements counted four times), up to 4 warps;
    // at least one whole warp.
    const int64_t rowBytes = experts * 4;
    const int64_t tokensPerWarp = kWarpSize / lanes;
    const int64_t warps =
        std::clamp<int64_t>((48 * 1024) / (4 * rowBytes * tokensPerWarp), 1, 4);
    config.tokensPerTask = warps * tokensPerWarp;
    // Lane lists: rows of at most 16 chunks per lane sort each lane's
    // elements in registers once and merge the lanes' heads k times; wider
    // rows (E >= 1024 at a warp per token) stream the row twice, listing
    // only the keys above a bound from the lanes' maxima, instead of k
    // arg-max passes over it: 2.8-4.5x fewer warp-instructions per token
    // for E = 1024 to 4096 on sm_90 (static, docs/benchmarks.md).
    config.topkMethod = TopKMethod::LaneLists;
    // Up to 64 experts, a token per thread (the host's token-lanes layout
    // on a warp: W = 32 tokens a warp, each thread's row in registers, the
    // reductions over experts sequential in each thread) instead of a
    // segment per token: fewer warp-instructions per token (sm_90,
    // docs/benchmarks.md). Not where the lanes per token are pinned.
    if (shape.tokenLanesForm && shape.numExperts <= 64 && lanesPerToken == 0) {
      config.topkMethod = TopKMethod::TokenLanes;
      config.vectorWidth = kWarpSize;
      config.tokensPerTask = 4;
    }
    return config;
  }
  // Host: 8 f32 lanes fill an AVX2 register; tiny expert counts would pay
  // for a masked tail on every row, so they get the narrowest power of two
  // that covers them. Rows of 64 to 512 experts take 16 or 32 lanes, the
  // narrowest that keeps a row within kMaxLaneListChunks chunks, for lane
  // lists (below).
  int64_t width = 8;
  while (width > 1 && width / 2 >= shape.numExperts)
    width /= 2;
  const bool laneLists = shape.numExperts >= 64 && shape.numExperts <= 512;
  if (laneLists)
    width = shape.numExperts <= 16 * kMaxLaneListChunks ? 16 : 32;
  config.vectorWidth = width;
  // A task should stream a few hundred KiB of logits: large enough to hide
  // the thread-pool hand-off (microseconds), small enough to balance.
  const int64_t bytesPerToken =
      std::max<int64_t>(1, shape.numExperts * shape.logitBytes);
  config.tokensPerTask =
      std::clamp<int64_t>((256 * 1024) / bytesPerToken, 16, 4096);
  // Rows of 64 to 512 experts: each lane sorts its few elements once and
  // the lanes' heads are merged k times (lane lists), 2-3x faster than k
  // arg-max passes at width 8 on every such template (moegen autotune on a
  // 2-core AVX-512 host, T = 1 to 65536, docs/benchmarks.md). Otherwise k
  // branch-free passes pipeline well while a row is a few dozen chunks;
  // past that, skipping the chunks that cannot enter the top k wins
  // (2-core AVX2 host, T = 8192, softmax: E = 1024, k = 8: insertion
  // 1.1-1.25x; E = 4096: 1.7-2x).
  config.topkMethod = laneLists                  ? TopKMethod::LaneLists
                      : shape.numExperts >= 1024 ? TopKMethod::Insertion
                                                 : TopKMethod::ArgmaxPasses;
  // The lane lists merged by a bitonic tree across the lanes (log2(width)
  // levels) instead of k dependent rounds of two reductions: about three
  // times the instructions, but the host's route kernels wait on that
  // chain. Measured (2-core AVX-512 host, T = 65536, docs/benchmarks.md):
  // DeepSeek-V3 (16 lanes, k = 8) 1.14x, Qwen3 (16, 8) 1.04x; slower with
  // 32 lanes (Kimi-K2, five levels), with lists padded to a power of two
  // (k = 6, DeepSeek-V4) and even at k = 4 (gpt-oss).
  if (laneLists && width <= 16 && shape.topK >= 8 &&
      llvm::isPowerOf2_64(uint64_t(shape.topK)))
    config.topkMethod = TopKMethod::LaneTree;
  // Up to 64 experts a route is faster with 16 tokens across the lanes
  // than with its row in them: 2.2-4.5x for softmax top-8 at E = 16 to 64
  // and top-2 at E = 8 (moegen-bench-cpu --topk token_lanes, 2-core
  // AVX-512 host, docs/benchmarks.md); at E = 128 the lane lists and it
  // are within noise at large T, so the autotuner decides there.
  if (shape.tokenLanesForm && shape.numExperts <= 64) {
    config.topkMethod = TopKMethod::TokenLanes;
    config.vectorWidth = 16;
    config.tokensPerTask = std::max<int64_t>(16, config.tokensPerTask / 16 * 16);
  }
  return config;
}

bool hasTokenLanesForm(Block &body) {
  for (Operation &op : body.without_terminator()) {
    // A fused dispatch (moe-fuse-dispatch) runs after the token loop.
    if (isa<DispatchOp>(op))
      continue;
    if (!isa<ScoreOp, AddBiasOp, TopKOp, GatherOp, NormalizeOp, ScaleOp,
             CaptureOp>(op))
      return false;
    for (Value operand : op.getOperands())
      if (auto type = dyn_cast<RankedTensorType>(operand.getType()))
        if (type.getRank() == 2 && type.getDimSize(1) > kMaxTokenLanesExperts)
          return false;
  }
  return true;
}

} // namespace mlir::moe
