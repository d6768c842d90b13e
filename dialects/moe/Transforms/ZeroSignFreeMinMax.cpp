//===- ZeroSignFreeMinMax.cpp - nsz on the host's f32 maxima and minima ---===//

#include "dialects/moe/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/IR/BuiltinOps.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOEZEROSIGNFREEMINMAX
#include "dialects/moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;

namespace {

struct MoEZeroSignFreeMinMaxPass
    : public moe::impl::MoEZeroSignFreeMinMaxBase<MoEZeroSignFreeMinMaxPass> {
  void runOnOperation() override {
    getOperation()->walk([](Operation *op) {
      auto fastMath = dyn_cast<arith::ArithFastMathInterface>(op);
      if (!fastMath || !isa<arith::MaximumFOp, arith::MinimumFOp>(op))
        return;
      arith::FastMathFlags flags =
          fastMath.getFastMathFlagsAttr().getValue() | arith::FastMathFlags::nsz;
      op->setAttr(fastMath.getFastMathAttrName(),
                  arith::FastMathFlagsAttr::get(op->getContext(), flags));
    });
  }
};

} // namespace
