//===- DispatchToLoops.cpp - moe.dispatch as a counting sort --------------===//
//
// Counts per expert, their exclusive prefix sum, then a stable placement:
// visiting slots t*k+j in increasing order and appending each to its
// expert's bucket gives the (expert, slot) order in O(T*k + E). Ids outside
// [0, E) are reported and skipped, so no count or position is addressed by
// them. Counts double as the buckets' fill levels, so the kernel needs no
// scratch memory. With `unused_slots` an id of -1 is an unused slot (a
// top-p router's): counted nowhere, its position -1, and the positions
// past the used slots hold -1. With a capacity, a slot whose place in its
// expert's bucket is C or more is dropped the same way (position -1), and
// the offsets sum the capped counts. This is the host's form, single-threaded; the GPU sorts
// in parallel over a whole grid (ParallelDispatchToLoops.cpp).
//
//===----------------------------------------------------------------------===//

#include "dialects/moe/Conversion/MoEToLoops/RowCodegen.h"

#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

namespace mlir::moe::loops {

Value dispatchCapacity(RowCodegen &cg, Value numTokens, int64_t k,
                       int64_t numExperts, double factor) {
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  Value slots = b.create<arith::MulIOp>(loc, numTokens, cg.index(k));
  Value slots64 = b.create<arith::IndexCastOp>(loc, b.getI64Type(), slots);
  Value wanted = b.create<arith::DivFOp>(
      loc,
      b.create<arith::MulFOp>(
          loc, b.create<arith::ConstantOp>(loc, b.getF64FloatAttr(factor)),
          b.create<arith::SIToFPOp>(loc, b.getF64Type(), slots64)),
      b.create<arith::ConstantOp>(loc, b.getF64FloatAttr(double(numExperts))));
  Value ceiled = b.create<math::CeilOp>(loc, wanted);
  // No expert holds more than every slot: the clamp also keeps a huge
  // factor's capacity in range of i32.
  Value limit = b.create<arith::SIToFPOp>(loc, b.getF64Type(), slots64);
  Value capped = b.create<arith::MinimumFOp>(loc, ceiled, limit);
  return b.create<arith::FPToSIOp>(loc, b.getI32Type(), capped);
}

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
  const bool unusedSlots = op.getUnusedSlots();
  std::optional<APFloat> factor = op.getCapacityFactor();
  Value capacity = factor ? dispatchCapacity(cg, numTokens, k, numExperts,
                                             factor->convertToDouble())
                          : Value();
  auto capped = [&](Value count) -> Value {
    return capacity ? b.create<arith::MinSIOp>(loc, count, capacity).getResult()
                    : count;
  };
  // Calls body(slot, expert index) for every valid id, in slot order, and
  // unusedBody(slot) for every unused one.
  auto forEachSlot = [&](function_ref<void(Value, Value)> body,
                         function_ref<void(Value)> unusedBody = nullptr) {
    cg.forLoop(cg.index(0), numTokens, {}, [&](Value t, ValueRange) {
      cg.token = t;
      cg.forLoop(0, k, {}, [&](Value j, ValueRange) {
        Value id = b.create<memref::LoadOp>(loc, ids, ValueRange{t, j});
        Value valid = cg.inRange(id, bound);
        Value unused = unusedSlots ? b.create<arith::CmpIOp>(
                                         loc, arith::CmpIPredicate::eq, id,
                                         cg.i32(-1))
                                         .getResult()
                                   : cg.boolean(false);
        cg.ifThen(b.create<arith::XOrIOp>(
                      loc, b.create<arith::OrIOp>(loc, valid, unused),
                      cg.boolean(true)),
                  [&] {
                    cg.recordError(KernelErrorCode::DispatchIdOutOfRange, t, j,
                                   id);
                  });
        auto slot = [&]() -> Value {
          return b.create<arith::AddIOp>(
              loc, b.create<arith::MulIOp>(loc, t, cg.index(k)), j);
        };
        cg.ifThen(valid, [&] {
          Value s = slot();
          body(s, asIndex(id));
        });
        if (unusedSlots && unusedBody)
          cg.ifThen(unused, [&] { unusedBody(slot()); });
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
                   loc, running[0],
                   capped(b.create<memref::LoadOp>(loc, counts, e)));
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
    auto place = [&] {
      Value position = b.create<arith::AddIOp>(
          loc, b.create<memref::LoadOp>(loc, offsets, e), filled);
      b.create<memref::StoreOp>(
          loc, b.create<arith::IndexCastOp>(loc, b.getI32Type(), slot),
          sortedSlots, asIndex(position));
      b.create<memref::StoreOp>(loc, position, slotPositions, slot);
    };
    if (!capacity)
      return place();
    Value fits = b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::slt,
                                         filled, capacity);
    auto ifFits = b.create<scf::IfOp>(loc, fits, /*withElseRegion=*/true);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(ifFits.thenBlock());
    place();
    b.setInsertionPointToStart(ifFits.elseBlock());
    b.create<memref::StoreOp>(loc, cg.i32(-1), slotPositions, slot);
  }, [&](Value slot) {
    b.create<memref::StoreOp>(loc, cg.i32(-1), slotPositions, slot);
  });
  if (capacity)
    cg.forLoop(0, numExperts, {}, [&](Value e, ValueRange) {
      b.create<memref::StoreOp>(
          loc, capped(b.create<memref::LoadOp>(loc, counts, e)), counts, e);
      return SmallVector<Value>{};
    });
  if (unusedSlots || capacity) {
    // The positions past the used slots: -1.
    Value used = asIndex(
        b.create<memref::LoadOp>(loc, offsets, cg.index(numExperts)));
    cg.forLoop(used, b.create<arith::MulIOp>(loc, numTokens, cg.index(k)), {},
               [&](Value p, ValueRange) {
                 b.create<memref::StoreOp>(loc, cg.i32(-1), sortedSlots, p);
                 return SmallVector<Value>{};
               });
  }
  return success();
}

} // namespace mlir::moe::loops
