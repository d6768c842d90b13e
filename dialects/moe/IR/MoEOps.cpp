//===- MoEOps.cpp - Operations of the moe dialect -------------------------===//
//
// Verifiers check the shape rules that TableGen cannot express. Every message
// names the operand, result or attribute and the rule it breaks; the op name
// is prefixed by emitOpError.
//
//===----------------------------------------------------------------------===//

#include "dialects/moe/IR/MoEOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/Support/MathExtras.h"

#include <cmath>
#include <cstdio>

using namespace mlir;
using namespace mlir::moe;

#include "dialects/moe/IR/MoEEnums.cpp.inc"

#define GET_OP_CLASSES
#include "dialects/moe/IR/MoEOps.cpp.inc"

namespace {

/// Two sizes agree unless both are static and differ.
bool compatible(int64_t a, int64_t b) {
  return ShapedType::isDynamic(a) || ShapedType::isDynamic(b) || a == b;
}

std::string dimString(int64_t size) {
  return ShapedType::isDynamic(size) ? std::string("?") : std::to_string(size);
}

RankedTensorType tensorOf(Value value) {
  return cast<RankedTensorType>(value.getType());
}

/// The static size of dimension `dim` of `value`, or an error naming the
/// operand and what the dimension means.
FailureOr<int64_t> staticDim(Operation *op, Value value, StringRef name,
                             unsigned dim, StringRef meaning) {
  RankedTensorType type = tensorOf(value);
  int64_t size = type.getDimSize(dim);
  if (ShapedType::isDynamic(size))
    return op->emitOpError() << name << " must have a static " << meaning
                             << " dimension (dim " << dim << "), got " << type;
  if (size < 1)
    return op->emitOpError() << name << " must have a non-empty " << meaning
                             << " dimension (dim " << dim << "), got " << type;
  return size;
}

/// The token dimensions (dim 0) of two values must agree.
LogicalResult sameTokens(Operation *op, Value a, StringRef aName, Value b,
                         StringRef bName) {
  int64_t ta = tensorOf(a).getDimSize(0), tb = tensorOf(b).getDimSize(0);
  if (compatible(ta, tb))
    return success();
  return op->emitOpError() << "token dimension of " << bName << " ("
                           << dimString(tb) << ") must match " << aName << " ("
                           << dimString(ta) << ")";
}

/// Dimension `dim` of `value` must be `expected` (static) or dynamic.
LogicalResult dimIs(Operation *op, Value value, StringRef name, unsigned dim,
                    int64_t expected, StringRef rule) {
  int64_t size = tensorOf(value).getDimSize(dim);
  if (compatible(size, expected))
    return success();
  return op->emitOpError() << name << " dim " << dim << " is " << size
                           << ", expected " << expected << " (" << rule << ")";
}

/// `attr` = value must lie in [lo, hi]; `hiMeaning` says what hi is.
LogicalResult inRange(Operation *op, StringRef attr, int64_t value, int64_t lo,
                      int64_t hi, StringRef hiMeaning) {
  if (value >= lo && value <= hi)
    return success();
  return op->emitOpError() << "attribute '" << attr << "' = " << value
                           << " must be in [" << lo << ", " << hi << "] ("
                           << hiMeaning << ")";
}

/// Doubles in messages: %g, with lower-case inf and nan.
std::string doubleString(double value) {
  char text[32];
  std::snprintf(text, sizeof(text), "%g", value);
  return text;
}

/// An attribute used as an f32 constant must be a normal f32 value > 0.
LogicalResult normalPositiveF32(Operation *op, StringRef attr, double value,
                                StringRef why = "") {
  if (std::isfinite(value) && value >= 1.1754944e-38 && value <= 3.4028234e38)
    return success();
  InFlightDiagnostic diag = op->emitOpError()
                            << "attribute '" << attr << "' = "
                            << doubleString(value)
                            << " must be a normal f32 value > 0, in "
                               "[1.1754944e-38, 3.4028234e38]";
  if (!why.empty())
    diag << " (" << why << ")";
  return diag;
}

/// The number of experts that `ids` select among, when its producer says:
/// the E of moe.topk's keys, or the `experts` of hash_select/forced_select.
std::optional<int64_t> producerExperts(Value ids) {
  Operation *producer = ids.getDefiningOp();
  if (isa_and_nonnull<TopKOp, TopPOp, ExpertChoiceOp>(producer)) {
    int64_t experts = tensorOf(producer->getOperand(0)).getDimSize(1);
    if (!ShapedType::isDynamic(experts))
      return experts;
  }
  if (auto hash = dyn_cast_or_null<HashSelectOp>(producer))
    return hash.getExperts();
  if (auto forced = dyn_cast_or_null<ForcedSelectOp>(producer))
    return forced.getExperts();
  return std::nullopt;
}

/// Ids must select among as many experts as their consumer expects, so that
/// the validation done by their producer covers the consumer's accesses.
LogicalResult sameExperts(Operation *op, Value ids, int64_t experts,
                          StringRef what) {
  std::optional<int64_t> produced = producerExperts(ids);
  if (!produced || *produced == experts)
    return success();
  return op->emitOpError() << "ids select among " << *produced
                           << " experts (from '"
                           << ids.getDefiningOp()->getName() << "'), but "
                           << what << " " << experts;
}

} // namespace

