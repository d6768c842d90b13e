//===- KernelConfig.cpp - Attach moe.kernel_config to entry points --------===//

#include "dialects/moe/IR/MoEAttrs.h"
#include "dialects/moe/IR/MoEDialect.h"
#include "dialects/moe/IR/MoEOps.h"
#include "dialects/moe/Transforms/KernelConfigHeuristics.h"
#include "dialects/moe/Transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "llvm/Support/MathExtras.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOEKERNELCONFIG
#include "dialects/moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

/// The shape the heuristics see, read from the entry's ops.
KernelShape shapeOf(func::FuncOp func) {
  KernelShape shape;
  shape.tokenLanesForm = func.getBody().hasOneBlock() &&
                         hasTokenLanesForm(func.getBody().front());
  func.walk([&](Operation *op) {
    if (auto score = dyn_cast<ScoreOp>(op)) {
      auto type = cast<RankedTensorType>(score.getLogits().getType());
      shape.numExperts = type.getDimSize(1);
      shape.logitBytes = type.getElementTypeBitWidth() / 8;
    } else if (auto topk = dyn_cast<TopKOp>(op)) {
      shape.topK = topk.getK();
    } else if (auto topp = dyn_cast<TopPOp>(op)) {
      shape.topK = topp.getK();
    } else if (auto choice = dyn_cast<ExpertChoiceOp>(op)) {
      shape.topK = choice.getK();
    } else if (auto mask = dyn_cast<GroupMaskOp>(op)) {
      shape.groups = mask.getGroups();
    } else if (auto dispatch = dyn_cast<DispatchOp>(op)) {
      shape.numExperts = dispatch.getExperts();
    } else if (isa<PermuteOp, CombineOp>(op)) {
      shape.movesRows = true;
      shape.rowElementBytes =
          cast<RankedTensorType>(op->getResult(0).getType())
              .getElementTypeBitWidth() /
          8;
    }
  });
  return shape;
}

struct MoEKernelConfigPass
    : public moe::impl::MoEKernelConfigBase<MoEKernelConfigPass> {
  using MoEKernelConfigBase::MoEKernelConfigBase;

  void runOnOperation() override {
    std::optional<KernelTarget> kernelTarget = symbolizeKernelTarget(target);
    if (!kernelTarget) {
      getOperation().emitError()
          << "moe-kernel-config: target = '" << target
          << "': must be cpu or nvptx";
      return signalPassFailure();
    }
    if (vectorWidth < 0 || vectorWidth > kMaxVectorWidth ||
        (vectorWidth > 0 && !llvm::isPowerOf2_64(vectorWidth))) {
      getOperation().emitError()
          << "moe-kernel-config: vector-width = "
          << static_cast<int64_t>(vectorWidth)
          << ": must be 0 (heuristic) or a power of two up to "
          << kMaxVectorWidth;
      return signalPassFailure();
    }
    if (tokensPerTask < 0) {
      getOperation().emitError()
          << "moe-kernel-config: tokens-per-task = "
          << static_cast<int64_t>(tokensPerTask)
          << ": must be 0 (heuristic) or positive";
      return signalPassFailure();
    }

    std::optional<TopKMethod> topkMethod;
    if (!topk.empty()) {
      topkMethod = symbolizeTopKMethod(topk.getValue());
      if (!topkMethod) {
        getOperation().emitError()
            << "moe-kernel-config: topk = '" << topk.getValue()
            << "': must be argmax_passes, insertion, lane_lists, lane_tree or "
               "token_lanes";
        return signalPassFailure();
      }
    }

    for (auto func : getOperation().getOps<func::FuncOp>()) {
      if (!func->hasAttr(kEntryAttrName))
        continue;
      KernelConfig config = chooseKernelConfig(
          *kernelTarget, shapeOf(func),
          *kernelTarget == KernelTarget::Nvptx ? int64_t(vectorWidth) : 0);
      if (vectorWidth > 0)
        config.vectorWidth = vectorWidth;
      if (tokensPerTask > 0) {
        config.tokensPerTask = tokensPerTask;
        // Pinned tokens per block with the heuristic's lanes per token: a
        // block must stay whole warps, which a warp per token always is.
        const int64_t threads = tokensPerTask * config.vectorWidth;
        if (config.target == KernelTarget::Nvptx && vectorWidth == 0 &&
            (threads % kWarpSize != 0 || threads > kMaxBlockThreads))
          config.vectorWidth = kWarpSize;
      }
      if (topkMethod)
        config.topkMethod = *topkMethod;
      auto attr = KernelConfigAttr::getChecked(
          [&] { return func.emitOpError(); }, func.getContext(),
          config.target, config.vectorWidth, config.tokensPerTask,
          config.topkMethod);
      if (!attr)
        return signalPassFailure();
      func->setAttr(kKernelConfigAttrName, attr);
    }
  }
};

} // namespace
