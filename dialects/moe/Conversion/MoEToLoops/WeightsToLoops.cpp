//===- WeightsToLoops.cpp - gather, normalize, scale, sparsemixer ---------===//
//
// Rows of k <= 64 weights: scalar loops, which LLVM unrolls or vectorizes
// as it sees fit. The gather re-checks its ids (unsigned compare against E)
// even though every selection op already produces valid ones, so that an
// entry point built by hand cannot read outside the scores either. An
// unused slot (id -1, moe.topp) weighs 0 in gather and sparsemixer.
//
//===----------------------------------------------------------------------===//

#include "dialects/moe/Conversion/MoEToLoops/RowCodegen.h"

#include "mlir/Dialect/Math/IR/Math.h"
#include "llvm/ADT/TypeSwitch.h"

#include <limits>

namespace mlir::moe::loops {

namespace {

/// Whether an id is the unused-slot sentinel -1 of moe.topp.
Value isUnused(RowCodegen &cg, Value id) {
  return cg.b.create<arith::CmpIOp>(cg.loc, arith::CmpIPredicate::eq, id,
                                    cg.i32(-1));
}

/// A gather from scores computed by need: a chunk of cg.width picks at a
/// time. On the host each pick is a scalar, as the selection stored it (a
/// chunk load of the narrower stores, or of a vector built from their
/// loads, which LLVM merges, waits for them to retire); on the GPU lane j
/// of the segment scores pick j and stores its own weight. An unused slot
/// (-1) weighs 0; an id out of range, reported by the selection, reads
/// expert 0.
void gatherScoresByNeed(GatherOp op, ScoreOp score, RowCodegen &cg) {
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  RowRef ids = cg.rowOf(op.getIds());
  RowRef weights = cg.newRow(op.getWeights());
  const int64_t experts = cast<RankedTensorType>(op.getScores().getType())
                              .getDimSize(1);
  for (int64_t first = 0; first < weights.size; first += cg.width) {
    const int64_t valid = std::min(cg.width, weights.size - first);
    if (cg.target == KernelTarget::Cpu) {
      SmallVector<Value> raw, picks;
      for (int64_t j = first; j < first + valid; ++j) {
        raw.push_back(cg.load(ids, cg.index(j)));
        picks.push_back(b.create<arith::IndexCastOp>(
            loc, b.getIndexType(), cg.safeId(raw.back(), experts)));
      }
      Value scores = scoreExperts(cg, score, picks);
      for (int64_t j = 0; j < valid; ++j) {
        Value value =
            b.create<vector::ExtractOp>(loc, scores, ArrayRef<int64_t>{j});
        cg.store(b.create<arith::SelectOp>(loc, isUnused(cg, raw[j]),
                                           cg.f32(0.0), value),
                 weights, cg.index(first + j));
      }
      continue;
    }
    Value raw = cg.loadChunk(ids, cg.index(first), valid, cg.i32(0));
    Value inRange = b.create<arith::AndIOp>(
        loc,
        b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::sge, raw,
                                cg.splat(cg.i32(0))),
        b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::slt, raw,
                                cg.splat(cg.i32(experts))));
    Value safe =
        b.create<arith::SelectOp>(loc, inRange, raw, cg.splat(cg.i32(0)));
    Value scores = scoreExperts(cg, score, safe, valid);
    Value unused = b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::eq, raw,
                                           cg.splat(cg.i32(-1)));
    cg.storeChunk(b.create<arith::SelectOp>(loc, unused,
                                            cg.splat(cg.f32(0.0)), scores),
                  weights, cg.index(first), valid);
  }
}

LogicalResult lowerGather(GatherOp op, RowCodegen &cg) {
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  if (auto need = cg.scoresByNeed.find(op.getScores());
      need != cg.scoresByNeed.end()) {
    gatherScoresByNeed(op, need->second, cg);
    return success();
  }
  RowRef scores = cg.rowOf(op.getScores());
  RowRef ids = cg.rowOf(op.getIds());
  RowRef weights = cg.newRow(op.getWeights());
  cg.forLoop(0, weights.size, {}, [&](Value j, ValueRange) {
    Value raw = cg.load(ids, j);
    Value id = cg.safeId(raw, scores.size);
    Value e = b.create<arith::IndexCastOp>(loc, b.getIndexType(), id);
    cg.store(b.create<arith::SelectOp>(loc, isUnused(cg, raw), cg.f32(0.0),
                                       cg.loadF32(scores, e)),
             weights, j);
    return SmallVector<Value>{};
  });
  return success();
}

} // namespace

std::pair<Value, Value> gpuNormalizer(RowCodegen &cg, Value denominator) {
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  auto constant = [&](double v) {
    Value c = cg.f32(v);
    return isa<VectorType>(denominator.getType()) ? cg.splat(c) : c;
  };
  Value tiny = b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OLT,
                                       denominator, constant(0x1p-64));
  Value scale =
      b.create<arith::SelectOp>(loc, tiny, constant(0x1p64), constant(1.0));
  Value reciprocal = b.create<arith::DivFOp>(
      loc, constant(1.0), b.create<arith::MulFOp>(loc, denominator, scale));
  return {scale, reciprocal};
}

