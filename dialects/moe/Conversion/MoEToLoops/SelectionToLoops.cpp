//===- SelectionToLoops.cpp - add_bias, group_mask, topk on a row ---------===//
//
// Top-k is k passes of a vectorized arg-max under the total order of
// docs/semantics.md (larger key first, then lower expert id): pass j picks
// the best key that comes strictly after pick j-1 in that order. It needs
// no scratch and no mutation of the keys, handles -inf keys (masked groups)
// like any other, and never picks a NaN key; an id that is not in range
// (no key was eligible, only possible for invalid input) becomes 0.
//
//===----------------------------------------------------------------------===//

#include "dialects/moe/Conversion/MoEToLoops/RowCodegen.h"

#include "mlir/Dialect/Math/IR/Math.h"
#include "llvm/ADT/TypeSwitch.h"

#include <limits>

namespace mlir::moe::loops {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int64_t kNoId = std::numeric_limits<int32_t>::max();

LogicalResult lowerAddBias(AddBiasOp op, RowCodegen &cg) {
  RowRef scores = cg.rowOf(op.getScores());
  RowRef bias = cg.rowOf(op.getBias());
  RowRef keys = cg.newRow(op.getKeys());
  OpBuilder &b = cg.b;
  cg.forEachChunk(scores.size, {}, [&](Value e0, int64_t valid, ValueRange) {
    Value s = cg.loadChunk(scores, e0, valid, cg.f32(0.0));
    Value c = cg.loadChunk(bias, e0, valid, cg.f32(0.0));
    cg.storeChunk(b.create<arith::AddFOp>(cg.loc, s, c), keys, e0, valid);
    return SmallVector<Value>{};
  });
  return success();
}

/// `(value, id)` comes after `(prevValue, prevId)` in the selection order.
Value comesAfter(OpBuilder &b, Location loc, Value value, Value id,
                 Value prevValue, Value prevId) {
  Value smaller =
      b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OLT, value, prevValue);
  Value equal =
      b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OEQ, value, prevValue);
  Value laterId =
      b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::sgt, id, prevId);
  return b.create<arith::OrIOp>(loc, smaller,
                                b.create<arith::AndIOp>(loc, equal, laterId));
}

/// `(value, id)` comes before `(bestValue, bestId)`.
Value comesBefore(OpBuilder &b, Location loc, Value value, Value id,
                  Value bestValue, Value bestId) {
  Value larger = b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OGT, value,
                                         bestValue);
  Value equal =
      b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OEQ, value, bestValue);
  Value lowerId =
      b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::slt, id, bestId);
  return b.create<arith::OrIOp>(loc, larger,
                                b.create<arith::AndIOp>(loc, equal, lowerId));
}

/// Emits the k best (key, id) pairs of `keys` (n valid entries) in order,
/// calling `emitPick(j, id)` for each; the picks are in range [0, n).
void emitTopK(RowCodegen &cg, const RowRef &keys, int64_t n, int64_t k,
              function_ref<void(Value j, Value id)> emitPick) {
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  Value bound = cg.splat(cg.i32(n));
  // Before the first pick, everything comes after (+inf, -1).
  cg.forLoop(
      0, k, {cg.f32(kInf), cg.i32(-1)},
      [&](Value j, ValueRange previous) -> SmallVector<Value> {
        Value prevValue = cg.splat(previous[0]);
        Value prevId = cg.splat(previous[1]);
        SmallVector<Value> best = cg.forEachChunk(
            n, {cg.splat(cg.f32(-kInf)), cg.splat(cg.i32(kNoId))},
            [&](Value e0, int64_t valid, ValueRange iter) -> SmallVector<Value> {
              Value value = cg.loadChunk(keys, e0, valid, cg.f32(-kInf));
              Value ids = cg.laneIds(e0);
              Value eligible = b.create<arith::AndIOp>(
                  loc,
                  b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::slt, ids,
                                          bound),
                  comesAfter(b, loc, value, ids, prevValue, prevId));
              Value better = b.create<arith::AndIOp>(
                  loc, eligible,
                  comesBefore(b, loc, value, ids, iter[0], iter[1]));
              return {b.create<arith::SelectOp>(loc, better, value, iter[0]),
                      b.create<arith::SelectOp>(loc, better, ids, iter[1])};
            });
        // Across lanes: the largest value, then the lowest id holding it.
        Value bestValue = b.create<vector::ReductionOp>(
            loc, vector::CombiningKind::MAXIMUMF, best[0]);
        Value holders = b.create<arith::CmpFOp>(
            loc, arith::CmpFPredicate::OEQ, best[0], cg.splat(bestValue));
        Value candidates = b.create<arith::SelectOp>(
            loc, holders, best[1], cg.splat(cg.i32(kNoId)));
        Value bestId = b.create<vector::ReductionOp>(
            loc, vector::CombiningKind::MINSI, candidates);
        emitPick(j, cg.safeId(bestId, n));
        return {bestValue, bestId};
      });
}