//===----------------------------------------------------------------------===//
// Result names
//===----------------------------------------------------------------------===//

#define MOE_RESULT_NAME(Op, name)                                              \
  void Op::getAsmResultNames(OpAsmSetValueNameFn setNameFn) {                  \
    setNameFn(getResult(), name);                                              \
  }
MOE_RESULT_NAME(ScoreOp, "scores")
MOE_RESULT_NAME(SharedGateOp, "gate")
MOE_RESULT_NAME(AddBiasOp, "keys")
MOE_RESULT_NAME(GroupMaskOp, "masked")
MOE_RESULT_NAME(TopKOp, "ids")
MOE_RESULT_NAME(TopPOp, "ids")
MOE_RESULT_NAME(ExpertChoiceOp, "ids")
MOE_RESULT_NAME(PermuteOp, "permuted")
MOE_RESULT_NAME(CombineOp, "combined")
MOE_RESULT_NAME(HashSelectOp, "ids")
MOE_RESULT_NAME(ForcedSelectOp, "ids")
MOE_RESULT_NAME(GatherOp, "weights")
MOE_RESULT_NAME(SparsemixerOp, "weights")
MOE_RESULT_NAME(NormalizeOp, "normalized")
MOE_RESULT_NAME(ScaleOp, "scaled")
MOE_RESULT_NAME(CaptureOp, "captured")
MOE_RESULT_NAME(UpdateBiasOp, "updated")
#undef MOE_RESULT_NAME

void DispatchOp::getAsmResultNames(OpAsmSetValueNameFn setNameFn) {
  setNameFn(getCounts(), "counts");
  setNameFn(getOffsets(), "offsets");
  setNameFn(getSortedSlots(), "sorted_slots");
  setNameFn(getSlotPositions(), "slot_positions");
}

//===----------------------------------------------------------------------===//
// ScoreOp
//===----------------------------------------------------------------------===//

LogicalResult ScoreOp::verify() {
  FailureOr<int64_t> experts =
      staticDim(*this, getLogits(), "logits", 1, "expert");
  if (failed(experts))
    return failure();
  // Both divide logits in f32: a normal f32 value, as scale's factor.
  for (auto [name, attr] :
       {std::pair<StringRef, std::optional<APFloat>>{"temperature",
                                                     getTemperature()},
        {"softcap", getSoftcap()}}) {
    if (!attr)
      continue;
    if (failed(normalPositiveF32(*this, name, attr->convertToDouble())))
      return failure();
  }
  if (failed(sameTokens(*this, getLogits(), "logits", getScores(), "scores")) ||
      failed(dimIs(*this, getScores(), "scores", 1, *experts,
                   "one score per expert of logits")))
    return failure();
  return success();
}

//===----------------------------------------------------------------------===//
// SharedGateOp
//===----------------------------------------------------------------------===//

LogicalResult SharedGateOp::verify() {
  FailureOr<int64_t> width =
      staticDim(*this, getLogits(), "logits", 1, "logit");
  if (failed(width))
    return failure();
  if (*width != 1)
    return emitOpError() << "logits must be [T, 1] (one logit per token), "
                            "got [T, "
                         << *width << "]";
  if (failed(sameTokens(*this, getLogits(), "logits", getGate(), "gate")) ||
      failed(dimIs(*this, getGate(), "gate", 1, 1, "one gate per token")))
    return failure();
  return success();
}

