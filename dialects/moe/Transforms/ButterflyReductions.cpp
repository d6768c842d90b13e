//===- ButterflyReductions.cpp - f32 reductions in log2(width) steps ------===//

#include "dialects/moe/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"
#include "llvm/Support/MathExtras.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOEBUTTERFLYREDUCTIONS
#include "dialects/moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;

namespace {

struct ButterflyReduction : OpRewritePattern<vector::ReductionOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(vector::ReductionOp op,
                                PatternRewriter &rewriter) const override {
    const vector::CombiningKind kind = op.getKind();
    VectorType type = op.getSourceVectorType();
    const int64_t lanes = type.getRank() == 1 ? type.getDimSize(0) : 0;
    if ((kind != vector::CombiningKind::MAXIMUMF &&
         kind != vector::CombiningKind::ADD) ||
        !type.getElementType().isF32() || type.isScalable() || lanes < 2 ||
        !llvm::isPowerOf2_64(uint64_t(lanes)) || op.getAcc())
      return rewriter.notifyMatchFailure(op, "not an f32 max or sum of 2^n "
                                             "lanes without accumulator");
    Location loc = op.getLoc();
    Value chunk = op.getVector();
    for (int64_t distance = lanes / 2; distance >= 1; distance /= 2) {
      SmallVector<int64_t> partner;
      for (int64_t i = 0; i < lanes; ++i)
        partner.push_back(i ^ distance);
      Value other =
          rewriter.create<vector::ShuffleOp>(loc, chunk, chunk, partner);
      chunk = kind == vector::CombiningKind::ADD
                  ? rewriter.create<arith::AddFOp>(loc, chunk, other)
                        .getResult()
                  : rewriter.create<arith::MaximumFOp>(loc, chunk, other)
                        .getResult();
    }
    rewriter.replaceOpWithNewOp<vector::ExtractOp>(op, chunk,
                                                   ArrayRef<int64_t>{0});
    return success();
  }
};

struct MoEButterflyReductionsPass
    : public moe::impl::MoEButterflyReductionsBase<MoEButterflyReductionsPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<ButterflyReduction>(&getContext());
    if (failed(applyPatternsAndFoldGreedily(getOperation(),
                                            std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace
