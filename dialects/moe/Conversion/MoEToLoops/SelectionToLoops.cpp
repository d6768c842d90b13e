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
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/MathExtras.h"

#include <algorithm>
#include <limits>

namespace mlir::moe::loops {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int64_t kNoId = std::numeric_limits<int32_t>::max();
/// Kept-group chunks an arg-max pass unrolls at most (code size: a pass is
/// about a dozen vector ops per chunk).
constexpr int64_t kMaxKeptChunksPerPass = 32;

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

/// Orders entries i and j of the lists (values, ids) so that i comes
/// first under the selection order: a comparator of a sorting network.
void compareExchange(OpBuilder &b, Location loc, SmallVector<Value> &values,
                     SmallVector<Value> &ids, int64_t i, int64_t j) {
  Value swap = comesBefore(b, loc, values[j], ids[j], values[i], ids[i]);
  Value vi = b.create<arith::SelectOp>(loc, swap, values[j], values[i]);
  Value vj = b.create<arith::SelectOp>(loc, swap, values[i], values[j]);
  Value ii = b.create<arith::SelectOp>(loc, swap, ids[j], ids[i]);
  Value ij = b.create<arith::SelectOp>(loc, swap, ids[i], ids[j]);
  values[i] = vi, values[j] = vj, ids[i] = ii, ids[j] = ij;
}

/// One chunk of an arg-max pass: the lanes' best (value, id) so far,
/// `best`, updated with the chunk's keys that come after the previous pick
/// (and, with `bound`, lie below it).
SmallVector<Value> argmaxStep(RowCodegen &cg, Value value, Value ids,
                              Value prevValue, Value prevId, ValueRange best,
                              Value bound = Value()) {
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  Value eligible = comesAfter(b, loc, value, ids, prevValue, prevId);
  if (bound) {
    Value inRange =
        b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::slt, ids, bound);
    eligible = b.create<arith::AndIOp>(loc, inRange, eligible);
  }
  Value better = b.create<arith::AndIOp>(
      loc, eligible, comesBefore(b, loc, value, ids, best[0], best[1]));
  return {b.create<arith::SelectOp>(loc, better, value, best[0]),
          b.create<arith::SelectOp>(loc, better, ids, best[1])};
}

/// k arg-max passes: `pass(prevValue, prevId)` gives the lanes' best
/// (value, id) after the previous pick; the pick is the largest value, then
/// the lowest id holding it, made safe for [0, n).
void emitArgmaxPasses(
    RowCodegen &cg, int64_t n, int64_t k,
    function_ref<SmallVector<Value>(Value prevValue, Value prevId)> pass,
    function_ref<void(Value j, Value id)> emitPick) {
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  // Before the first pick, everything comes after (+inf, -1).
  cg.forLoop(
      0, k, {cg.f32(kInf), cg.i32(-1)},
      [&](Value j, ValueRange previous) -> SmallVector<Value> {
        Value prevValue = cg.splat(previous[0]);
        Value prevId = cg.splat(previous[1]);
        SmallVector<Value> best = pass(prevValue, prevId);
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

/// Emits the k best (key, id) pairs of `keys` (n valid entries) in order,
/// calling `emitPick(j, id)` for each; the picks are in range [0, n).
void emitTopK(RowCodegen &cg, const RowRef &keys, int64_t n, int64_t k,
              function_ref<void(Value j, Value id)> emitPick) {
  Value bound = cg.splat(cg.i32(n));
  emitArgmaxPasses(
      cg, n, k,
      [&](Value prevValue, Value prevId) {
        return cg.forEachChunk(
            n, {cg.splat(cg.f32(-kInf)), cg.splat(cg.i32(kNoId))},
            [&](Value e0, int64_t valid, ValueRange iter) {
              Value value = cg.loadChunk(keys, e0, valid, cg.f32(-kInf));
              Value ids = cg.laneIds(e0);
              return argmaxStep(cg, value, ids, prevValue, prevId, iter,
                                bound);
            });
      },
      emitPick);
}

/// One vector chunk of a lane-list top-k: its first expert (index, may be
/// dynamic), its valid lanes, and whether all its ids are known to be below
/// n (a dynamic e0 hides it from the folder).
struct ListChunk {
  Value e0;
  int64_t valid;
  bool inBounds = false;
};

/// The merge of lane lists: each lane's list (values, ids; entries in the
/// selection order, ineligible ones (-inf, kNoId) last) gives up its head
/// when it holds the best of the lanes' heads (the largest value, then the
/// lowest id), k times; a round with no eligible head yields kNoId, which
/// becomes 0 as with the passes.
void emitLaneListMerge(RowCodegen &cg, SmallVector<Value> &values,
                       SmallVector<Value> &ids, int64_t n, int64_t k,
                       function_ref<void(Value j, Value id)> emitPick) {
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  Value noId = cg.splat(cg.i32(kNoId));
  Value minusInf = cg.splat(cg.f32(-kInf));
  const int64_t kept = static_cast<int64_t>(values.size());
  for (int64_t j = 0; j < k; ++j) {
    Value bestValue = b.create<vector::ReductionOp>(
        loc, vector::CombiningKind::MAXIMUMF, values[0]);
    Value holders = b.create<arith::CmpFOp>(
        loc, arith::CmpFPredicate::OEQ, values[0], cg.splat(bestValue));
    Value bestId = b.create<vector::ReductionOp>(
        loc, vector::CombiningKind::MINSI,
        b.create<arith::SelectOp>(loc, holders, ids[0], noId));
    emitPick(cg.index(j), cg.safeId(bestId, n));
    if (j + 1 == k)
      break;
    // The lane holding the pick moves its list up by one.
    Value popped = b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::eq,
                                           ids[0], cg.splat(bestId));
    for (int64_t c = 0; c < kept; ++c) {
      Value nextValue = c + 1 < kept ? values[c + 1] : minusInf;
      Value nextId = c + 1 < kept ? ids[c + 1] : noId;
      values[c] = b.create<arith::SelectOp>(loc, popped, nextValue, values[c]);
      ids[c] = b.create<arith::SelectOp>(loc, popped, nextId, ids[c]);
    }
  }
}

/// Lane i of the result holds lane i ^ offset of `v`.
Value xorLanes(RowCodegen &cg, Value v, int64_t offset);

/// The merge of lane lists by a bitonic merge tree across the lanes
/// (lane_tree): at each of log2(W) levels every lane merges its sorted list
/// with that of the lane `offset` away, keeping the better half (a bitonic
/// sequence, then log2(L) compare-exchange stages sort it), so that after
/// the last level every lane holds the k best of the row in order. Picks
/// equal emitLaneListMerge's (the same strict total order, kNoId where
/// fewer than k are eligible). About three times the instructions of the
/// k merge rounds, but independent of k in depth: log2(W) levels of a few
/// dependent steps where the rounds chain k reductions of log2(W) steps
/// each, and the host's route kernels were bound by that chain.
void emitLaneListBitonicMerge(RowCodegen &cg, SmallVector<Value> &values,
                              SmallVector<Value> &ids, int64_t n, int64_t k,
                              function_ref<void(Value j, Value id)> emitPick) {
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  const int64_t length = int64_t(llvm::PowerOf2Ceil(uint64_t(k)));
  // Lists of `length`, padded with entries after every eligible one.
  values.resize(length, cg.splat(cg.f32(-kInf)));
  ids.resize(length, cg.splat(cg.i32(kNoId)));
  for (int64_t offset = 1; offset < cg.width; offset *= 2) {
    // The better of A[i] and B[L-1-i]: the top L of both lists, bitonic.
    SmallVector<Value> merged(length), mergedIds(length);
    for (int64_t i = 0; i < length; ++i) {
      Value otherValue = xorLanes(cg, values[length - 1 - i], offset);
      Value otherId = xorLanes(cg, ids[length - 1 - i], offset);
      Value mine = comesBefore(b, loc, values[i], ids[i], otherValue, otherId);
      merged[i] = b.create<arith::SelectOp>(loc, mine, values[i], otherValue);
      mergedIds[i] = b.create<arith::SelectOp>(loc, mine, ids[i], otherId);
    }
    for (int64_t d = length / 2; d >= 1; d /= 2)
      for (int64_t i = 0; i < length; ++i)
        if ((i & d) == 0)
          compareExchange(b, loc, merged, mergedIds, i, i + d);
    values = std::move(merged);
    ids = std::move(mergedIds);
  }
  for (int64_t j = 0; j < k; ++j) {
    Value id = b.create<vector::ExtractOp>(loc, ids[j], ArrayRef<int64_t>{0});
    emitPick(cg.index(j), cg.safeId(id, n));
  }
}

/// Top-k by lane lists over `chunks` of the row: lane l's elements (one per
/// chunk) are loaded once and sorted in registers by a sorting network
/// under the selection order, then merged (emitLaneListMerge). Ineligible
/// elements (ids >= n, NaN keys) become (-inf, kNoId), which comes after
/// every eligible key, -inf keys of masked groups included. The picks equal
/// the passes' one by one: both take the remaining maximum of one strict
/// total order. At most kMaxLaneListChunks chunks.
void emitLaneLists(RowCodegen &cg, const RowRef &keys, int64_t n,
                   ArrayRef<ListChunk> chunkList, int64_t k,
                   function_ref<void(Value j, Value id)> emitPick) {
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  const int64_t chunks = static_cast<int64_t>(chunkList.size());
  Value noId = cg.splat(cg.i32(kNoId));
  Value minusInf = cg.splat(cg.f32(-kInf));
  Value bound = cg.splat(cg.i32(n));
  SmallVector<Value> values, ids;
  for (const ListChunk &chunk : chunkList) {
    Value value = cg.loadChunk(keys, chunk.e0, chunk.valid, cg.f32(-kInf));
    Value id = cg.laneIds(chunk.e0);
    // Unordered: the key is NaN.
    Value eligible =
        b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::ORD, value, value);
    if (!chunk.inBounds)
      eligible = b.create<arith::AndIOp>(
          loc, eligible,
          b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::slt, id, bound));
    values.push_back(b.create<arith::SelectOp>(loc, eligible, value, minusInf));
    ids.push_back(b.create<arith::SelectOp>(loc, eligible, id, noId));
  }
  // Batcher's odd-even merge sort (63 compare-exchanges for 16 elements,
  // where neighbour transpositions take 120), on the next power of two:
  // the missing elements would be (-inf, kNoId), last in the order, so
  // every comparator that touches one leaves it in place and is dropped.
  const int64_t padded = int64_t(llvm::PowerOf2Ceil(uint64_t(chunks)));
  for (int64_t p = 1; p < padded; p *= 2)
    for (int64_t d = p; d >= 1; d /= 2)
      for (int64_t j = d % p; j + d < padded; j += 2 * d)
        for (int64_t i = 0; i < std::min(d, padded - j - d); ++i)
          if ((i + j) / (2 * p) == (i + j + d) / (2 * p) && i + j + d < chunks)
            compareExchange(b, loc, values, ids, i + j, i + j + d);
  // A lane gives at most k picks, so its list needs only its k best.
  const int64_t kept = std::min(chunks, k);
  values.resize(kept);
  ids.resize(kept);
  if (cg.topkMethod == TopKMethod::LaneTree && cg.width > 1)
    emitLaneListBitonicMerge(cg, values, ids, n, k, emitPick);
  else
    emitLaneListMerge(cg, values, ids, n, k, emitPick);
}

/// The row's chunks in order, for emitLaneLists.
SmallVector<ListChunk> rowChunks(RowCodegen &cg, int64_t n) {
  SmallVector<ListChunk> chunks;
  for (int64_t e0 = 0; e0 < n; e0 += cg.width)
    chunks.push_back({cg.index(e0), std::min<int64_t>(cg.width, n - e0)});
  return chunks;
}

void emitLaneListTopK(RowCodegen &cg, const RowRef &keys, int64_t n,
                      int64_t k, function_ref<void(Value j, Value id)> emitPick) {
  emitLaneLists(cg, keys, n, rowChunks(cg, n), k, emitPick);
}

/// Lane lists for a row too wide to sort in registers (more than
/// kMaxLaneListChunks chunks per lane), in two streaming passes:
///  1. each lane's largest eligible key; the k-th largest of those W
///     maxima, t, bounds the row's k-th key from below (k lanes hold a key
///     >= t), so no key below t is picked;
///  2. a chunk in which some lane holds a key >= t inserts it into that
///     lane's register list of k. A lane's keys come in increasing id
///     order, so a key goes after the equal ones already listed, and a
///     strict comparison places it. Few chunks hold such a key on typical
///     rows (about 9 of 32 to 256 at k = 8, docs/benchmarks.md), so most
///     cost a load, a compare and a vote.
/// The lists are then merged as for the sorted ones. When t is -inf (fewer
/// than k lanes hold a key above -inf: masked groups narrower than the
/// segment, or invalid input) the row takes the arg-max passes, whose
/// order handles -inf keys; so does a segment of fewer than k lanes.
void emitBoundedLaneLists(RowCodegen &cg, const RowRef &keys, int64_t n,
                          int64_t k,
                          function_ref<void(Value j, Value id)> emitPick) {
  if (cg.width < k)
    return emitTopK(cg, keys, n, k, emitPick);
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  Value minusInf = cg.splat(cg.f32(-kInf));
  Value noId = cg.splat(cg.i32(kNoId));
  Value bound = cg.splat(cg.i32(n));
  // Lanes of a tail chunk past the row read padding, never a key.
  auto inRow = [&](Value test, Value e0, int64_t valid) -> Value {
    if (valid == cg.width)
      return test;
    return b.create<arith::AndIOp>(
        loc, test,
        b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::slt,
                                cg.laneIds(e0), bound));
  };

  // Pass 1. A NaN key never compares greater, so it never becomes a maximum.
  Value laneMax = cg.forEachChunk(
      n, {minusInf},
      [&](Value e0, int64_t valid, ValueRange iter) -> SmallVector<Value> {
        Value value = cg.loadChunk(keys, e0, valid, cg.f32(-kInf));
        Value larger = inRow(b.create<arith::CmpFOp>(
                                 loc, arith::CmpFPredicate::OGT, value, iter[0]),
                             e0, valid);
        return {b.create<arith::SelectOp>(loc, larger, value, iter[0])};
      })[0];
  // t: k - 1 rounds each drop the largest maximum (its lowest lane), then
  // the largest left.
  Value lanes = cg.laneIds(cg.index(0));
  Value noLane = cg.splat(cg.i32(cg.width));
  for (int64_t j = 0; j + 1 < k; ++j) {
    Value top = b.create<vector::ReductionOp>(
        loc, vector::CombiningKind::MAXIMUMF, laneMax);
    Value holders = b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OEQ,
                                            laneMax, cg.splat(top));
    Value holder = b.create<vector::ReductionOp>(
        loc, vector::CombiningKind::MINSI,
        b.create<arith::SelectOp>(loc, holders, lanes, noLane));
    Value dropped = b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::eq,
                                            lanes, cg.splat(holder));
    laneMax = b.create<arith::SelectOp>(loc, dropped, minusInf, laneMax);
  }
  Value threshold = b.create<vector::ReductionOp>(
      loc, vector::CombiningKind::MAXIMUMF, laneMax);
  Value unbounded = b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OEQ,
                                            threshold, cg.f32(-kInf));
  auto ifUnbounded =
      b.create<scf::IfOp>(loc, unbounded, /*withElseRegion=*/true);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(ifUnbounded.thenBlock());
  emitTopK(cg, keys, n, k, emitPick);
  b.setInsertionPointToStart(ifUnbounded.elseBlock());

  // Pass 2: lists[0, k) are the values, lists[k, 2k) the ids.
  SmallVector<Value> init(k, minusInf);
  init.append(k, noId);
  Value t = cg.splat(threshold);
  SmallVector<Value> lists = cg.forEachChunk(
      n, init,
      [&](Value e0, int64_t valid, ValueRange iter) -> SmallVector<Value> {
        Value value = cg.loadChunk(keys, e0, valid, cg.f32(-kInf));
        Value candidate = inRow(
            b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OGE, value, t),
            e0, valid);
        Value any = b.create<vector::ReductionOp>(
            loc, vector::CombiningKind::OR, candidate);
        auto ifAny = b.create<scf::IfOp>(loc, iter.getTypes(), any,
                                         /*withElseRegion=*/true);
        OpBuilder::InsertionGuard inner(b);
        b.setInsertionPointToStart(ifAny.thenBlock());
        // A lane without a candidate inserts -inf, which goes nowhere:
        // every listed value is >= -inf.
        Value v = b.create<arith::SelectOp>(loc, candidate, value, minusInf);
        Value id = cg.laneIds(e0);
        // Entry c moves down where the new key goes before it; the key
        // lands at the first such entry. Both follow from the old list.
        SmallVector<Value> next(2 * k);
        Value before;
        for (int64_t c = 0; c < k; ++c) {
          Value previous = before;
          before = b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OGT, v,
                                           iter[c]);
          Value inValue = c == 0 ? v
                                 : b.create<arith::SelectOp>(
                                       loc, previous, iter[c - 1], v);
          Value inId = c == 0 ? id
                              : b.create<arith::SelectOp>(
                                    loc, previous, iter[k + c - 1], id);
          next[c] = b.create<arith::SelectOp>(loc, before, inValue, iter[c]);
          next[k + c] =
              b.create<arith::SelectOp>(loc, before, inId, iter[k + c]);
        }
        b.create<scf::YieldOp>(loc, next);
        b.setInsertionPointToStart(ifAny.elseBlock());
        b.create<scf::YieldOp>(loc, iter);
        return SmallVector<Value>(ifAny.getResults());
      },
      /*unroll=*/4);
  SmallVector<Value> values(lists.begin(), lists.begin() + k);
  SmallVector<Value> ids(lists.begin() + k, lists.end());
  if (cg.topkMethod == TopKMethod::LaneTree && cg.width > 1)
    emitLaneListBitonicMerge(cg, values, ids, n, k, emitPick);
  else
    emitLaneListMerge(cg, values, ids, n, k, emitPick);
}

