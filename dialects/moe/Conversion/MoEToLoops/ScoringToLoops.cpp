//===- ScoringToLoops.cpp - moe.score on one token's row ------------------===//
//
// Scores are computed in f32 from f32, bf16 or f16 logits, one vector chunk
// of experts at a time, with the stable forms of docs/semantics.md. Logits
// that are NaN or +inf are reported through the error record: the check is
// one compare per chunk on the fast path, and the offending index is
// searched for only once a row is known to hold one. A temperature and a
// soft cap, when the op has them, transform each checked chunk before the
// scoring function sees it. The shared expert's gate (moe.shared_gate) is
// the same sigmoid of a row of one logit.
//
//===----------------------------------------------------------------------===//

#include "dialects/moe/Conversion/MoEToLoops/RowCodegen.h"

#include "mlir/Dialect/Math/IR/Math.h"

#include <limits>

namespace mlir::moe::loops {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

/// Scores of one row of logits: moe.score's, and moe.shared_gate's sigmoid
/// of a [T, 1] row (its own error code, no transforms).
class ScoringEmitter {
public:
  ScoringEmitter(RowCodegen &cg, Value logitsValue,
                 std::optional<APFloat> temperature,
                 std::optional<APFloat> softcap, KernelErrorCode badLogitCode)
      : cg(cg), b(cg.b), loc(cg.loc), logits(cg.rowOf(logitsValue)),
        numExperts(logits.size), temperature(temperature), softcap(softcap),
        badLogitCode(badLogitCode) {}

  LogicalResult emit(ScoringKind kind, Value result) {
    scores = cg.newRow(result);
    switch (kind) {
    case ScoringKind::softmax:
      emitSoftmax();
      break;
    case ScoringKind::sigmoid:
      emitElementwise([&](Value x) { return sigmoid(x); });
      break;
    case ScoringKind::sqrtsoftplus:
      emitElementwise([&](Value x) { return sqrtSoftplus(x); });
      break;
    case ScoringKind::identity:
      emitElementwise([](Value x) { return x; });
      break;
    }
    return success();
  }

  /// The scoring of one chunk (an elementwise kind; softmax is over a row).
  Value scoreChunk(ScoringKind kind, Value x) {
    switch (kind) {
    case ScoringKind::sigmoid:
      return sigmoid(x);
    case ScoringKind::sqrtsoftplus:
      return sqrtSoftplus(x);
    case ScoringKind::identity:
    case ScoringKind::softmax:
      break;
    }
    return x;
  }

  /// l / temperature, then softcap * tanh(l / softcap), in f32; -inf (a
  /// masked expert, and the padding of tail chunks) stays -inf.
  Value transform(Value x) {
    if (!temperature && !softcap)
      return x;
    Value y = x;
    if (temperature)
      y = b.create<arith::DivFOp>(loc, y, vf(temperature->convertToDouble()));
    if (softcap) {
      Value cap = vf(softcap->convertToDouble());
      y = b.create<arith::MulFOp>(
          loc, cap,
          b.create<math::TanhOp>(loc, b.create<arith::DivFOp>(loc, y, cap)));
    }
    Value masked = b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OEQ, x,
                                           vf(-kInf));
    return b.create<arith::SelectOp>(loc, masked, x, y);
  }

private:
  Value vf(double v) { return cg.splat(cg.f32(v)); }