LogicalResult lowerTopK(TopKOp op, RowCodegen &cg) {
  RowRef keys = cg.rowOf(op.getKeys());
  RowRef ids = cg.newRow(op.getIds());
  emitTopK(cg, keys, keys.size, op.getK(),
           [&](Value j, Value id) { cg.store(id, ids, j); });
  return success();
}

/// Scores the groups, keeps the best `keep` (ties to the lower group) and
/// copies the keys of kept groups, -inf elsewhere. Scalar: groups are
/// contiguous runs of E / G experts that need not align with vector chunks.
LogicalResult lowerGroupMask(GroupMaskOp op, RowCodegen &cg) {
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  RowRef keys = cg.rowOf(op.getKeys());
  RowRef masked = cg.newRow(op.getMasked());
  const int64_t groups = op.getGroups();
  const int64_t perGroup = keys.size / groups;
  const bool top2 = op.getGroupScore() == GroupScoreKind::top2_sum;

  // Group scores live in a padded stack row so emitTopK can rank them.
  RowRef groupScores = cg.allocRow(b.getF32Type(), groups);
  RowRef kept = cg.allocRow(b.getI1Type(), groups);

  cg.forLoop(0, groups, {}, [&](Value g, ValueRange) {
    Value first = b.create<arith::MulIOp>(loc, g, cg.index(perGroup));
    // The two largest keys of the group (the second is -inf for a group of
    // one, where top2_sum degenerates to the largest).
    SmallVector<Value> top = cg.forLoop(
        0, perGroup, {cg.f32(-kInf), cg.f32(-kInf)},
        [&](Value i, ValueRange best) -> SmallVector<Value> {
          Value key = cg.load(keys, b.create<arith::AddIOp>(loc, first, i));
          Value newFirst = b.create<arith::CmpFOp>(
              loc, arith::CmpFPredicate::OGT, key, best[0]);
          Value second = b.create<arith::SelectOp>(
              loc, newFirst, best[0],
              b.create<arith::MaximumFOp>(loc, best[1], key));
          Value largest =
              b.create<arith::SelectOp>(loc, newFirst, key, best[0]);
          return {largest, second};
        });
    Value score = top[0];
    if (top2 && perGroup >= 2)
      score = b.create<arith::AddFOp>(loc, top[0], top[1]);
    cg.store(score, groupScores, g);
    cg.store(cg.boolean(false), kept, g);
    return SmallVector<Value>{};
  });

  emitTopK(cg, groupScores, groups, op.getKeep(), [&](Value, Value group) {
    cg.store(cg.boolean(true), kept,
             b.create<arith::IndexCastOp>(loc, b.getIndexType(), group));
  });

  cg.forLoop(0, groups, {}, [&](Value g, ValueRange) {
    Value isKept = cg.load(kept, g);
    Value first = b.create<arith::MulIOp>(loc, g, cg.index(perGroup));
    cg.forLoop(0, perGroup, {}, [&](Value i, ValueRange) {
      Value e = b.create<arith::AddIOp>(loc, first, i);
      Value key = cg.load(keys, e);
      cg.store(b.create<arith::SelectOp>(loc, isKept, key, cg.f32(-kInf)),
               masked, e);
      return SmallVector<Value>{};
    });
    return SmallVector<Value>{};
  });
  return success();
}

} // namespace

LogicalResult lowerSelection(Operation *op, RowCodegen &cg) {
  return llvm::TypeSwitch<Operation *, LogicalResult>(op)
      .Case([&](AddBiasOp op) { return lowerAddBias(op, cg); })
      .Case([&](GroupMaskOp op) { return lowerGroupMask(op, cg); })
      .Case([&](TopKOp op) { return lowerTopK(op, cg); })
      .Default([](Operation *op) {
        return op->emitOpError("is not a selection op");
      });
}

} // namespace mlir::moe::loops