/// Top-k by the configured method.
void emitConfiguredTopK(RowCodegen &cg, const RowRef &keys, int64_t n,
                        int64_t k,
                        function_ref<void(Value j, Value id)> emitPick) {
  if (cg.topkMethod != TopKMethod::LaneLists &&
      cg.topkMethod != TopKMethod::LaneTree)
    return emitTopK(cg, keys, n, k, emitPick);
  if ((n + cg.width - 1) / cg.width <= kMaxLaneListChunks)
    return emitLaneListTopK(cg, keys, n, k, emitPick);
  emitBoundedLaneLists(cg, keys, n, k, emitPick);
}

/// Inserts (value, id) into the sorted list (listValues, listIds) holding
/// `size` entries (index), keeping at most k: it goes after every entry
/// whose key is >= its own, since ids are inserted in increasing order.
void emitListInsert(RowCodegen &cg, const RowRef &listValues,
                    const RowRef &listIds, int64_t k, Value size, Value value,
                    Value id) {
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  Value position =
      cg.forLoop(cg.index(0), size, {cg.index(0)},
                 [&](Value i, ValueRange count) -> SmallVector<Value> {
                   Value ahead = b.create<arith::CmpFOp>(
                       loc, arith::CmpFPredicate::OGE, cg.load(listValues, i),
                       value);
                   Value next =
                       b.create<arith::AddIOp>(loc, count[0], cg.index(1));
                   return {b.create<arith::SelectOp>(loc, ahead, next,
                                                     count[0])};
                 })[0];
  Value fits = b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::ult,
                                       position, cg.index(k));
  cg.ifThen(fits, [&] {
    // Shift [position, last) down by one, from the end; the k-th entry of
    // a full list falls off.
    Value last = b.create<arith::MinUIOp>(loc, size, cg.index(k - 1));
    Value count = b.create<arith::SubIOp>(
        loc, b.create<arith::MaxUIOp>(loc, last, position), position);
    cg.forLoop(cg.index(0), count, {}, [&](Value q, ValueRange) {
      Value to = b.create<arith::SubIOp>(loc, last, q);
      Value from = b.create<arith::SubIOp>(loc, to, cg.index(1));
      cg.store(cg.load(listValues, from), listValues, to);
      cg.store(cg.load(listIds, from), listIds, to);
      return SmallVector<Value>{};
    });
    cg.store(value, listValues, position);
    cg.store(id, listIds, position);
  });
}