  /// NaN or +inf: the logits the spec rejects (-inf masks an expert).
  Value isBad(Value x) {
    return b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::UGE, x,
                                   vf(kInf));
  }

  /// Lanes of a tail chunk that hold experts (all lanes of a full chunk).
  Value keepValidLanes(Value v, int64_t valid, double otherwise) {
    if (valid == cg.width)
      return v;
    Value mask = b.create<vector::ConstantMaskOp>(
        loc, cg.vectorOf(b.getI1Type()), b.getI64ArrayAttr({valid}));
    return b.create<arith::SelectOp>(loc, mask, v, vf(otherwise));
  }

  /// On nvptx, exp and 1 / d for d in [1, 2^126] may be approximate
  /// (`afn`: ex2.approx, subnormal results kept, and rcp.approx, a few ulp;
  /// moe-gpu-fast-math): the arguments here stay in the ranges where those
  /// keep the weights within 1e-5 (docs/semantics.md).
  arith::FastMathFlagsAttr fastMath() const {
    return arith::FastMathFlagsAttr::get(
        b.getContext(), cg.target == KernelTarget::Nvptx
                            ? arith::FastMathFlags::afn
                            : arith::FastMathFlags::none);
  }
  /// exp(x) for x <= 0, so in (0, 1].
  Value expOfNonPositive(Value x) {
    return b.create<math::ExpOp>(loc, x, fastMath());
  }
  /// 1 / d for d >= 1.
  Value reciprocalOfAtLeastOne(Value d) {
    return b.create<arith::DivFOp>(loc, vf(1.0), d, fastMath());
  }

  /// 1 / (1 + exp(-x)) for x >= 0, exp(x) / (1 + exp(x)) otherwise: exp
  /// never overflows and sigmoid(-inf) = 0.
  Value sigmoid(Value x) {
    Value e = expOfNonPositive(
        b.create<arith::NegFOp>(loc, b.create<math::AbsFOp>(loc, x)));
    Value denominator = b.create<arith::AddFOp>(loc, vf(1.0), e);
    Value positive = reciprocalOfAtLeastOne(denominator);
    // One reciprocal serves both signs where it is approximate anyway;
    // the host keeps the correctly rounded quotient.
    Value negative = cg.target == KernelTarget::Nvptx
                         ? b.create<arith::MulFOp>(loc, e, positive).getResult()
                         : b.create<arith::DivFOp>(loc, e, denominator)
                               .getResult();
    Value isPositive =
        b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OGE, x, vf(0.0));
    return b.create<arith::SelectOp>(loc, isPositive, positive, negative);
  }

  /// max(x, 0) + log1p(exp(-|x|)): no overflow for large x, no cancellation
  /// for very negative x, and softplus(-inf) = 0.
  Value softplus(Value x) {
    Value e = expOfNonPositive(
        b.create<arith::NegFOp>(loc, b.create<math::AbsFOp>(loc, x)));
    Value tail = b.create<math::Log1pOp>(loc, e);
    Value linear = b.create<arith::MaximumFOp>(loc, x, vf(0.0));
    return b.create<arith::AddFOp>(loc, linear, tail);
  }

  /// sqrt(softplus(x)); below x = -16, softplus(x) = exp(x) to within
  /// exp(x) / 2 < 2^-24 relative, so the root is exp(x / 2): a normal f32
  /// down to x = -174, where softplus itself underflows from x = -87 on.
  Value sqrtSoftplus(Value x) {
    Value direct = b.create<math::SqrtOp>(loc, softplus(x));
    Value tail = b.create<math::ExpOp>(
        loc, b.create<arith::MulFOp>(loc, x, vf(0.5)));
    Value inTail =
        b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OLT, x, vf(-16.0));
    return b.create<arith::SelectOp>(loc, inTail, tail, direct);
  }

public:
  /// The logits' check alone, for scores computed by need.
  void emitValidation() {
    Value noneBad = cg.splat(cg.boolean(false));
    SmallVector<Value> result = cg.forEachChunk(
        numExperts, {noneBad},
        [&](Value e0, int64_t valid, ValueRange iter) -> SmallVector<Value> {
          Value x = cg.loadChunk(logits, e0, valid, cg.f32(0.0));
          return {b.create<arith::OrIOp>(loc, iter[0], isBad(x))};
        });
    reportBadLogits(result[0]);
  }