namespace {

LogicalResult lowerNormalize(NormalizeOp op, RowCodegen &cg) {
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  RowRef weights = cg.rowOf(op.getWeights());
  RowRef normalized = cg.newRow(op.getNormalized());
  SmallVector<Value> sum =
      cg.forLoop(0, weights.size, {cg.f32(0.0)},
                 [&](Value j, ValueRange total) -> SmallVector<Value> {
                   return {b.create<arith::AddFOp>(loc, total[0],
                                                   cg.load(weights, j))};
                 });
  Value denominator = b.create<arith::AddFOp>(
      loc, sum[0], cg.f32(op.getEpsilon().convertToDouble()));
  if (cg.target != KernelTarget::Nvptx) {
    cg.forLoop(0, weights.size, {}, [&](Value j, ValueRange) {
      cg.store(b.create<arith::DivFOp>(loc, cg.load(weights, j), denominator),
               normalized, j);
      return SmallVector<Value>{};
    });
    return success();
  }
  auto [scale, reciprocal] = gpuNormalizer(cg, denominator);
  cg.forLoop(0, weights.size, {}, [&](Value j, ValueRange) {
    Value scaled = b.create<arith::MulFOp>(loc, cg.load(weights, j), scale);
    cg.store(b.create<arith::MulFOp>(loc, scaled, reciprocal), normalized, j);
    return SmallVector<Value>{};
  });
  return success();
}

LogicalResult lowerScale(ScaleOp op, RowCodegen &cg) {
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  RowRef weights = cg.rowOf(op.getWeights());
  RowRef scaled = cg.newRow(op.getScaled());
  Value factor = cg.f32(op.getFactor().convertToDouble());
  cg.forLoop(0, weights.size, {}, [&](Value j, ValueRange) {
    cg.store(b.create<arith::MulFOp>(loc, cg.load(weights, j), factor), scaled,
             j);
    return SmallVector<Value>{};
  });
  return success();
}

/// Per slot j, a pass over the row: the experts not selected before slot
/// j whose score is close to the slot's own (the ratio test, negated so
/// that a NaN ratio keeps its expert) add exp(s - m); the weight is the
/// reciprocal of that sum, which holds exp(0) = 1 for the slot's own
/// expert. exp may see positive arguments (forced ids need not be in
/// descending order), so it is never the approximate form.
LogicalResult lowerSparsemixer(SparsemixerOp op, RowCodegen &cg) {
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  RowRef scores = cg.rowOf(op.getScores());
  RowRef ids = cg.rowOf(op.getIds());
  RowRef weights = cg.newRow(op.getWeights());
  const int64_t numExperts = scores.size;
  const double inf = std::numeric_limits<double>::infinity();
  Value threshold = cg.splat(cg.f32(2.0 * op.getJitterEps().convertToDouble()));
  cg.forLoop(0, weights.size, {}, [&](Value j, ValueRange) {
    Value raw = cg.load(ids, j);
    Value id = cg.safeId(raw, numExperts);
    Value m = cg.loadF32(
        scores, b.create<arith::IndexCastOp>(loc, b.getIndexType(), id));
    Value mLanes = cg.splat(m);
    SmallVector<Value> sums = cg.forEachChunk(
        numExperts, {cg.splat(cg.f32(0.0))},
        [&](Value e0, int64_t valid, ValueRange iter) -> SmallVector<Value> {
          Value x = cg.loadChunk(scores, e0, valid, cg.f32(-inf));
          Value lanes = cg.laneIds(e0);
          // Not selected before slot j.
          SmallVector<Value> fresh = cg.forLoop(
              cg.index(0), j, {cg.splat(cg.boolean(true))},
              [&](Value i, ValueRange notYet) -> SmallVector<Value> {
                Value earlier = cg.splat(cg.load(ids, i));
                return {b.create<arith::AndIOp>(
                    loc, notYet[0],
                    b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::ne,
                                            lanes, earlier))};
              });
          Value factor = b.create<arith::MaximumFOp>(
              loc, b.create<math::AbsFOp>(loc, x), mLanes);
          Value ratio = b.create<arith::DivFOp>(
              loc, b.create<arith::SubFOp>(loc, mLanes, x), factor);
          Value far = b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OGT,
                                              ratio, threshold);
          Value keep = b.create<arith::AndIOp>(
              loc, fresh[0],
              b.create<arith::XOrIOp>(loc, far,
                                      cg.splat(cg.boolean(true))));
          if (valid < cg.width)
            keep = b.create<arith::AndIOp>(
                loc, keep,
                b.create<vector::ConstantMaskOp>(
                    loc, cg.vectorOf(b.getI1Type()),
                    b.getI64ArrayAttr({valid})));
          Value same = b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OEQ,
                                               x, mLanes);
          Value difference = b.create<arith::SelectOp>(
              loc, same, cg.splat(cg.f32(0.0)),
              b.create<arith::SubFOp>(loc, x, mLanes));
          Value term = b.create<arith::SelectOp>(
              loc, keep, b.create<math::ExpOp>(loc, difference),
              cg.splat(cg.f32(0.0)));
          return {b.create<arith::AddFOp>(loc, iter[0], term)};
        });
    Value sum = b.create<vector::ReductionOp>(loc, vector::CombiningKind::ADD,
                                              sums[0]);
    cg.store(b.create<arith::SelectOp>(
                 loc, isUnused(cg, raw), cg.f32(0.0),
                 b.create<arith::DivFOp>(loc, cg.f32(1.0), sum)),
             weights, j);
    return SmallVector<Value>{};
  });
  return success();
}

} // namespace

LogicalResult lowerWeights(Operation *op, RowCodegen &cg) {
  return llvm::TypeSwitch<Operation *, LogicalResult>(op)
      .Case([&](GatherOp op) { return lowerGather(op, cg); })
      .Case([&](NormalizeOp op) { return lowerNormalize(op, cg); })
      .Case([&](ScaleOp op) { return lowerScale(op, cg); })
      .Case([&](SparsemixerOp op) { return lowerSparsemixer(op, cg); })
      .Default([](Operation *op) {
        return op->emitOpError("is not a weights op");
      });
}

} // namespace mlir::moe::loops