/// Top-k in one pass over the experts in increasing id order: the first k
/// fill a sorted list, then a chunk is examined lane by lane only if one of
/// its keys is strictly greater than the k-th kept key (an equal key has a
/// larger id, so it comes after). On typical rows few chunks pass the test.
void emitInsertionTopK(RowCodegen &cg, const RowRef &keys, int64_t n,
                       int64_t k, const RowRef &ids) {
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  RowRef listValues = cg.allocRow(b.getF32Type(), k);
  RowRef listIds = cg.allocRow(b.getI32Type(), k);
  auto asI32 = [&](Value index) -> Value {
    return b.create<arith::IndexCastOp>(loc, b.getI32Type(), index);
  };

  const int64_t filled = std::min(k, n);
  cg.forLoop(0, filled, {}, [&](Value e, ValueRange) {
    emitListInsert(cg, listValues, listIds, k, e, cg.loadF32(keys, e), asI32(e));
    return SmallVector<Value>{};
  });

  Value kthIndex = cg.index(k - 1);
  Value lanesK = cg.splat(cg.i32(k));
  Value lanesN = cg.splat(cg.i32(n));
  cg.forEachChunk(
      n, {cg.load(listValues, kthIndex)},
      [&](Value e0, int64_t valid, ValueRange iter) -> SmallVector<Value> {
        Value threshold = iter[0];
        Value value = cg.loadChunk(keys, e0, valid, cg.f32(-kInf));
        Value laneIds = cg.laneIds(e0);
        Value candidate = b.create<arith::AndIOp>(
            loc,
            b.create<arith::AndIOp>(
                loc,
                b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::sge,
                                        laneIds, lanesK),
                b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::slt,
                                        laneIds, lanesN)),
            b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OGT, value,
                                    cg.splat(threshold)));
        Value any = b.create<vector::ReductionOp>(
            loc, vector::CombiningKind::OR, candidate);
        auto ifAny = b.create<scf::IfOp>(loc, TypeRange{b.getF32Type()}, any,
                                         /*withElseRegion=*/true);
        {
          OpBuilder::InsertionGuard guard(b);
          b.setInsertionPointToStart(ifAny.thenBlock());
          Value updated = cg.forLoop(
              0, cg.width, {threshold},
              [&](Value lane, ValueRange current) -> SmallVector<Value> {
                Value e = b.create<arith::AddIOp>(loc, e0, lane);
                Value inRow = b.create<arith::AndIOp>(
                    loc,
                    b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::uge, e,
                                            cg.index(k)),
                    b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::ult, e,
                                            cg.index(n)));
                // Clamped so that a lane past the row never addresses it.
                Value clamped =
                    b.create<arith::MinUIOp>(loc, e, cg.index(n - 1));
                Value key = cg.loadF32(keys, clamped);
                Value enters = b.create<arith::AndIOp>(
                    loc, inRow,
                    b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OGT,
                                            key, current[0]));
                cg.ifThen(enters, [&] {
                  emitListInsert(cg, listValues, listIds, k, cg.index(k), key,
                                 asI32(e));
                });
                return {cg.load(listValues, kthIndex)};
              })[0];
          b.create<scf::YieldOp>(loc, updated);
          b.setInsertionPointToStart(ifAny.elseBlock());
          b.create<scf::YieldOp>(loc, threshold);
        }
        return {ifAny.getResult(0)};
      });

  cg.forLoop(0, k, {}, [&](Value j, ValueRange) {
    cg.store(cg.safeId(cg.load(listIds, j), n), ids, j);
    return SmallVector<Value>{};
  });
}

/// Whether a group_mask's masked keys go to a top-k that reads the kept
/// groups straight from the keys: the masked row's one reader is a moe.topk
/// by lane lists or arg-max passes, the groups are whole chunks, and the
/// kept groups' chunks fit a lane's list (DeepSeek-V3: 4 groups of 2 chunks
/// of 16 lanes, so 8 elements per lane to sort instead of 16) or a pass's
/// unrolled body (the same 8 chunks instead of the row's 16).
bool topKReadsKeptGroups(GroupMaskOp op, const RowCodegen &cg) {
  Value masked = op.getMasked();
  if (!masked.hasOneUse() || cg.topkMethod == TopKMethod::Insertion)
    return false;
  auto topk = dyn_cast<TopKOp>(*masked.getUsers().begin());
  auto type = cast<RankedTensorType>(masked.getType());
  const int64_t n = type.getDimSize(1);
  const int64_t perGroup = n / op.getGroups();
  const int64_t keep = op.getKeep();
  // Lane lists sort a lane's kept elements in registers; arg-max passes
  // unroll the kept chunks into each pass.
  const int64_t maxChunks = (cg.topkMethod == TopKMethod::LaneLists ||
                             cg.topkMethod == TopKMethod::LaneTree)
                                ? kMaxLaneListChunks
                                : kMaxKeptChunksPerPass;
  return topk && perGroup % cg.width == 0 &&
         keep * perGroup >= int64_t(topk.getK()) &&
         keep * (perGroup / cg.width) <= maxChunks;
}

/// Top-k of a group_mask's keys from the kept groups' chunks alone. The
/// same picks as over the masked row: on valid input every kept key is
/// finite and the kept groups hold at least k experts (docs/semantics.md,
/// section 5), so no -inf key of a masked group is ever picked. (On invalid
/// input, a NaN key, the call fails; the picks stay in range.)
void emitKeptGroupsTopK(RowCodegen &cg, const RowCodegen::KeptGroups &groups,
                        int64_t n, int64_t k, const RowRef &ids) {
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  SmallVector<ListChunk> chunks;
  for (int64_t r = 0; r < groups.keep; ++r) {
    Value group = b.create<arith::IndexCastOp>(
        loc, b.getIndexType(), cg.load(groups.groups, cg.index(r)));
    Value first = b.create<arith::MulIOp>(loc, group, cg.index(groups.perGroup));
    for (int64_t c = 0; c * cg.width < groups.perGroup; ++c)
      chunks.push_back({b.create<arith::AddIOp>(loc, first,
                                                cg.index(c * cg.width)),
                        cg.width,
                        /*inBounds=*/true});
  }
  auto pick = [&](Value j, Value id) { cg.store(id, ids, j); };
  if (cg.topkMethod == TopKMethod::LaneLists ||
      cg.topkMethod == TopKMethod::LaneTree)
    return emitLaneLists(cg, groups.keys, n, chunks, k, pick);
  // Arg-max passes over the kept chunks only: half the row's chunks for
  // DeepSeek-V3 (4 of 8 groups), the same picks (the masked keys are -inf
  // and at least k kept keys come before them).
  emitArgmaxPasses(
      cg, n, k,
      [&](Value prevValue, Value prevId) {
        SmallVector<Value> best{cg.splat(cg.f32(-kInf)),
                                cg.splat(cg.i32(kNoId))};
        for (const ListChunk &chunk : chunks) {
          Value value =
              cg.loadChunk(groups.keys, chunk.e0, chunk.valid, cg.f32(-kInf));
          Value ids = cg.laneIds(chunk.e0);
          best = argmaxStep(cg, value, ids, prevValue, prevId, best);
        }
        return best;
      },
      pick);
}