private:
  /// One pass: s = f(l), checking the logits on the way.
  void emitElementwise(function_ref<Value(Value)> f) {
    Value noneBad = cg.splat(cg.boolean(false));
    SmallVector<Value> result = cg.forEachChunk(
        numExperts, {noneBad},
        [&](Value e0, int64_t valid, ValueRange iter) -> SmallVector<Value> {
          Value x = cg.loadChunk(logits, e0, valid, cg.f32(0.0));
          cg.storeChunk(f(transform(x)), scores, e0, valid);
          return {b.create<arith::OrIOp>(loc, iter[0], isBad(x))};
        });
    reportBadLogits(result[0]);
  }

  /// exp(l - max l) / sum; a row of only -inf logits is scored as a row of
  /// equal logits (uniform), the limit the semantics define.
  void emitSoftmax() {
    Value noneBad = cg.splat(cg.boolean(false));
    SmallVector<Value> maxAndBad = cg.forEachChunk(
        numExperts, {vf(-kInf), noneBad},
        [&](Value e0, int64_t valid, ValueRange iter) -> SmallVector<Value> {
          Value x = cg.loadChunk(logits, e0, valid, cg.f32(-kInf));
          return {b.create<arith::MaximumFOp>(loc, iter[0], transform(x)),
                  b.create<arith::OrIOp>(loc, iter[1], isBad(x))};
        });
    reportBadLogits(maxAndBad[1]);
    Value rowMax = b.create<vector::ReductionOp>(
        loc, vector::CombiningKind::MAXIMUMF, maxAndBad[0]);
    Value allMasked = b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OEQ,
                                              rowMax, cg.f32(-kInf));
    Value shift = b.create<arith::SelectOp>(loc, allMasked, cg.f32(0.0), rowMax);
    Value allMaskedLanes = cg.splat(allMasked);

    SmallVector<Value> sums = cg.forEachChunk(
        numExperts, {vf(0.0)},
        [&](Value e0, int64_t valid, ValueRange iter) -> SmallVector<Value> {
          Value x = transform(cg.loadChunk(logits, e0, valid, cg.f32(-kInf)));
          x = b.create<arith::SelectOp>(loc, allMaskedLanes, vf(0.0), x);
          Value e = expOfNonPositive(
              b.create<arith::SubFOp>(loc, x, cg.splat(shift)));
          e = keepValidLanes(e, valid, 0.0);
          cg.storeChunk(e, scores, e0, valid);
          return {b.create<arith::AddFOp>(loc, iter[0], e)};
        });
    // sum >= 1: the maximum contributes exp(0).
    Value sum = b.create<vector::ReductionOp>(loc, vector::CombiningKind::ADD,
                                              sums[0]);
    // The GPU multiplies by one approximate reciprocal; the host divides.
    Value sumLanes = cg.splat(sum);
    Value inverse = cg.target == KernelTarget::Nvptx
                        ? cg.splat(b.create<arith::DivFOp>(
                              loc, cg.f32(1.0), sum, fastMath()))
                        : Value();
    cg.forEachChunk(numExperts, {},
                    [&](Value e0, int64_t valid, ValueRange) {
                      Value e = cg.loadChunk(scores, e0, valid, cg.f32(0.0));
                      Value p =
                          inverse
                              ? b.create<arith::MulFOp>(loc, e, inverse)
                                    .getResult()
                              : b.create<arith::DivFOp>(loc, e, sumLanes)
                                    .getResult();
                      cg.storeChunk(p, scores, e0, valid);
                      return SmallVector<Value>{};
                    });
  }

  /// Records the first NaN / +inf logit of the row when `anyBadLanes` says
  /// there is one.
  void reportBadLogits(Value anyBadLanes) {
    Value anyBad = b.create<vector::ReductionOp>(loc, vector::CombiningKind::OR,
                                                 anyBadLanes);
    cg.ifThen(anyBad, [&] {
      cg.forLoop(0, numExperts, {}, [&](Value e, ValueRange) {
        Value x = cg.loadF32(logits, e);
        Value bad = b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::UGE, x,
                                            cg.f32(kInf));
        cg.ifThen(bad, [&] {
          Value bits = b.create<arith::ExtUIOp>(
              loc, b.getI64Type(),
              b.create<arith::BitcastOp>(loc, b.getI32Type(), x));
          cg.recordError(badLogitCode, cg.token, e, bits);
        });
        return SmallVector<Value>{};
      });
    });
  }

  RowCodegen &cg;
  OpBuilder &b;
  Location loc;
  RowRef logits;
  RowRef scores;
  int64_t numExperts;
  std::optional<APFloat> temperature, softcap;
  KernelErrorCode badLogitCode;
};

} // namespace

Value transformLogits(RowCodegen &cg, std::optional<APFloat> temperature,
                      std::optional<APFloat> softcap, Value chunk) {
  return ScoringEmitter(cg, Value(), temperature, softcap,
                        KernelErrorCode::NonFiniteLogit)
      .transform(chunk);
}