//===----------------------------------------------------------------------===//
// AddBiasOp
//===----------------------------------------------------------------------===//

LogicalResult AddBiasOp::verify() {
  FailureOr<int64_t> experts =
      staticDim(*this, getScores(), "scores", 1, "expert");
  if (failed(experts))
    return failure();
  return dimIs(*this, getBias(), "bias", 0, *experts,
               "one bias per expert of scores");
}

//===----------------------------------------------------------------------===//
// GroupMaskOp
//===----------------------------------------------------------------------===//

LogicalResult GroupMaskOp::verify() {
  FailureOr<int64_t> experts = staticDim(*this, getKeys(), "keys", 1, "expert");
  if (failed(experts))
    return failure();
  int64_t groups = getGroups();
  if (failed(inRange(*this, "groups", groups, 1, *experts,
                     "the number of experts")))
    return failure();
  if (*experts % groups != 0)
    return emitOpError() << "attribute 'groups' = " << groups
                         << " must divide the " << *experts << " experts";
  if (failed(inRange(*this, "keep", getKeep(), 1, groups,
                     "the number of groups")))
    return failure();
  int64_t perGroup = *experts / groups;
  if (getGroupScore() == GroupScoreKind::top2_sum && perGroup < 2)
    return emitOpError() << "attribute 'group_score' = top2_sum needs at least "
                            "2 experts per group, got "
                         << perGroup << " (" << *experts << " experts / "
                         << groups << " groups)";
  return success();
}

//===----------------------------------------------------------------------===//
// TopKOp
//===----------------------------------------------------------------------===//

/// The rules topk and topp share: static experts, 1 <= k <= E, and [T, k]
/// ids.
LogicalResult verifySelection(Operation *op, Value keys, Value ids,
                              int64_t k) {
  FailureOr<int64_t> experts = staticDim(op, keys, "keys", 1, "expert");
  if (failed(experts) ||
      failed(inRange(op, "k", k, 1, *experts, "the number of experts")) ||
      failed(sameTokens(op, keys, "keys", ids, "ids")) ||
      failed(dimIs(op, ids, "ids", 1, k, "k ids per token")))
    return failure();
  return success();
}

LogicalResult TopKOp::verify() {
  return verifySelection(*this, getKeys(), getIds(), getK());
}

//===----------------------------------------------------------------------===//
// TopPOp
//===----------------------------------------------------------------------===//

LogicalResult TopPOp::verify() {
  if (failed(verifySelection(*this, getKeys(), getIds(), getK())))
    return failure();
  return normalPositiveF32(*this, "p", getP().convertToDouble(),
                           "the running sum of the selected keys is compared "
                           "with it in f32");
}

//===----------------------------------------------------------------------===//
// ExpertChoiceOp
//===----------------------------------------------------------------------===//

LogicalResult ExpertChoiceOp::verify() {
  if (failed(verifySelection(*this, getKeys(), getIds(), getK())))
    return failure();
  return normalPositiveF32(*this, "capacity_factor",
                           getCapacityFactor().convertToDouble(),
                           "each expert takes ceil(capacity_factor * T / E) "
                           "tokens");
}

//===----------------------------------------------------------------------===//
// UpdateBiasOp
//===----------------------------------------------------------------------===//

LogicalResult UpdateBiasOp::verify() {
  FailureOr<int64_t> experts = staticDim(*this, getBias(), "bias", 0, "expert");
  if (failed(experts) ||
      failed(dimIs(*this, getCounts(), "counts", 0, *experts,
                   "one load per expert of bias")) ||
      failed(dimIs(*this, getUpdated(), "updated", 0, *experts,
                   "one bias per expert")))
    return failure();
  return normalPositiveF32(*this, "rate", getRate().convertToDouble(),
                           "it is added to the bias in f32");
}

//===----------------------------------------------------------------------===//
// HashSelectOp
//===----------------------------------------------------------------------===//