LogicalResult lowerTopK(TopKOp op, RowCodegen &cg) {
  RowRef ids = cg.newRow(op.getIds());
  auto grouped = cg.keptGroups.find(op.getKeys());
  if (grouped != cg.keptGroups.end()) {
    emitKeptGroupsTopK(cg, grouped->second,
                       cast<RankedTensorType>(op.getKeys().getType())
                           .getDimSize(1),
                       op.getK(), ids);
    return success();
  }
  RowRef keys = cg.rowOf(op.getKeys());
  if (cg.topkMethod == TopKMethod::Insertion) {
    emitInsertionTopK(cg, keys, keys.size, op.getK(), ids);
    return success();
  }
  emitConfiguredTopK(cg, keys, keys.size, op.getK(),
                     [&](Value j, Value id) { cg.store(id, ids, j); });
  return success();
}

/// Top-p: the top-k picks, then one pass over the k slots that keeps the
/// running f32 sum of their keys and marks every slot after the one where
/// it first exceeds p as unused (-1). Scalar code once per token: k <= 64
/// adds and compares, beside the top-k's work over E keys.
LogicalResult lowerTopP(TopPOp op, RowCodegen &cg) {
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  RowRef ids = cg.newRow(op.getIds());
  RowRef keys = cg.rowOf(op.getKeys());
  const int64_t k = op.getK();
  if (cg.topkMethod == TopKMethod::Insertion)
    emitInsertionTopK(cg, keys, keys.size, k, ids);
  else
    emitConfiguredTopK(cg, keys, keys.size, k,
                       [&](Value j, Value id) { cg.store(id, ids, j); });
  Value p = cg.f32(op.getP().convertToDouble());
  cg.forLoop(0, k, {cg.f32(0.0), cg.boolean(false)},
             [&](Value j, ValueRange iter) -> SmallVector<Value> {
               Value id = cg.load(ids, j);
               Value cut = iter[1];
               cg.ifThen(cut, [&] { cg.store(cg.i32(-1), ids, j); });
               Value e = b.create<arith::IndexCastOp>(loc, b.getIndexType(), id);
               Value sum = b.create<arith::AddFOp>(loc, iter[0],
                                                   cg.loadF32(keys, e));
               Value passed = b.create<arith::CmpFOp>(
                   loc, arith::CmpFPredicate::OGT, sum, p);
               return {sum, b.create<arith::OrIOp>(loc, cut, passed)};
             });
  return success();
}

/// The two largest of (best[0] >= best[1]) and `key`, scalars or lane-wise
/// vectors alike (a repeated maximum counts twice).
SmallVector<Value> keepTopTwo(OpBuilder &b, Location loc, Value key,
                              ValueRange best) {
  Value newFirst =
      b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OGT, key, best[0]);
  Value second = b.create<arith::SelectOp>(
      loc, newFirst, best[0], b.create<arith::MaximumFOp>(loc, best[1], key));
  Value largest = b.create<arith::SelectOp>(loc, newFirst, key, best[0]);
  return {largest, second};
}

/// Lane-wise, the two largest keys of `chunks` whole chunks from `first`
/// (as the scalar loop of lowerGroupMask keeps them).
std::pair<Value, Value> laneTopTwo(RowCodegen &cg, const RowRef &keys,
                                   Value first, int64_t chunks) {
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  Value minusInf = cg.splat(cg.f32(-kInf));
  SmallVector<Value> top = cg.forLoop(
      0, chunks, {minusInf, minusInf},
      [&](Value c, ValueRange best) -> SmallVector<Value> {
        Value e0 = b.create<arith::AddIOp>(
            loc, first,
            b.create<arith::MulIOp>(loc, c, cg.index(cg.width)));
        Value key = cg.loadChunk(keys, e0, cg.width, cg.f32(-kInf));
        return keepTopTwo(b, loc, key, best);
      });
  return {top[0], top[1]};
}

/// Lane i of the result holds lane i ^ offset of `v`.
Value xorLanes(RowCodegen &cg, Value v, int64_t offset) {
  SmallVector<int64_t> mask;
  for (int64_t i = 0; i < cg.width; ++i)
    mask.push_back(i ^ offset);
  return cg.b.create<vector::ShuffleOp>(cg.loc, v, v, mask);
}

