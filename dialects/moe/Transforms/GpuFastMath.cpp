//===- GpuFastMath.cpp - afn exp and division as PTX approximations -------===//
//
// See the pass description in Passes.td. The scoring lowering decides which
// ops may be approximate (it knows their ranges); this pass only maps them.
//
//===----------------------------------------------------------------------===//

#include "dialects/moe/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/IR/Builders.h"

#include <numbers>

namespace mlir::moe {
#define GEN_PASS_DEF_MOEGPUFASTMATH
#include "dialects/moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;

namespace {

bool isApproximateF32(Operation *op, arith::FastMathFlags flags) {
  return op->getResult(0).getType().isF32() &&
         arith::bitEnumContainsAll(flags, arith::FastMathFlags::afn);
}

/// A call of an intrinsic whose result has its first argument's type. As
/// a call, not llvm.intr.*: convert-gpu-to-nvvm marks the math intrinsics
/// illegal so that they go to libdevice.
Value callIntrinsic(OpBuilder &b, Location loc, StringRef name,
                    ValueRange args) {
  return b
      .create<LLVM::CallIntrinsicOp>(loc, TypeRange{args[0].getType()},
                                     b.getStringAttr(name), args)
      .getResult(0);
}

struct MoEGpuFastMathPass
    : public moe::impl::MoEGpuFastMathBase<MoEGpuFastMathPass> {
  void runOnOperation() override {
    SmallVector<Operation *> ops;
    getOperation()->walk([&](Operation *op) {
      if (auto exp = dyn_cast<math::ExpOp>(op);
          exp && isApproximateF32(op, exp.getFastmath()))
        ops.push_back(op);
      else if (auto div = dyn_cast<arith::DivFOp>(op);
               div && isApproximateF32(op, div.getFastmath()))
        ops.push_back(op);
      else if (isa<math::AbsFOp, math::FmaOp, math::CeilOp, math::FloorOp>(
                   op) &&
               isa<Float32Type, Float64Type>(op->getResult(0).getType()))
        ops.push_back(op);
    });
    OpBuilder b(&getContext());
    for (Operation *op : ops) {
      b.setInsertionPoint(op);
      Location loc = op->getLoc();
      Value result;
      if (isa<math::AbsFOp, math::FmaOp, math::CeilOp, math::FloorOp>(op)) {
        // Exact either way; LLVM's intrinsic keeps libdevice out (and
        // convert-gpu-to-nvvm has no pattern for math.fma at all).
        const char *family = isa<math::AbsFOp>(op)   ? "llvm.fabs."
                             : isa<math::FmaOp>(op)  ? "llvm.fma."
                             : isa<math::CeilOp>(op) ? "llvm.ceil."
                                                     : "llvm.floor.";
        std::string name =
            std::string(family) +
            (op->getResult(0).getType().isF32() ? "f32" : "f64");
        result = callIntrinsic(b, loc, name, op->getOperands());
      } else if (auto exp = dyn_cast<math::ExpOp>(op)) {
        // exp(x) = 2^(x log2 e), as CUDA's __expf.
        Value log2e = b.create<arith::ConstantOp>(
            loc, b.getF32FloatAttr(std::numbers::log2e_v<float>));
        Value scaled = b.create<arith::MulFOp>(loc, exp.getOperand(), log2e);
        result = callIntrinsic(b, loc, "llvm.nvvm.ex2.approx.f", {scaled});
      } else {
        // The divisor is in [1, 2^126] (the pass's contract), so its
        // reciprocal is a normal number and flushing subnormals changes
        // nothing: rcp.approx.ftz is one MUFU.RCP, where div.approx adds a
        // range fix for tiny divisors.
        auto div = cast<arith::DivFOp>(op);
        result = callIntrinsic(b, loc, "llvm.nvvm.rcp.approx.ftz.f",
                               {div.getRhs()});
        auto one = div.getLhs().getDefiningOp<arith::ConstantOp>();
        auto unit = one ? dyn_cast<FloatAttr>(one.getValue()) : nullptr;
        if (!unit || !unit.getValue().isExactlyValue(1.0))
          result = b.create<arith::MulFOp>(loc, div.getLhs(), result);
      }
      op->getResult(0).replaceAllUsesWith(result);
      op->erase();
    }
  }
};

} // namespace