LogicalResult HashSelectOp::verify() {
  int64_t experts = getExperts();
  if (failed(inRange(*this, "experts", experts, 1, INT32_MAX,
                     "the i32 id limit")))
    return failure();
  FailureOr<int64_t> k =
      staticDim(*this, getTable(), "table", 1, "ids-per-token");
  if (failed(k))
    return failure();
  if (*k > experts)
    return emitOpError() << "table has " << *k
                         << " ids per token, more than the " << experts
                         << " experts";
  if (tensorOf(getTable()).getDimSize(0) == 0)
    return emitOpError() << "table has no rows: every token id would be "
                            "outside it";
  if (failed(sameTokens(*this, getTokenIds(), "token_ids", getIds(), "ids")) ||
      failed(dimIs(*this, getIds(), "ids", 1, *k,
                   "one id per column of the table")))
    return failure();
  return success();
}

//===----------------------------------------------------------------------===//
// ForcedSelectOp
//===----------------------------------------------------------------------===//

LogicalResult ForcedSelectOp::verify() {
  int64_t experts = getExperts();
  if (failed(inRange(*this, "experts", experts, 1, INT32_MAX,
                     "the i32 id limit")))
    return failure();
  FailureOr<int64_t> k =
      staticDim(*this, getForcedIds(), "forced_ids", 1, "ids-per-token");
  if (failed(k))
    return failure();
  if (*k > experts)
    return emitOpError() << "forced_ids has " << *k
                         << " ids per token, more than the " << experts
                         << " experts (ids must be distinct)";
  if (failed(sameTokens(*this, getForcedIds(), "forced_ids", getIds(),
                        "ids")) ||
      failed(dimIs(*this, getIds(), "ids", 1, *k, "same k as forced_ids")))
    return failure();
  return success();
}

//===----------------------------------------------------------------------===//
// GatherOp
//===----------------------------------------------------------------------===//

LogicalResult GatherOp::verify() {
  FailureOr<int64_t> experts =
      staticDim(*this, getScores(), "scores", 1, "expert");
  if (failed(experts))
    return failure();
  FailureOr<int64_t> k = staticDim(*this, getIds(), "ids", 1, "ids-per-token");
  if (failed(k))
    return failure();
  if (*k > *experts)
    return emitOpError() << "ids has " << *k << " ids per token, more than the "
                         << *experts << " experts of scores";
  if (failed(sameExperts(*this, getIds(), *experts, "scores has")))
    return failure();
  if (failed(sameTokens(*this, getScores(), "scores", getIds(), "ids")) ||
      failed(sameTokens(*this, getScores(), "scores", getWeights(),
                        "weights")) ||
      failed(sameTokens(*this, getIds(), "ids", getWeights(), "weights")) ||
      failed(dimIs(*this, getWeights(), "weights", 1, *k, "one weight per id")))
    return failure();
  return success();
}

//===----------------------------------------------------------------------===//
// SparsemixerOp
//===----------------------------------------------------------------------===//

LogicalResult SparsemixerOp::verify() {
  FailureOr<int64_t> experts =
      staticDim(*this, getScores(), "scores", 1, "expert");
  if (failed(experts))
    return failure();
  FailureOr<int64_t> k = staticDim(*this, getIds(), "ids", 1, "ids-per-token");
  if (failed(k))
    return failure();
  if (*k > *experts)
    return emitOpError() << "ids has " << *k << " ids per token, more than the "
                         << *experts << " experts of scores";
  if (failed(sameTokens(*this, getScores(), "scores", getIds(), "ids")) ||
      failed(sameTokens(*this, getScores(), "scores", getWeights(),
                        "weights")) ||
      failed(dimIs(*this, getWeights(), "weights", 1, *k, "one weight per id")))
    return failure();
  // Compared in f32 as 2 * jitter_eps: a normal f32 value, or 0.
  double eps = getJitterEps().convertToDouble();
  if (!std::isfinite(eps) || eps < 0 || eps > 1.7014117e38 ||
      (eps != 0 && eps < 1.1754944e-38))
    return emitOpError() << "attribute 'jitter_eps' = " << doubleString(eps)
                         << " must be 0 or a normal f32 value at most "
                            "1.7014117e38 (twice it is compared in f32)";
  return success();
}

//===----------------------------------------------------------------------===//
// NormalizeOp / ScaleOp
//===----------------------------------------------------------------------===//