Value scoreElementwise(RowCodegen &cg, ScoringKind kind, Value chunk) {
  return ScoringEmitter(cg, Value(), std::nullopt, std::nullopt,
                        KernelErrorCode::NonFiniteLogit)
      .scoreChunk(kind, chunk);
}

/// Whether `op`'s scores can be computed by need: an elementwise scoring
/// whose every reader gathers from it (hash or forced selection: k of E
/// scores are ever read, and sqrt(softplus) of a whole row costs more than
/// the rest of the kernel); on the host and on the GPU alike (a lane
/// scores its pick there, where a segment of W lanes scored E / W experts
/// each). Softmax needs the whole row for its sum.
bool scoredByNeed(ScoreOp op) {
  if (op.getKind() == ScoringKind::softmax)
    return false;
  Value scores = op.getScores();
  return !scores.use_empty() &&
         llvm::all_of(scores.getUses(), [](OpOperand &use) {
           auto gather = dyn_cast<GatherOp>(use.getOwner());
           return gather && use.get() == gather.getScores();
         });
}

namespace {
Value scoreChunkOf(RowCodegen &cg, ScoreOp score, Value logitsChunk) {
  ScoringEmitter emitter(cg, score.getLogits(), score.getTemperature(),
                         score.getSoftcap(), KernelErrorCode::NonFiniteLogit);
  return emitter.scoreChunk(score.getKind(), emitter.transform(logitsChunk));
}
} // namespace

Value scoreExperts(RowCodegen &cg, ScoreOp score, ArrayRef<Value> ids) {
  OpBuilder &b = cg.b;
  RowRef logits = cg.rowOf(score.getLogits());
  Value chunk = cg.splat(cg.f32(0.0));
  for (auto [lane, id] : llvm::enumerate(ids))
    chunk = b.create<vector::InsertOp>(cg.loc, cg.loadF32(logits, id), chunk,
                                       ArrayRef<int64_t>{int64_t(lane)});
  return scoreChunkOf(cg, score, chunk);
}

Value scoreExperts(RowCodegen &cg, ScoreOp score, Value ids, int64_t valid) {
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  RowRef logits = cg.rowOf(score.getLogits());
  Type element = logits.elementType();
  Value mask = b.create<vector::ConstantMaskOp>(
      loc, cg.vectorOf(b.getI1Type()), b.getI64ArrayAttr({valid}));
  Value zero = b.create<arith::ConstantOp>(loc, b.getZeroAttr(element));
  Value chunk = b.create<vector::GatherOp>(
      loc, cg.vectorOf(element), logits.memref,
      cg.indices(logits, cg.index(0)), ids, mask, cg.splat(zero));
  if (!element.isF32())
    chunk = b.create<arith::ExtFOp>(loc, cg.vectorOf(b.getF32Type()), chunk);
  return scoreChunkOf(cg, score, chunk);
}

LogicalResult lowerScoring(ScoreOp op, RowCodegen &cg) {
  if (!cg.rowOf(op.getLogits()).memref)
    return op.emitOpError("logits must be an argument of the entry point");
  if (scoredByNeed(op)) {
    cg.scoresByNeed[op.getScores()] = op;
    ScoringEmitter(cg, op.getLogits(), op.getTemperature(), op.getSoftcap(),
                   KernelErrorCode::NonFiniteLogit)
        .emitValidation();
    return success();
  }
  return ScoringEmitter(cg, op.getLogits(), op.getTemperature(),
                        op.getSoftcap(), KernelErrorCode::NonFiniteLogit)
      .emit(op.getKind(), op.getScores());
}

LogicalResult lowerSharedGate(SharedGateOp op, RowCodegen &cg) {
  if (!cg.rowOf(op.getLogits()).memref)
    return op.emitOpError("logits must be an argument of the entry point");
  return ScoringEmitter(cg, op.getLogits(), std::nullopt, std::nullopt,
                        KernelErrorCode::NonFiniteSharedGateLogit)
      .emit(ScoringKind::sigmoid, op.getGate());
}

} // namespace mlir::moe::loops
