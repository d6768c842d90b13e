//===- UpdateBiasToLoops.cpp - moe.update_bias over the experts -----------===//
//
// Auxiliary-loss-free balancing's step: the total load, then one pass over
// the experts that validates each expert's count and bias and moves the
// bias by the rate, signed by the integer comparison of the mean load with
// the expert's (sum - E * count, in i64, so no rounding decides a sign).
// On the host one thread walks the experts; on the GPU one warp does, each
// lane summing the (few kilobytes of) loads itself and then updating every
// 32nd expert.
//
//===----------------------------------------------------------------------===//

#include "dialects/moe/Conversion/MoEToLoops/RowCodegen.h"

#include "abi/KernelAbi.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

#include <limits>

namespace mlir::moe::loops {

LogicalResult lowerUpdateBias(UpdateBiasOp op, RowCodegen &cg, Value bias,
                              Value counts, Value updated) {
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  const int64_t numExperts = cast<MemRefType>(bias.getType()).getDimSize(0);
  const double inf = std::numeric_limits<double>::infinity();
  cg.token = cg.index(0);

  SmallVector<Value> total = cg.forLoop(
      0, numExperts, {cg.i64(0)}, [&](Value e, ValueRange sum) {
        Value count = b.create<memref::LoadOp>(loc, counts, ValueRange{e});
        return SmallVector<Value>{
            b.create<arith::AddIOp>(loc, sum[0], cg.toI64(count))};
      });

  const bool gpu = cg.target == KernelTarget::Nvptx;
  Value first = gpu ? b.create<gpu::ThreadIdOp>(loc, gpu::Dimension::x)
                          .getResult()
                    : cg.index(0);
  Value step = cg.index(gpu ? moegen::abi::kUpdateBiasBlockThreads : 1);
  Value rate = cg.f32(op.getRate().convertToDouble());
  Value minusRate = cg.f32(-op.getRate().convertToDouble());
  b.create<scf::ForOp>(
      loc, first, cg.index(numExperts), step, ValueRange{},
      [&](OpBuilder &nested, Location, Value e, ValueRange) {
        OpBuilder::InsertionGuard guard(b);
        b.setInsertionPointToStart(nested.getInsertionBlock());
        Value count = b.create<memref::LoadOp>(loc, counts, ValueRange{e});
        Value old = b.create<memref::LoadOp>(loc, bias, ValueRange{e});
        Value e64 = cg.toI64(e);
        Value finite = b.create<arith::CmpFOp>(
            loc, arith::CmpFPredicate::OLT, b.create<math::AbsFOp>(loc, old),
            cg.f32(inf));
        cg.ifThen(b.create<arith::XOrIOp>(loc, finite, cg.boolean(true)), [&] {
          Value bits = b.create<arith::ExtUIOp>(
              loc, b.getI64Type(),
              b.create<arith::BitcastOp>(loc, b.getI32Type(), old));
          cg.recordError(KernelErrorCode::NonFiniteBiasToUpdate, e64, cg.i64(0),
                         bits, /*eachThread=*/gpu);
        });
        cg.ifThen(b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::slt, count,
                                          cg.i32(0)),
                  [&] {
                    cg.recordError(KernelErrorCode::NegativeExpertCount, e64,
                                   cg.i64(0), cg.toI64(count),
                                   /*eachThread=*/gpu);
                  });
        // sign(mean - count) = sign(sum - E * count).
        Value difference = b.create<arith::SubIOp>(
            loc, total[0],
            b.create<arith::MulIOp>(loc, cg.i64(numExperts), cg.toI64(count)));
        Value idler = b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::sgt,
                                              difference, cg.i64(0));
        Value busier = b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::slt,
                                               difference, cg.i64(0));
        Value delta = b.create<arith::SelectOp>(
            loc, idler, rate,
            b.create<arith::SelectOp>(loc, busier, minusRate, cg.f32(0.0)));
        b.create<memref::StoreOp>(loc, b.create<arith::AddFOp>(loc, old, delta),
                                  updated, ValueRange{e});
        b.create<scf::YieldOp>(loc);
      });
  return success();
}

} // namespace mlir::moe::loops