LogicalResult NormalizeOp::verify() {
  double epsilon = getEpsilon().convertToDouble();
  if (!std::isfinite(epsilon) || epsilon < 0)
    return emitOpError() << "attribute 'epsilon' = " << doubleString(epsilon)
                         << " must be finite and >= 0";
  return success();
}

LogicalResult ScaleOp::verify() {
  double factor = getFactor().convertToDouble();
  if (!std::isfinite(factor) || factor <= 0)
    return emitOpError() << "attribute 'factor' = " << doubleString(factor)
                         << " must be finite and > 0";
  // The weights are f32: a factor outside the normal f32 range (the spec
  // rule's, docs/spec-language.md) makes them infinite or zero.
  if (factor > 3.4028234e38 || factor < 1.1754944e-38)
    return emitOpError() << "attribute 'factor' = " << doubleString(factor)
                         << " must be a normal f32 value, in "
                            "[1.1754944e-38, 3.4028234e38]";
  return success();
}

OpFoldResult ScaleOp::fold(FoldAdaptor) {
  // Scaling by exactly one is the identity; templates without a routed
  // scaling factor never pay for it.
  if (getFactor().convertToDouble() == 1.0)
    return getWeights();
  return {};
}

//===----------------------------------------------------------------------===//
// DispatchOp
//===----------------------------------------------------------------------===//

LogicalResult DispatchOp::verify() {
  int64_t experts = getExperts();
  if (failed(inRange(*this, "experts", experts, 1, INT32_MAX - 1,
                     "the i32 id limit")))
    return failure();
  FailureOr<int64_t> k = staticDim(*this, getIds(), "ids", 1, "ids-per-token");
  if (failed(k))
    return failure();
  if (failed(sameExperts(*this, getIds(), experts, "'experts' is")))
    return failure();
  if (std::optional<APFloat> factor = getCapacityFactor();
      factor && failed(normalPositiveF32(*this, "capacity_factor",
                                         factor->convertToDouble())))
    return failure();
  int64_t tokens = tensorOf(getIds()).getDimSize(0);
  int64_t slots = ShapedType::kDynamic;
  if (!ShapedType::isDynamic(tokens) &&
      (llvm::MulOverflow(tokens, *k, slots) || slots > INT32_MAX))
    return emitOpError() << "ids has " << tokens << " x " << *k
                         << " slots, more than slot indices (i32) can "
                            "address";
  if (failed(dimIs(*this, getCounts(), "counts", 0, experts,
                   "one count per expert")) ||
      failed(dimIs(*this, getOffsets(), "offsets", 0, experts + 1,
                   "experts + 1 offsets")))
    return failure();
  for (auto [value, name] :
       {std::pair<Value, StringRef>{getSortedSlots(), "sorted_slots"},
        {getSlotPositions(), "slot_positions"}}) {
    int64_t size = tensorOf(value).getDimSize(0);
    if (ShapedType::isDynamic(size))
      continue;
    if (!ShapedType::isDynamic(slots) && size != slots)
      return emitOpError() << name << " has " << size
                           << " entries, expected tokens * k = " << slots;
    if (size % *k != 0)
      return emitOpError() << name << " has " << size
                           << " entries, not a multiple of k = " << *k;
  }
  int64_t sorted = tensorOf(getSortedSlots()).getDimSize(0);
  int64_t positions = tensorOf(getSlotPositions()).getDimSize(0);
  if (!compatible(sorted, positions))
    return emitOpError() << "slot_positions has " << positions
                         << " entries, sorted_slots " << sorted
                         << " (both hold one entry per slot)";
  return success();
}

//===----------------------------------------------------------------------===//
// CaptureOp
//===----------------------------------------------------------------------===//

