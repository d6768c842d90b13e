//===- DispatchToLoops.cpp - moe.dispatch as a counting sort --------------===//
//
// Counts per expert, their exclusive prefix sum, then a stable placement:
// visiting slots t*k+j in increasing order and appending each to its
// expert's bucket gives the (expert, slot) order in O(T*k + E). Ids outside
// [0, E) are reported and skipped, so no count or position is addressed by
// them. Counts double as the buckets' fill levels, so the kernel needs no
// scratch memory. This is the host's form, single-threaded; the GPU sorts
// in parallel over a whole grid (ParallelDispatchToLoops.cpp).
//
//===----------------------------------------------------------------------===//

#include "dialects/moe/Conversion/MoEToLoops/RowCodegen.h"

namespace mlir::moe::loops {

LogicalResult lowerDispatch(DispatchOp op, RowCodegen &cg, Value ids,
                            ValueRange outputs) {
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  Value counts = outputs[0], offsets = outputs[1], sortedSlots = outputs[2],
        slotPositions = outputs[3];
  const int64_t numExperts = op.getExperts();
  const int64_t k = cast<MemRefType>(ids.getType()).getDimSize(1);
  Value numTokens = b.create<memref::DimOp>(loc, ids, 0);
  Value bound = cg.i32(numExperts);

  auto asIndex = [&](Value v) -> Value {
    return b.create<arith::IndexCastOp>(loc, b.getIndexType(), v);
  };
  // Calls body(slot, expert index) for every valid id, in slot order.
  auto forEachSlot = [&](function_ref<void(Value, Value)> body) {
    cg.forLoop(cg.index(0), numTokens, {}, [&](Value t, ValueRange) {
      cg.token = t;
      cg.forLoop(0, k, {}, [&](Value j, ValueRange) {
        Value id = b.create<memref::LoadOp>(loc, ids, ValueRange{t, j});
        Value valid = cg.inRange(id, bound);
        cg.ifThen(b.create<arith::XOrIOp>(loc, valid, cg.boolean(true)), [&] {
          cg.recordError(KernelErrorCode::DispatchIdOutOfRange, t, j, id);
        });
        cg.ifThen(valid, [&] {
          Value slot = b.create<arith::AddIOp>(
              loc, b.create<arith::MulIOp>(loc, t, cg.index(k)), j);
          body(slot, asIndex(id));
        });
        return SmallVector<Value>{};
      });
      return SmallVector<Value>{};
    });
  };

  cg.forLoop(0, numExperts, {}, [&](Value e, ValueRange) {
    b.create<memref::StoreOp>(loc, cg.i32(0), counts, e);
    return SmallVector<Value>{};
  });
  forEachSlot([&](Value, Value e) {
    Value count = b.create<memref::LoadOp>(loc, counts, e);
    b.create<memref::StoreOp>(
        loc, b.create<arith::AddIOp>(loc, count, cg.i32(1)), counts, e);
  });

  // Exclusive prefix sum: offsets[e + 1] = offsets[e] + counts[e].
  b.create<memref::StoreOp>(loc, cg.i32(0), offsets, cg.index(0));
  cg.forLoop(0, numExperts, {cg.i32(0)},
             [&](Value e, ValueRange running) -> SmallVector<Value> {
               Value next = b.create<arith::AddIOp>(
                   loc, running[0], b.create<memref::LoadOp>(loc, counts, e));
               Value nextExpert = b.create<arith::AddIOp>(loc, e, cg.index(1));
               b.create<memref::StoreOp>(loc, next, offsets, nextExpert);
               return {next};
             });

  // Placement, with counts[e] as the fill level of expert e's bucket: it
  // restarts from 0 and ends at the count again, so no scratch buffer is
  // needed.
  cg.forLoop(0, numExperts, {}, [&](Value e, ValueRange) {
    b.create<memref::StoreOp>(loc, cg.i32(0), counts, e);
    return SmallVector<Value>{};
  });
  forEachSlot([&](Value slot, Value e) {
    Value filled = b.create<memref::LoadOp>(loc, counts, e);
    b.create<memref::StoreOp>(
        loc, b.create<arith::AddIOp>(loc, filled, cg.i32(1)), counts, e);
    Value position = b.create<arith::AddIOp>(
        loc, b.create<memref::LoadOp>(loc, offsets, e), filled);
    b.create<memref::StoreOp>(
        loc, b.create<arith::IndexCastOp>(loc, b.getI32Type(), slot),
        sortedSlots, asIndex(position));
    b.create<memref::StoreOp>(loc, position, slotPositions, slot);
  });
  return success();
}

} // namespace mlir::moe::loops