/// The two largest of two pairs of two largest (a repeated maximum counts
/// twice).
std::pair<Value, Value> mergeTopTwo(RowCodegen &cg, std::pair<Value, Value> x,
                                    std::pair<Value, Value> y) {
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  Value largest = b.create<arith::MaximumFOp>(loc, x.first, y.first);
  Value second = b.create<arith::MaximumFOp>(
      loc, b.create<arith::MinimumFOp>(loc, x.first, y.first),
      b.create<arith::MaximumFOp>(loc, x.second, y.second));
  return {largest, second};
}

/// Every group's score at once, for `groups` a power of two <= width: the
/// lane-wise pairs of all groups go through one butterfly that also splits
/// the groups among the lanes (at offset W/2 the lower lanes keep the first
/// half of the groups and receive their partners' values of it, and so on),
/// then the lanes sharing a group reduce it. Lane l ends with group
/// `groupOf[l]`'s score: log2(W) shuffle steps in all instead of log2(W)
/// per group and reduction (DeepSeek-V3 on a warp: 14 shuffles, not 120).
/// Returns the scores and, lane by lane, the group each belongs to.
std::pair<Value, Value> transposedGroupScores(RowCodegen &cg,
                                              const RowRef &keys,
                                              int64_t groups, int64_t perGroup,
                                              bool top2) {
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  const int64_t width = cg.width;
  SmallVector<std::pair<Value, Value>> live;
  for (int64_t g = 0; g < groups; ++g)
    live.push_back(laneTopTwo(cg, keys, cg.index(g * perGroup),
                              perGroup / width));
  // Lane masks and group numbers from the lane ids (lane-varying constants
  // other than the ids themselves do not exist on a warp).
  Value lanes = cg.laneIds(cg.index(0));
  Value groupOf = cg.splat(cg.i32(0));
  int64_t offset = width / 2;
  for (int64_t count = groups; count > 1; count /= 2, offset /= 2) {
    const int64_t half = count / 2;
    Value upper = b.create<arith::CmpIOp>(
        loc, arith::CmpIPredicate::ne,
        b.create<arith::AndIOp>(loc, lanes, cg.splat(cg.i32(offset))),
        cg.splat(cg.i32(0)));
    groupOf = b.create<arith::AddIOp>(
        loc, groupOf,
        b.create<arith::SelectOp>(loc, upper, cg.splat(cg.i32(half)),
                                  cg.splat(cg.i32(0))));
    SmallVector<std::pair<Value, Value>> next;
    for (int64_t j = 0; j < half; ++j) {
      auto pick = [&](Value ifUpper, Value ifLower) {
        return b.create<arith::SelectOp>(loc, upper, ifUpper, ifLower)
            .getResult();
      };
      std::pair<Value, Value> kept{
          pick(live[half + j].first, live[j].first),
          pick(live[half + j].second, live[j].second)};
      std::pair<Value, Value> sent{
          pick(live[j].first, live[half + j].first),
          pick(live[j].second, live[half + j].second)};
      std::pair<Value, Value> received{xorLanes(cg, sent.first, offset),
                                       xorLanes(cg, sent.second, offset)};
      next.push_back(mergeTopTwo(cg, kept, received));
    }
    live = std::move(next);
  }
  std::pair<Value, Value> pair = live.front();
  for (; offset >= 1; offset /= 2)
    pair = mergeTopTwo(cg, pair,
                       {xorLanes(cg, pair.first, offset),
                        xorLanes(cg, pair.second, offset)});
  Value score = top2 ? b.create<arith::AddFOp>(loc, pair.first, pair.second)
                           .getResult()
                     : pair.first;
  return {score, groupOf};
}

/// A group's score by a scalar walk of its keys: groups need not align
/// with vector chunks. The second largest is -inf for a group of one, where
/// top2_sum degenerates to the largest.
Value scalarGroupScore(RowCodegen &cg, const RowRef &keys, Value first,
                       int64_t perGroup, bool top2) {
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  SmallVector<Value> top = cg.forLoop(
      0, perGroup, {cg.f32(-kInf), cg.f32(-kInf)},
      [&](Value i, ValueRange best) -> SmallVector<Value> {
        Value key = cg.load(keys, b.create<arith::AddIOp>(loc, first, i));
        return keepTopTwo(b, loc, key, best);
      });
  return top2 ? b.create<arith::AddFOp>(loc, top[0], top[1]).getResult()
              : top[0];
}

/// A group's score from whole vector chunks: lane-wise the two largest keys
/// (as the scalar loop below keeps them), then across lanes the largest and
/// the largest of the rest (the other lanes' largest and the second of the
/// lowest lane holding the largest, so that a repeated maximum counts
/// twice).
Value chunkedGroupScore(RowCodegen &cg, const RowRef &keys, Value first,
                        int64_t chunks, bool top2) {
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  auto [topFirst, topSecond] = laneTopTwo(cg, keys, first, chunks);
  Value top[2] = {topFirst, topSecond};
  Value largest = b.create<vector::ReductionOp>(
      loc, vector::CombiningKind::MAXIMUMF, top[0]);
  if (!top2)
    return largest;
  Value lanes = cg.laneIds(cg.index(0));
  Value holders = b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OEQ,
                                          top[0], cg.splat(largest));
  Value holder = b.create<vector::ReductionOp>(
      loc, vector::CombiningKind::MINSI,
      b.create<arith::SelectOp>(loc, holders, lanes,
                                cg.splat(cg.i32(kNoId))));
  Value isHolder = b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::eq,
                                           lanes, cg.splat(holder));
  Value rest = b.create<arith::SelectOp>(loc, isHolder, top[1], top[0]);
  Value second = b.create<vector::ReductionOp>(
      loc, vector::CombiningKind::MAXIMUMF, rest);
  return b.create<arith::AddFOp>(loc, largest, second);
}

/// Scores the groups, keeps the best `keep` (ties to the lower group) and
/// copies the keys of kept groups, -inf elsewhere. Groups are contiguous
/// runs of E / G experts. When a group is a whole number of vector chunks
/// (every real model: DeepSeek-V3's 32 experts per group), scoring and
/// masking work on chunks, and a power-of-two number of groups up to the
/// vector width is scored by one transposed butterfly; otherwise groups
/// need not align with chunks and both are scalar loops.
LogicalResult lowerGroupMask(GroupMaskOp op, RowCodegen &cg) {
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  RowRef keys = cg.rowOf(op.getKeys());
  // When the top-k reads the kept groups from the keys, no masked row.
  const bool fused = topKReadsKeptGroups(op, cg);
  RowRef masked = fused ? RowRef{} : cg.newRow(op.getMasked());
  const int64_t groups = op.getGroups();
  const int64_t perGroup = keys.size / groups;
  const bool top2 = op.getGroupScore() == GroupScoreKind::top2_sum;
  const bool chunked = perGroup % cg.width == 0;
  const int64_t chunksPerGroup = perGroup / cg.width;

  // The masked row needs a kept flag per group; the top-k that reads the
  // kept groups straight from the keys needs their list.
  RowRef kept = fused ? RowRef{} : cg.allocScalarRow(b.getI1Type(), groups);
  RowRef keptOrder =
      fused ? cg.allocScalarRow(b.getI32Type(), op.getKeep()) : RowRef{};
  auto clearKept = [&](Value g) {
    if (!fused)
      cg.store(cg.boolean(false), kept, g);
  };
  auto markKept = [&](Value r, Value group) {
    if (fused)
      cg.store(group, keptOrder, r);
    else
      cg.store(cg.boolean(true), kept,
               b.create<arith::IndexCastOp>(loc, b.getIndexType(), group));
  };

  if (chunked && llvm::isPowerOf2_64(groups) && groups <= cg.width &&
      llvm::isPowerOf2_64(cg.width)) {
    // All groups scored by one transposed butterfly; the best `keep` taken
    // by rounds over the lanes (ties to the lower group), each pick's lanes
    // then set to -inf.
    auto [scores, groupIds] = transposedGroupScores(
        cg, keys, groups, perGroup, top2 && perGroup >= 2);
    cg.forLoop(0, groups, {}, [&](Value g, ValueRange) {
      clearKept(g);
      return SmallVector<Value>{};
    });
    for (int64_t r = 0; r < int64_t(op.getKeep()); ++r) {
      Value best = b.create<vector::ReductionOp>(
          loc, vector::CombiningKind::MAXIMUMF, scores);
      Value holders = b.create<arith::CmpFOp>(loc, arith::CmpFPredicate::OEQ,
                                              scores, cg.splat(best));
      Value bestGroup = b.create<vector::ReductionOp>(
          loc, vector::CombiningKind::MINSI,
          b.create<arith::SelectOp>(loc, holders, groupIds,
                                    cg.splat(cg.i32(kNoId))));
      markKept(cg.index(r), cg.safeId(bestGroup, groups));
      Value picked = b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::eq,
                                             groupIds, cg.splat(bestGroup));
      scores = b.create<arith::SelectOp>(loc, picked,
                                         cg.splat(cg.f32(-kInf)), scores);
    }
  } else {
    // Group scores live in a padded stack row so emitTopK can rank them.
    RowRef groupScores = cg.allocRow(b.getF32Type(), groups);
    cg.forLoop(0, groups, {}, [&](Value g, ValueRange) {
      Value first = b.create<arith::MulIOp>(loc, g, cg.index(perGroup));
      const bool sum = top2 && perGroup >= 2;
      cg.store(chunked ? chunkedGroupScore(cg, keys, first, chunksPerGroup, sum)
                       : scalarGroupScore(cg, keys, first, perGroup, sum),
               groupScores, g);
      clearKept(g);
      return SmallVector<Value>{};
    });
    emitConfiguredTopK(cg, groupScores, groups, op.getKeep(), markKept);
  }
  if (fused) {
    cg.keptGroups[op.getMasked()] = {keys, keptOrder, perGroup,
                                     int64_t(op.getKeep())};
    return success();
  }
  if (chunked) {
    cg.forLoop(0, groups, {}, [&](Value g, ValueRange) {
      Value isKept = cg.splat(cg.load(kept, g));
      Value first = b.create<arith::MulIOp>(loc, g, cg.index(perGroup));
      cg.forLoop(0, chunksPerGroup, {}, [&](Value c, ValueRange) {
        Value e0 = b.create<arith::AddIOp>(
            loc, first,
            b.create<arith::MulIOp>(loc, c, cg.index(cg.width)));
        Value key = cg.loadChunk(keys, e0, cg.width, cg.f32(-kInf));
        cg.storeChunk(b.create<arith::SelectOp>(loc, isKept, key,
                                                cg.splat(cg.f32(-kInf))),
                      masked, e0, cg.width);
        return SmallVector<Value>{};
      });
      return SmallVector<Value>{};
    });
    return success();
  }

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
      .Case([&](TopPOp op) { return lowerTopP(op, cg); })
      .Default([](Operation *op) {
        return op->emitOpError("is not a selection op");
      });
}

} // namespace mlir::moe::loops