LogicalResult CaptureOp::verify() {
  int64_t experts = getExperts();
  if (failed(inRange(*this, "experts", experts, 1, INT32_MAX,
                     "the i32 id limit")))
    return failure();
  FailureOr<int64_t> k = staticDim(*this, getIds(), "ids", 1, "ids-per-token");
  if (failed(k))
    return failure();
  if (failed(sameExperts(*this, getIds(), experts, "'experts' is")))
    return failure();
  if (failed(sameTokens(*this, getIds(), "ids", getBuffer(), "buffer")) ||
      failed(dimIs(*this, getBuffer(), "buffer", 2, *k,
                   "layout [tokens, layers, k]")))
    return failure();
  if (tensorOf(getBuffer()).getDimSize(1) == 0)
    return emitOpError() << "buffer has no layers: every layer index would "
                            "be outside it";
  if (tensorOf(getBuffer()).getElementType().isInteger(16) && experts > 32767)
    return emitOpError() << "buffer of i16 cannot hold the ids of " << experts
                         << " experts (i16 needs experts <= 32767; use i32)";
  return success();
}

namespace {

/// Hidden rows keep their type and size (dim 1) from input to result.
LogicalResult sameRows(Operation *op, Value input, StringRef inputName,
                       Value result, StringRef resultName) {
  RankedTensorType in = tensorOf(input), out = tensorOf(result);
  if (in.getElementType() != out.getElementType())
    return op->emitOpError()
           << resultName << " element type " << out.getElementType()
           << " must match " << inputName << " (" << in.getElementType()
           << "): rows are moved, not converted";
  if (!compatible(in.getDimSize(1), out.getDimSize(1)))
    return op->emitOpError()
           << "hidden size of " << resultName << " ("
           << dimString(out.getDimSize(1)) << ") must match " << inputName
           << " (" << dimString(in.getDimSize(1)) << ")";
  return success();
}

/// `slots` (rows or entries, one per slot) must be tokens * k where both
/// are static.
LogicalResult slotsMatch(Operation *op, Value perSlot, StringRef name,
                         int64_t tokens, int64_t k) {
  int64_t size = tensorOf(perSlot).getDimSize(0);
  int64_t slots = 0;
  if (ShapedType::isDynamic(size) || ShapedType::isDynamic(tokens))
    return success();
  if (llvm::MulOverflow(tokens, k, slots) || size != slots)
    return op->emitOpError() << name << " has " << size
                             << " rows or entries, expected tokens * k = "
                             << tokens << " * " << k;
  return success();
}

} // namespace

LogicalResult PermuteOp::verify() {
  int64_t k = getK();
  if (failed(inRange(*this, "k", k, 1, INT32_MAX, "the i32 slot limit")))
    return failure();
  if (failed(sameRows(*this, getHidden(), "hidden", getPermuted(), "permuted")))
    return failure();
  int64_t tokens = tensorOf(getHidden()).getDimSize(0);
  if (failed(slotsMatch(*this, getSortedSlots(), "sorted_slots", tokens, k)) ||
      failed(slotsMatch(*this, getPermuted(), "permuted", tokens, k)))
    return failure();
  if (!compatible(tensorOf(getSortedSlots()).getDimSize(0),
                  tensorOf(getPermuted()).getDimSize(0)))
    return emitOpError() << "permuted has "
                         << dimString(tensorOf(getPermuted()).getDimSize(0))
                         << " rows, sorted_slots "
                         << dimString(tensorOf(getSortedSlots()).getDimSize(0))
                         << " entries (one row per slot)";
  return success();
}

LogicalResult CombineOp::verify() {
  FailureOr<int64_t> k =
      staticDim(*this, getWeights(), "weights", 1, "ids-per-token");
  if (failed(k))
    return failure();
  if (failed(sameRows(*this, getExpertOutput(), "expert_output",
                      getCombined(), "combined")) ||
      failed(sameTokens(*this, getWeights(), "weights", getCombined(),
                        "combined")))
    return failure();
  int64_t tokens = tensorOf(getWeights()).getDimSize(0);
  if (failed(slotsMatch(*this, getSlotPositions(), "slot_positions", tokens,
                        *k)) ||
      failed(slotsMatch(*this, getExpertOutput(), "expert_output", tokens,
                        *k)))
    return failure();
  if (!compatible(tensorOf(getSlotPositions()).getDimSize(0),
                  tensorOf(getExpertOutput()).getDimSize(0)))
    return emitOpError()
           << "expert_output has "
           << dimString(tensorOf(getExpertOutput()).getDimSize(0))
           << " rows, slot_positions "
           << dimString(tensorOf(getSlotPositions()).getDimSize(0))
           << " entries (one row per slot)";
  return success();
}
