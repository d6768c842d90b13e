//===- ApproximateMath.cpp - Polynomial math for the host backend ---------===//

#include "dialects/moe/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Math/Transforms/Passes.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOEAPPROXIMATEMATH
#include "dialects/moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;

namespace {

struct MoEApproximateMathPass
    : public moe::impl::MoEApproximateMathBase<MoEApproximateMathPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    // No AVX2-specific intrinsics: the JIT targets whatever host it runs on.
    populateMathPolynomialApproximationPatterns(patterns);
    if (failed(applyPatternsAndFoldGreedily(getOperation(),
                                            std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace
