//===- TokenLanesToLoops.cpp - W tokens at once, across the vector lanes --===//
//
// The host's layout for rows of few experts (`topk = token_lanes`): with 8
// experts a token is a single chunk, and the token-per-row layout spends
// most of its time on the chunk's reductions (row maximum, sum, each arg-max
// pass) and the scalar steps between them. Here the vector lanes hold W =
// `vector_width` consecutive tokens instead, and the experts are the
// columns: column e is the vector of logits[t0 + i, e] for the W tokens, so
// every reduction over experts is a vertical operation over E columns:
//
//   scoring:   transform and score each column; softmax takes the maximum
//              and the sum over the columns (in expert order);
//   add_bias:  column e plus bias[e];
//   topk:      an insertion into k (key, id) slots over the columns in
//              expert order (a key enters only above a slot's key, so equal
//              keys keep the lower expert first, as the total order says);
//   gather:    per slot, the column its id names (E selects);
//   normalize, scale: per slot, in slot order;
//   capture, results: each slot's vector scattered to its W rows.
//
// A group's logits are gathered and checked first: a group holding a NaN or
// +inf logit (or a capture layer out of range) takes the token-per-row body
// one token at a time, which reports the first violation as always, so the
// error record and every valid token's outputs are the same. Only the ops
// above have this form; an entry with another keeps the token-per-row
// layout (MoEToLoops.cpp asks hasTokenLanesForm).
//
//===----------------------------------------------------------------------===//

#include "dialects/moe/Conversion/MoEToLoops/RowCodegen.h"
#include "dialects/moe/Transforms/KernelConfigHeuristics.h"

#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "llvm/ADT/TypeSwitch.h"

#include <limits>

namespace mlir::moe::loops {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

class TokenLanes {
public:
  TokenLanes(RowCodegen &cg, Value first)
      : cg(cg), b(cg.b), loc(cg.loc), lanes(cg.width), first(first) {}

  /// Gathers the logits of every ScoreOp (once per argument), and whether
  /// the group is clean: no NaN or +inf logit, every capture layer in
  /// range.
  Value load(Block &body) {
    Value bad = cg.splat(cg.boolean(false));
    Value clean = cg.boolean(true);
    for (Operation &op : body.without_terminator()) {
      if (auto score = dyn_cast<ScoreOp>(op)) {
        Value logits = score.getLogits();
        if (columns.count(logits))
          continue;
        SmallVector<Value> &xs = columns[logits];
        RowRef row = cg.rowOf(logits);
        for (int64_t e = 0; e < row.size; ++e) {
          Value x = gatherColumn(row.memref, e);
          xs.push_back(x);
          bad = b.create<arith::OrIOp>(
              loc, bad,
              b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::UGE, x,
                                      vf(kInf)));
        }
      } else if (auto capture = dyn_cast<CaptureOp>(op)) {
        Value buffer = cg.rowOf(capture.getBuffer()).memref;
        Value layer = cg.scalars.lookup(capture.getLayer());
        Value layers = b.create<memref::DimOp>(loc, buffer, 1);
        clean = b.create<arith::AndIOp>(
            loc, clean,
            b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::ult, layer,
                                    layers));
      }
    }
    Value anyBad =
        b.create<vector::ReductionOp>(loc, vector::CombiningKind::OR, bad);
    return b.create<arith::AndIOp>(
        loc, clean, b.create<arith::XOrIOp>(loc, anyBad, cg.boolean(true)));
  }

  LogicalResult emit(Block &body,
                     ArrayRef<std::pair<Value, Value>> resultOutputs) {
    for (Operation &op : body.without_terminator())
      if (failed(emitOp(&op)))
        return failure();
    for (auto [result, output] : resultOutputs)
      scatterColumns(columns.lookup(result), output, /*layer=*/Value());
    return success();
  }

private:
  Value vf(double v) { return cg.splat(cg.f32(v)); }
  VectorType laneType(Type element) {
    return VectorType::get({lanes}, element);
  }

  /// Offsets (first + i) * rowLength + column, i in [0, W), as i64.
  Value offsets(Value rowLength, Value column) {
    SmallVector<int64_t> iota;
    for (int64_t i = 0; i < lanes; ++i)
      iota.push_back(i);
    Value base = b.create<arith::IndexCastOp>(loc, b.getI64Type(), first);
    Value tokens = b.create<arith::AddIOp>(
        loc, b.create<vector::SplatOp>(loc, laneType(b.getI64Type()), base),
        b.create<arith::ConstantOp>(
            loc, DenseElementsAttr::get(laneType(b.getI64Type()),
                                        ArrayRef<int64_t>(iota))));
    auto splat = [&](Value v) {
      return b.create<vector::SplatOp>(
          loc, laneType(b.getI64Type()),
          b.create<arith::IndexCastOp>(loc, b.getI64Type(), v));
    };
    return b.create<arith::AddIOp>(
        loc, b.create<arith::MulIOp>(loc, tokens, splat(rowLength)),
        splat(column));
  }

  /// The memref as one flat run of elements (kernel arguments are
  /// contiguous).
  Value flat(Value memref) {
    auto type = cast<MemRefType>(memref.getType());
    SmallVector<ReassociationIndices> all(1);
    for (int64_t d = 0; d < type.getRank(); ++d)
      all[0].push_back(d);
    return b.create<memref::CollapseShapeOp>(loc, memref, all);
  }

  Value allLanes() {
    return b.create<arith::ConstantOp>(
        loc, DenseElementsAttr::get(laneType(b.getI1Type()), true));
  }

  /// Column e of a [T, N] argument, widened to f32.
  Value gatherColumn(Value memref, int64_t e) {
    auto type = cast<MemRefType>(memref.getType());
    Type element = type.getElementType();
    Value pass = b.create<arith::ConstantOp>(
        loc, laneType(element), b.getZeroAttr(laneType(element)));
    Value x = b.create<vector::GatherOp>(
        loc, laneType(element), flat(memref), ValueRange{cg.index(0)},
        offsets(cg.index(type.getDimSize(1)), cg.index(e)), allLanes(), pass);
    if (!element.isF32())
      x = b.create<arith::ExtFOp>(loc, laneType(b.getF32Type()), x);
    return x;
  }

  /// Each slot's vector to the W rows of a [T, k] output or, with `layer`,
  /// of layer `layer` of a [T, L, k] capture buffer.
  void scatterColumns(ArrayRef<Value> slots, Value output, Value layer) {
    auto type = cast<MemRefType>(output.getType());
    Type element = type.getElementType();
    const int64_t k = type.getDimSize(type.getRank() - 1);
    Value flatOutput = flat(output);
    Value rowLength = cg.index(k);
    if (layer)
      rowLength = b.create<arith::MulIOp>(
          loc, b.create<memref::DimOp>(loc, output, 1), cg.index(k));
    for (auto [j, slot] : llvm::enumerate(slots)) {
      Value column = cg.index(int64_t(j));
      if (layer)
        column = b.create<arith::AddIOp>(
            loc, b.create<arith::MulIOp>(loc, layer, cg.index(k)), column);
      Value value = slot;
      if (element != cast<VectorType>(slot.getType()).getElementType())
        value = b.create<arith::TruncIOp>(loc, laneType(element), slot);
      b.create<vector::ScatterOp>(loc, flatOutput, ValueRange{cg.index(0)},
                                  offsets(rowLength, column), allLanes(),
                                  value);
    }
  }

  LogicalResult emitOp(Operation *op) {
    return llvm::TypeSwitch<Operation *, LogicalResult>(op)
        .Case([&](ScoreOp score) {
          SmallVector<Value> xs;
          for (Value x : columns.lookup(score.getLogits()))
            xs.push_back(transformLogits(cg, score.getTemperature(),
                                         score.getSoftcap(), x));
          SmallVector<Value> &scores = columns[score.getScores()];
          if (score.getKind() != ScoringKind::softmax) {
            for (Value x : xs)
              scores.push_back(scoreElementwise(cg, score.getKind(), x));
            return success();
          }
          // The row's maximum and sum, over the columns in expert order.
          Value max = xs.front();
          for (Value x : ArrayRef<Value>(xs).drop_front())
            max = b.create<arith::MaximumFOp>(loc, max, x);
          Value allMasked = b.create<arith::CmpFOp>(
              loc, arith::CmpFPredicate::OEQ, max, vf(-kInf));
          Value shift = b.create<arith::SelectOp>(loc, allMasked, vf(0.0), max);
          // On the GPU, as the row layout's softmax there (ScoringToLoops):
          // ex2.approx of arguments <= 0, and one approximate reciprocal
          // of the sum (>= 1) times each exp instead of E divisions.
          const bool gpu = cg.target == KernelTarget::Nvptx;
          auto approximate = arith::FastMathFlagsAttr::get(
              b.getContext(), gpu ? arith::FastMathFlags::afn
                                  : arith::FastMathFlags::none);
          Value sum = vf(0.0);
          SmallVector<Value> exps;
          for (Value x : xs) {
            x = b.create<arith::SelectOp>(loc, allMasked, vf(0.0), x);
            Value e = b.create<math::ExpOp>(
                loc, b.create<arith::SubFOp>(loc, x, shift), approximate);
            exps.push_back(e);
            sum = b.create<arith::AddFOp>(loc, sum, e);
          }
          Value inverse =
              gpu ? b.create<arith::DivFOp>(loc, vf(1.0), sum, approximate)
                        .getResult()
                  : Value();
          for (Value e : exps)
            scores.push_back(
                gpu ? b.create<arith::MulFOp>(loc, e, inverse).getResult()
                    : b.create<arith::DivFOp>(loc, e, sum).getResult());
          return success();
        })
        .Case([&](AddBiasOp add) {
          Value bias = cg.rowOf(add.getBias()).memref;
          SmallVector<Value> &keys = columns[add.getKeys()];
          for (auto [e, s] : llvm::enumerate(columns.lookup(add.getScores())))
            keys.push_back(b.create<arith::AddFOp>(
                loc, s,
                cg.splat(b.create<memref::LoadOp>(
                    loc, bias, ValueRange{cg.index(int64_t(e))}))));
          return success();
        })
        .Case([&](TopKOp topk) {
          const SmallVector<Value> keys = columns.lookup(topk.getKeys());
          const int64_t k = topk.getK();
          const int64_t numExperts = int64_t(keys.size());
          // Slots start empty: the key -inf and the id E, below every
          // entry in the total order (larger key, then lower id). An entry
          // a new one displaces moves down and may pass equal keys of
          // higher ids, so the order compares ids too. NaN keys count as
          // -inf, as in the arg-max passes.
          SmallVector<Value> best(k, vf(-kInf));
          SmallVector<Value> ids(k, cg.splat(cg.i32(numExperts)));
          for (int64_t e = 0; e < numExperts; ++e) {
            Value key = keys[e];
            key = b.create<arith::SelectOp>(
                loc,
                b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::UNO, key,
                                        key),
                vf(-kInf), key);
            Value id = cg.splat(cg.i32(e));
            for (int64_t j = 0; j < k; ++j) {
              Value take = b.create<arith::OrIOp>(
                  loc,
                  b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OGT, key,
                                          best[j]),
                  b.create<arith::AndIOp>(
                      loc,
                      b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OEQ,
                                              key, best[j]),
                      b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::slt,
                                              id, ids[j])));
              Value keptKey = best[j], keptId = ids[j];
              best[j] = b.create<arith::SelectOp>(loc, take, key, keptKey);
              ids[j] = b.create<arith::SelectOp>(loc, take, id, keptId);
              key = b.create<arith::SelectOp>(loc, take, keptKey, key);
              id = b.create<arith::SelectOp>(loc, take, keptId, id);
            }
          }
          columns[topk.getIds()] = ids;
          return success();
        })
        .Case([&](GatherOp gather) {
          const SmallVector<Value> scores = columns.lookup(gather.getScores());
          SmallVector<Value> &weights = columns[gather.getWeights()];
          for (Value id : columns.lookup(gather.getIds())) {
            Value w = vf(0.0);
            for (auto [e, s] : llvm::enumerate(scores))
              w = b.create<arith::SelectOp>(
                  loc,
                  b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::eq, id,
                                          cg.splat(cg.i32(int64_t(e)))),
                  s, w);
            weights.push_back(w);
          }
          return success();
        })
        .Case([&](NormalizeOp normalize) {
          const SmallVector<Value> weights =
              columns.lookup(normalize.getWeights());
          Value sum = vf(0.0);
          for (Value w : weights)
            sum = b.create<arith::AddFOp>(loc, sum, w);
          Value denominator = b.create<arith::AddFOp>(
              loc, sum, vf(normalize.getEpsilon().convertToDouble()));
          SmallVector<Value> &normalized = columns[normalize.getNormalized()];
          if (cg.target != KernelTarget::Nvptx) {
            for (Value w : weights)
              normalized.push_back(
                  b.create<arith::DivFOp>(loc, w, denominator));
            return success();
          }
          auto [scale, reciprocal] = gpuNormalizer(cg, denominator);
          for (Value w : weights)
            normalized.push_back(b.create<arith::MulFOp>(
                loc, b.create<arith::MulFOp>(loc, w, scale), reciprocal));
          return success();
        })
        .Case([&](ScaleOp scale) {
          SmallVector<Value> &scaled = columns[scale.getScaled()];
          for (Value w : columns.lookup(scale.getWeights()))
            scaled.push_back(b.create<arith::MulFOp>(
                loc, w, vf(scale.getFactor().convertToDouble())));
          return success();
        })
        .Case([&](CaptureOp capture) {
          scatterColumns(columns.lookup(capture.getIds()),
                         cg.rowOf(capture.getBuffer()).memref,
                         cg.scalars.lookup(capture.getLayer()));
          // The capture result is the buffer itself, updated in place.
          return success();
        })
        // A fused dispatch runs after the token loop.
        .Case([](DispatchOp) { return success(); })
        .Default([](Operation *op) {
          return op->emitOpError("has no token-lanes form");
        });
  }

  RowCodegen &cg;
  OpBuilder &b;
  Location loc;
  const int64_t lanes;
  Value first;
  /// Each tensor value's columns: E for [T, E] values, k for [T, k] ones.
  llvm::DenseMap<Value, SmallVector<Value>> columns;
};

} // namespace

LogicalResult
lowerTokenLanesGroup(Block &body, RowCodegen &cg, Value first,
                     ArrayRef<std::pair<Value, Value>> resultOutputs,
                     function_ref<LogicalResult(Value token)> perToken) {
  TokenLanes group(cg, first);
  Value clean = group.load(body);
  OpBuilder &b = cg.b;
  auto branch = b.create<scf::IfOp>(cg.loc, clean, /*withElseRegion=*/true);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(branch.thenBlock());
  if (failed(group.emit(body, resultOutputs)))
    return failure();
  b.setInsertionPointToStart(branch.elseBlock());
  LogicalResult status = success();
  // A group with an invalid input: one token at a time, as ever.
  cg.forLoop(first,
             b.create<arith::AddIOp>(cg.loc, first, cg.index(cg.width)), {},
             [&](Value token, ValueRange) {
               if (failed(perToken(token)))
                 status = failure();
               return SmallVector<Value>{};
             });
  return status;
}

} // namespace mlir::moe::loops
