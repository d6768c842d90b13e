//===- ParallelDispatchToLoops.cpp - moe.dispatch over a whole GPU grid ---===//
//
// The nvptx dispatch: a stable counting sort of the T*k slots by expert,
// spread over every thread of a cooperative launch (all blocks resident, so
// the grid may wait for itself). Each warp of the grid owns a contiguous
// range of slots, its partition p of P = gridDim * 8, and one counter per
// expert in the scratch buffer, laid out expert-major: hist[e * P + p].
//
//   1. count:  each warp zeroes its counters, then walks its slots 32 at a
//              time; the lanes holding one expert agree on a leader (one
//              match.any.sync) which adds their number to the warp's
//              counter.
//   2. sums:   the counters, read in (expert, partition) order, are one
//              array of E * P words; each warp sums its own segment of it.
//   3. scan:   each warp adds the sums of the segments before it and turns
//              its segment into an exclusive prefix sum in place. hist[e *
//              P + p] is now where partition p's first slot of expert e
//              goes: every slot of a lower expert, and of expert e in a
//              lower partition, comes before it. Entries with p = 0 are the
//              expert offsets.
//   4. place:  counts are differences of offsets; each warp walks its slots
//              again and puts each at its counter plus its rank among the
//              lanes of its round holding the same expert, then advances
//              the counter. Partitions and rounds are visited in slot order,
//              so the result is the ABI's order (expert, then slot), the
//              CPU backend's.
//
// A grid barrier separates the phases: thread 0 of each block arrives on a
// counter in the scratch buffer and waits for its generation to change. It
// needs no reset between calls: the last block to arrive puts the counter
// back to 0. A grid of one block (a decode step's) runs its own copy of
// the phases with bar.sync alone between them and, up to
// abi::kDispatchSharedMaxExperts, its counters in shared memory. The same
// one-block phases also end a route with a fused dispatch (buildFused):
// there the block that stores its ids last, found by a ticket in the
// scratch buffer, runs them on its own warps (P = the route's warps per
// block). Ids outside [0, E) are reported by the thread that reads them
// (the lowest slot wins) and take part in nothing. With `unused_slots` an
// id of -1 is an unused slot (a top-p router's): not reported, its
// position -1, and after the scan the grid fills the positions past the
// used slots, [offsets[E], T*k), with -1.
//
// With a capacity C, the scan's offsets are those of the uncapped counts:
// one warp then sums the capped counts min(n_e, C) into their own offsets
// (after the partitions' counters in the scratch buffer), a slot is placed
// at its expert's capped offset plus its place r in the expert (its scanned
// position minus the uncapped offset) when r < C and dropped (position -1)
// otherwise, and a last phase writes the capped counts and offsets out.
//
//===----------------------------------------------------------------------===//

#include "dialects/moe/Conversion/MoEToLoops/RowCodegen.h"

#include "abi/KernelAbi.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

namespace mlir::moe::loops {

namespace {

using arith::CmpIPredicate;

class ParallelDispatchBuilder {
public:
  ParallelDispatchBuilder(DispatchOp op, RowCodegen &cg, Value ids,
                          ValueRange outputs, Value scratch,
                          int64_t warpsPerBlock)
      : op(op), cg(cg), b(cg.b), loc(cg.loc), ids(ids), counts(outputs[0]),
        offsets(outputs[1]), sortedSlots(outputs[2]),
        slotPositions(outputs[3]), scratch(scratch),
        warpsPerBlock(warpsPerBlock) {}

  /// The dispatch after a route's token loop, in the block that finishes
  /// last (abi::kFusedDispatchMaxSlots): each block, once its ids are
  /// stored, takes a ticket; the one drawing the last runs the one-block
  /// phases on its warps and puts the ticket back to 0.
  LogicalResult buildFused() {
    using namespace moegen::abi;
    if (failed(checkScratch()))
      return failure();
    const int64_t counterWords =
        fusedDispatchCounterWords(numExperts, warpsPerBlock);
    // The route's rows are dead once every thread of the block is here:
    // the counters and the flag reuse their shared memory.
    b.create<gpu::BarrierOp>(loc);
    Value words = sharedWords(counterWords + 1);
    Value tid = b.create<gpu::ThreadIdOp>(loc, gpu::Dimension::x);
    cg.ifThen(cmp(CmpIPredicate::eq, tid, cg.index(0)), [&] {
      // __threadfence(): the block's ids (ordered before thread 0 by the
      // barrier) are visible to whichever block draws the last ticket.
      membar();
      Value ticket =
          b.create<memref::AtomicRMWOp>(loc, arith::AtomicRMWKind::addi,
                                        cg.i32(1), scratch,
                                        ValueRange{cg.index(kDispatchTicketWord)})
              .getResult();
      Value last = cmp(CmpIPredicate::eq, toIndex(ticket),
                       sub(b.create<gpu::GridDimOp>(loc, gpu::Dimension::x),
                           cg.index(1)));
      cg.ifThen(last, [&] {
        // Every block has its ticket: ready for the next call.
        b.create<memref::AtomicRMWOp>(loc, arith::AtomicRMWKind::assign,
                                      cg.i32(0), scratch,
                                      ValueRange{cg.index(kDispatchTicketWord)});
        // Every other block's ids, published before its ticket, are seen
        // by this block's loads from here on.
        membar();
      });
      storeWord(b.create<arith::ExtUIOp>(loc, b.getI32Type(), last), words,
                cg.index(counterWords));
    });
    b.create<gpu::BarrierOp>(loc);
    Value isLast = cmp(CmpIPredicate::ne,
                       loadWord(words, cg.index(counterWords)), cg.i32(0));
    auto ifLast = b.create<scf::IfOp>(loc, isLast, /*withElseRegion=*/false);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(ifLast.thenBlock());
    buildOneBlockPhases(counterWords ? words : Value());
    return success();
  }

  LogicalResult build() {
    using namespace moegen::abi;
    if (failed(checkScratch()))
      return failure();

    // A grid of one block (up to kDispatchSlotsPerBlock slots: every
    // decode step) runs its own copy of the phases, separated by block
    // barriers alone (bar.sync orders the block's global stores too): the
    // grid barrier's fences and atomic round trips to L2 would be most of
    // a small call's time. Its block and grid are constants there.
    Value gridDim = b.create<gpu::GridDimOp>(loc, gpu::Dimension::x);
    auto ifOneBlock = b.create<scf::IfOp>(
        loc, cmp(CmpIPredicate::eq, gridDim, cg.index(1)),
        /*withElseRegion=*/true);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(ifOneBlock.thenBlock());
    const int64_t words = dispatchSharedWords(numExperts, warpsPerBlock);
    buildOneBlockPhases(words ? sharedWords(words) : Value());
    b.setInsertionPointToStart(ifOneBlock.elseBlock());
    oneBlock = false;
    placeCountersInScratch();
    block = b.create<gpu::BlockIdOp>(loc, gpu::Dimension::x);
    grid = gridDim;
    buildPhases();
    return success();
  }

private:
  LogicalResult checkScratch() {
    using namespace moegen::abi;
    numExperts = op.getExperts();
    auto idsType = cast<MemRefType>(ids.getType());
    k = idsType.getDimSize(1);
    auto scratchType = cast<MemRefType>(scratch.getType());
    if (scratchType.getNumElements() != dispatchScratchWords(numExperts))
      return op.emitOpError("scratch buffer of ")
             << scratchType.getNumElements() << " words; the ABI needs "
             << dispatchScratchWords(numExperts);
    if (!fusedDispatchFits(numExperts, warpsPerBlock))
      return op.emitOpError("runs on blocks of ")
             << warpsPerBlock << " warps, more partitions than the scratch "
             << "buffer of " << numExperts << " experts holds";
    return success();
  }

  void membar() {
    b.create<LLVM::CallIntrinsicOp>(loc, TypeRange{},
                                    b.getStringAttr("llvm.nvvm.membar.gl"),
                                    ValueRange{});
  }

  /// `count` i32 words at the start of the block's dynamic shared memory.
  Value sharedWords(int64_t count) {
    auto workgroup = gpu::AddressSpaceAttr::get(b.getContext(),
                                                gpu::AddressSpace::Workgroup);
    Value shared = b.create<gpu::DynamicSharedMemoryOp>(
        loc, MemRefType::get({ShapedType::kDynamic}, b.getI8Type(),
                             MemRefLayoutAttrInterface{}, workgroup));
    return b.create<memref::ViewOp>(
        loc,
        MemRefType::get({count}, b.getI32Type(), MemRefLayoutAttrInterface{},
                        workgroup),
        shared, cg.index(0), ValueRange{});
  }

  /// The phases of a grid of one block, whose block and grid are
  /// constants: counters in `sharedCounters`, laid out as in the scratch
  /// buffer for the block's warpsPerBlock partitions, or in the scratch
  /// buffer when null (too many experts for shared memory).
  void buildOneBlockPhases(Value sharedCounters) {
    oneBlock = true;
    block = cg.index(0);
    grid = cg.index(1);
    if (sharedCounters) {
      counters = sharedCounters;
      sumsBase = 0;
      histBase = warpsPerBlock;
      cappedBase = histBase + warpsPerBlock * numExperts;
    } else {
      placeCountersInScratch();
    }
    buildPhases();
  }

  /// Sums, counters and capped offsets in the scratch buffer, laid out for
  /// the largest grid (abi::dispatchScratchWords).
  void placeCountersInScratch() {
    using namespace moegen::abi;
    const int64_t maxPartitions =
        dispatchMaxBlocks(numExperts) * kDispatchWarpsPerBlock;
    counters = scratch;
    sumsBase = kDispatchHeaderWords;
    histBase = sumsBase + maxPartitions;
    cappedBase = histBase + maxPartitions * numExperts;
  }

  /// The four phases (six with a capacity) for the grid in `block`, `grid`
  /// and `oneBlock`, at the insertion point.
  void buildPhases() {
    using namespace moegen::abi;
    Value tid = b.create<gpu::ThreadIdOp>(loc, gpu::Dimension::x);
    threadInBlock = tid;
    lane = remui(tid, cg.index(32));
    Value warp = divui(tid, cg.index(32));
    partitions = mul(grid, cg.index(warpsPerBlock));
    partition = add(mul(block, cg.index(warpsPerBlock)), warp);
    numTokens = b.create<memref::DimOp>(loc, ids, 0);
    numSlots = mul(numTokens, cg.index(k));
    // Partitions of whole rounds of 32 slots; the last ones may be short or
    // empty.
    Value perPartition = ceilDiv(numSlots, partitions);
    Value chunk = mul(ceilDiv(perPartition, cg.index(32)), cg.index(32));
    chunkBegin = minui(mul(partition, chunk), numSlots);
    chunkEnd = minui(add(chunkBegin, chunk), numSlots);

    if (std::optional<APFloat> factor = op.getCapacityFactor())
      capacity = dispatchCapacity(cg, numTokens, k, numExperts,
                                  factor->convertToDouble());

    countSlots();
    gridBarrier();
    sumSegments();
    gridBarrier();
    scanSegments();
    gridBarrier();
    if (!capacity) {
      writeCounts();
      if (op.getUnusedSlots())
        fillUnusedTail(loadWord(offsets, cg.index(numExperts)));
      placeSlots();
      return;
    }
    sumCappedCounts();
    gridBarrier();
    fillUnusedTail(loadWord(counters, cg.index(cappedBase + numExperts)));
    placeSlots();
    gridBarrier();
    writeCappedMetadata();
  }

  //--- Index arithmetic ---------------------------------------------------//
  Value add(Value x, Value y) { return b.create<arith::AddIOp>(loc, x, y); }
  Value sub(Value x, Value y) { return b.create<arith::SubIOp>(loc, x, y); }
  Value mul(Value x, Value y) { return b.create<arith::MulIOp>(loc, x, y); }
  Value divui(Value x, Value y) { return b.create<arith::DivUIOp>(loc, x, y); }
  Value remui(Value x, Value y) { return b.create<arith::RemUIOp>(loc, x, y); }
  Value minui(Value x, Value y) { return b.create<arith::MinUIOp>(loc, x, y); }
  Value ceilDiv(Value x, Value y) {
    return divui(add(x, sub(y, cg.index(1))), y);
  }
  Value cmp(CmpIPredicate predicate, Value x, Value y) {
    return b.create<arith::CmpIOp>(loc, predicate, x, y);
  }
  Value select(Value condition, Value x, Value y) {
    return b.create<arith::SelectOp>(loc, condition, x, y);
  }
  Value toIndex(Value v) {
    return b.create<arith::IndexCastOp>(loc, b.getIndexType(), v);
  }
  Value toI32(Value v) {
    return b.create<arith::IndexCastOp>(loc, b.getI32Type(), v);
  }
  Value loadWord(Value memref, Value i) {
    return b.create<memref::LoadOp>(loc, memref, ValueRange{i});
  }
  void storeWord(Value value, Value memref, Value i) {
    b.create<memref::StoreOp>(loc, value, memref, ValueRange{i});
  }
  /// hist[e * P + p] of this warp's partition, as an index of `counters`.
  Value counterIndex(Value expert) {
    return add(cg.index(histBase),
               add(mul(toIndex(expert), partitions), partition));
  }

  //--- Control flow -------------------------------------------------------//
  SmallVector<Value> forStep(Value lb, Value ub, Value step, ValueRange init,
                             RowCodegen::LoopBody body) {
    auto loop = b.create<scf::ForOp>(
        loc, lb, ub, step, init,
        [&](OpBuilder &nested, Location, Value iv, ValueRange iter) {
          OpBuilder::InsertionGuard guard(b);
          b.setInsertionPointToStart(nested.getInsertionBlock());
          b.create<scf::YieldOp>(loc, body(iv, iter));
        });
    return SmallVector<Value>(loop.getResults().begin(),
                              loop.getResults().end());
  }
  /// scf.if yielding one value.
  Value ifElse(Value condition, function_ref<Value()> thenValue,
               function_ref<Value()> elseValue) {
    auto ifOp = b.create<scf::IfOp>(
        loc, condition,
        [&](OpBuilder &nested, Location) {
          OpBuilder::InsertionGuard guard(b);
          b.setInsertionPointToStart(nested.getInsertionBlock());
          b.create<scf::YieldOp>(loc, thenValue());
        },
        [&](OpBuilder &nested, Location) {
          OpBuilder::InsertionGuard guard(b);
          b.setInsertionPointToStart(nested.getInsertionBlock());
          b.create<scf::YieldOp>(loc, elseValue());
        });
    return ifOp.getResult(0);
  }
  void syncWarp() { b.create<NVVM::SyncWarpOp>(loc, cg.i32(-1)); }
  Value shuffleXor(Value value, Value offset) {
    return b
        .create<gpu::ShuffleOp>(loc, value, offset, cg.i32(32),
                                gpu::ShuffleMode::XOR)
        .getShuffleResult();
  }
  /// The i32 sum of `value` over the warp, in every lane.
  Value warpSum(Value value) {
    for (int64_t offset = 16; offset >= 1; offset /= 2)
      value = b.create<arith::AddIOp>(loc, value,
                                      shuffleXor(value, cg.i32(offset)));
    return value;
  }
  /// Inclusive prefix sum of `value` over the lanes, and the warp's total,
  /// with xor shuffles: at each level a lane adds what its partner's half
  /// holds when the partner comes first.
  std::pair<Value, Value> warpInclusiveScan(Value value) {
    Value prefix = value, total = value;
    Value laneI32 = toI32(lane);
    for (int64_t offset = 1; offset < 32; offset *= 2) {
      Value other = shuffleXor(total, cg.i32(offset));
      Value upperHalf = cmp(CmpIPredicate::ne,
                            b.create<arith::AndIOp>(loc, laneI32,
                                                    cg.i32(offset)),
                            cg.i32(0));
      prefix = select(upperHalf, add(prefix, other), prefix);
      total = add(total, other);
    }
    return {prefix, total};
  }

  /// The expert of slot `s` as i32, or -1 when `valid` is false or the id is
  /// outside [0, E) (reported when `report`).
  Value expertOfSlot(Value s, Value valid, bool report) {
    return ifElse(
        valid,
        [&]() -> Value {
          Value token = divui(s, cg.index(k));
          Value j = remui(s, cg.index(k));
          Value id = b.create<memref::LoadOp>(loc, ids, ValueRange{token, j});
          Type idType = id.getType();
          Value bound = b.create<arith::ConstantIntOp>(
              loc, numExperts, idType.getIntOrFloatBitWidth());
          Value ok = cg.inRange(id, bound);
          if (report) {
            cg.token = token;
            Value accepted = ok;
            if (op.getUnusedSlots())
              accepted = b.create<arith::OrIOp>(
                  loc, ok,
                  cmp(CmpIPredicate::eq, id,
                      b.create<arith::ConstantIntOp>(
                          loc, -1, idType.getIntOrFloatBitWidth())));
            cg.ifThen(b.create<arith::XOrIOp>(loc, accepted, cg.boolean(true)), [&] {
              cg.recordError(KernelErrorCode::DispatchIdOutOfRange, token, j,
                             id, /*eachThread=*/true);
            });
          }
          Value asI32 = idType.isInteger(32)
                            ? id
                            : b.create<arith::TruncIOp>(loc, b.getI32Type(), id)
                                  .getResult();
          return select(ok, asI32, cg.i32(-1));
        },
        [&]() -> Value { return cg.i32(-1); });
  }

  /// For this lane's expert: how many lanes before it hold the same one
  /// (its rank in the round) and how many lanes hold it in all. One
  /// match.any.sync gives the lanes holding it (sm_70 and up), two
  /// population counts the rest.
  std::pair<Value, Value> peers(Value expert) {
    Type i32 = b.getI32Type();
    Value same =
        b.create<LLVM::CallIntrinsicOp>(
             loc, i32, b.getStringAttr("llvm.nvvm.match.any.sync.i32"),
             ValueRange{cg.i32(-1), expert})
            .getResult(0);
    Value before = b.create<arith::SubIOp>(
        loc, b.create<arith::ShLIOp>(loc, cg.i32(1), toI32(lane)), cg.i32(1));
    Value rank = b.create<LLVM::CtPopOp>(
        loc, i32, b.create<arith::AndIOp>(loc, same, before));
    return {rank, b.create<LLVM::CtPopOp>(loc, i32, same)};
  }

  /// Calls body(slot, valid) for this warp's slots, 32 at a time (every
  /// lane takes part in every round, so shuffles see the whole warp).
  void forEachRound(function_ref<void(Value, Value)> body) {
    forStep(chunkBegin, chunkEnd, cg.index(32), {},
            [&](Value round, ValueRange) -> SmallVector<Value> {
              Value slot = add(round, lane);
              body(slot, cmp(CmpIPredicate::ult, slot, chunkEnd));
              syncWarp();
              return {};
            });
  }

  //--- Phases -------------------------------------------------------------//
  void countSlots() {
    forStep(lane, cg.index(numExperts), cg.index(32), {},
            [&](Value e, ValueRange) -> SmallVector<Value> {
              storeWord(cg.i32(0), counters, counterIndex(toI32(e)));
              return {};
            });
    syncWarp();
    forEachRound([&](Value slot, Value valid) {
      Value expert = expertOfSlot(slot, valid, /*report=*/true);
      auto [rank, group] = peers(expert);
      Value leader = b.create<arith::AndIOp>(
          loc, cmp(CmpIPredicate::sge, expert, cg.i32(0)),
          cmp(CmpIPredicate::eq, rank, cg.i32(0)));
      cg.ifThen(leader, [&] {
        Value at = counterIndex(expert);
        storeWord(add(loadWord(counters, at), group), counters, at);
      });
    });
  }

  /// The segment of the E * P counters that this warp sums and scans.
  std::pair<Value, Value> segment() {
    Value total = mul(cg.index(numExperts), partitions);
    Value length = ceilDiv(total, partitions);
    Value begin = minui(mul(partition, length), total);
    return {begin, minui(add(begin, length), total)};
  }

  void sumSegments() {
    auto [begin, end] = segment();
    Value partial = forStep(add(begin, lane), end, cg.index(32), {cg.i32(0)},
                            [&](Value f, ValueRange iter) -> SmallVector<Value> {
                              return {add(iter[0],
                                          loadWord(counters,
                                                   add(cg.index(histBase), f)))};
                            })[0];
    Value sum = warpSum(partial);
    cg.ifThen(cmp(CmpIPredicate::eq, lane, cg.index(0)), [&] {
      storeWord(sum, counters, add(cg.index(sumsBase), partition));
    });
  }

  void scanSegments() {
    auto [begin, end] = segment();
    Value total = mul(cg.index(numExperts), partitions);
    // What the segments before this one hold.
    Value before = forStep(lane, partition, cg.index(32), {cg.i32(0)},
                           [&](Value q, ValueRange iter) -> SmallVector<Value> {
                             return {add(iter[0],
                                         loadWord(counters,
                                                  add(cg.index(sumsBase), q)))};
                           })[0];
    Value carry = warpSum(before);
    forStep(begin, end, cg.index(32), {carry},
            [&](Value round, ValueRange iter) -> SmallVector<Value> {
              Value f = add(round, lane);
              Value valid = cmp(CmpIPredicate::ult, f, end);
              Value at = add(cg.index(histBase), f);
              Value count = ifElse(
                  valid, [&] { return loadWord(counters, at); },
                  [&] { return cg.i32(0); });
              auto [inclusive, sum] = warpInclusiveScan(count);
              Value exclusive = sub(add(iter[0], inclusive), count);
              cg.ifThen(valid, [&] {
                storeWord(exclusive, counters, at);
                Value expert = divui(f, partitions);
                cg.ifThen(cmp(CmpIPredicate::eq, remui(f, partitions),
                              cg.index(0)),
                          [&] { storeWord(exclusive, offsets, expert); });
                cg.ifThen(cmp(CmpIPredicate::eq, f, sub(total, cg.index(1))),
                          [&] {
                            storeWord(add(exclusive, count), offsets,
                                      cg.index(numExperts));
                          });
              });
              return {add(iter[0], sum)};
            });
  }

  void writeCounts() {
    const int64_t blockThreads = 32 * warpsPerBlock;
    Value first = add(mul(block, cg.index(blockThreads)), threadInBlock);
    forStep(first, cg.index(numExperts),
            mul(grid, cg.index(blockThreads)), {},
            [&](Value e, ValueRange) -> SmallVector<Value> {
              storeWord(sub(loadWord(offsets, add(e, cg.index(1))),
                            loadWord(offsets, e)),
                        counts, e);
              return {};
            });
  }

  /// One warp sums the capped counts min(n_e, C), n_e from the uncapped
  /// offsets the scan wrote, into exclusive offsets at cappedBase (E + 1
  /// words).
  void sumCappedCounts() {
    Value first = cmp(CmpIPredicate::eq, add(block, threadInBlock),
                      cg.index(0));
    Value firstWarp = b.create<arith::AndIOp>(
        loc, cmp(CmpIPredicate::eq, block, cg.index(0)),
        cmp(CmpIPredicate::ult, threadInBlock, cg.index(32)));
    cg.ifThen(firstWarp, [&] {
      Value total = forStep(
          cg.index(0), cg.index(numExperts), cg.index(32), {cg.i32(0)},
          [&](Value round, ValueRange iter) -> SmallVector<Value> {
            Value e = add(round, lane);
            Value valid = cmp(CmpIPredicate::ult, e, cg.index(numExperts));
            Value count = ifElse(
                valid,
                [&] {
                  Value n = sub(loadWord(offsets, add(e, cg.index(1))),
                                loadWord(offsets, e));
                  return b.create<arith::MinSIOp>(loc, n, capacity)
                      .getResult();
                },
                [&] { return cg.i32(0); });
            auto [inclusive, sum] = warpInclusiveScan(count);
            cg.ifThen(valid, [&] {
              storeWord(sub(add(iter[0], inclusive), count), counters,
                        add(cg.index(cappedBase), e));
            });
            return {add(iter[0], sum)};
          })[0];
      cg.ifThen(first, [&] {
        storeWord(total, counters, cg.index(cappedBase + numExperts));
      });
    });
  }

  /// The capped counts and offsets, from cappedBase to the outputs.
  void writeCappedMetadata() {
    const int64_t blockThreads = 32 * warpsPerBlock;
    Value first = add(mul(block, cg.index(blockThreads)), threadInBlock);
    forStep(first, cg.index(numExperts + 1),
            mul(grid, cg.index(blockThreads)), {},
            [&](Value e, ValueRange) -> SmallVector<Value> {
              Value start = loadWord(counters, add(cg.index(cappedBase), e));
              storeWord(start, offsets, e);
              cg.ifThen(cmp(CmpIPredicate::ult, e, cg.index(numExperts)), [&] {
                Value end = loadWord(
                    counters, add(cg.index(cappedBase + 1), e));
                storeWord(sub(end, start), counts, e);
              });
              return {};
            });
  }

  /// sorted_slots[used .. T*k) = -1, grid-stride: the positions no used
  /// slot takes.
  void fillUnusedTail(Value usedWord) {
    const int64_t blockThreads = 32 * warpsPerBlock;
    Value used = toIndex(usedWord);
    Value first = add(mul(block, cg.index(blockThreads)), threadInBlock);
    forStep(add(used, first), numSlots,
            mul(grid, cg.index(blockThreads)), {},
            [&](Value p, ValueRange) -> SmallVector<Value> {
              storeWord(cg.i32(-1), sortedSlots, p);
              return {};
            });
  }

  void placeSlots() {
    forEachRound([&](Value slot, Value valid) {
      Value expert = expertOfSlot(slot, valid, /*report=*/false);
      auto [rank, group] = peers(expert);
      Value placed = cmp(CmpIPredicate::sge, expert, cg.i32(0));
      if (op.getUnusedSlots())
        cg.ifThen(b.create<arith::AndIOp>(
                      loc, valid,
                      b.create<arith::XOrIOp>(loc, placed, cg.boolean(true))),
                  [&] { storeWord(cg.i32(-1), slotPositions, slot); });
      Value base = ifElse(
          placed, [&] { return loadWord(counters, counterIndex(expert)); },
          [&] { return cg.i32(0); });
      // Every lane of the expert has read the counter before its leader
      // advances it.
      syncWarp();
      cg.ifThen(placed, [&] {
        Value position = add(base, rank);
        if (!capacity) {
          storeWord(toI32(slot), sortedSlots, toIndex(position));
          storeWord(position, slotPositions, slot);
        } else {
          // Its place in the expert, from the uncapped offsets; kept at the
          // capped offset when it is below C, else dropped.
          Value e = toIndex(expert);
          Value r = sub(position, loadWord(offsets, e));
          auto ifFits = b.create<scf::IfOp>(
              loc, cmp(CmpIPredicate::slt, r, capacity),
              /*withElseRegion=*/true);
          OpBuilder::InsertionGuard guard(b);
          b.setInsertionPointToStart(ifFits.thenBlock());
          Value kept =
              add(loadWord(counters, add(cg.index(cappedBase), e)), r);
          storeWord(toI32(slot), sortedSlots, toIndex(kept));
          storeWord(kept, slotPositions, slot);
          b.setInsertionPointToStart(ifFits.elseBlock());
          storeWord(cg.i32(-1), slotPositions, slot);
        }
        cg.ifThen(cmp(CmpIPredicate::eq, rank, cg.i32(0)), [&] {
          storeWord(add(base, group), counters, counterIndex(expert));
        });
      });
    });
  }

  void gridBarrier() {
    if (oneBlock)
      b.create<gpu::BarrierOp>(loc);
    else
      emitGridBarrier(cg, scratch);
  }

  DispatchOp op;
  RowCodegen &cg;
  OpBuilder &b;
  Location loc;
  Value ids, counts, offsets, sortedSlots, slotPositions, scratch;
  /// Where the sums, counters and capped offsets live: the scratch buffer,
  /// or shared memory in a one-block grid (dispatchSharedWords).
  Value counters;
  int64_t numExperts = 0, k = 0, sumsBase = 0, histBase = 0, cappedBase = 0;
  /// Warps of a block: its partitions (kDispatchWarpsPerBlock in the
  /// dispatch kernel, the route's in a fused one).
  int64_t warpsPerBlock;
  /// Building the one-block copy of the phases.
  bool oneBlock = false;
  Value block, grid, threadInBlock, lane, partitions, partition, numTokens,
      numSlots, chunkBegin, chunkEnd;
  /// C (i32) for a dispatch with a capacity, else null.
  Value capacity;
};

} // namespace

void emitGridBarrier(RowCodegen &cg, Value scratch) {
  using arith::CmpIPredicate;
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  auto cmp = [&](CmpIPredicate predicate, Value x, Value y) -> Value {
    return b.create<arith::CmpIOp>(loc, predicate, x, y);
  };
  Value threadInBlock = b.create<gpu::ThreadIdOp>(loc, gpu::Dimension::x);
  b.create<gpu::BarrierOp>(loc);
  cg.ifThen(cmp(CmpIPredicate::eq, threadInBlock, cg.index(0)), [&] {
    // A grid of one block (an expert-choice route of a few tokens) is done
    // with the block barriers: bar.sync orders the block's global accesses
    // too, and the fences and atomic round trips to L2 would be most of
    // its time.
    Value grid = b.create<gpu::GridDimOp>(loc, gpu::Dimension::x);
    cg.ifThen(cmp(CmpIPredicate::ne, grid, cg.index(1)), [&] {
    // __threadfence(): the block's stores before the barrier, published
    // by thread 0's arrival, are seen by the blocks that leave it.
    auto fence = [&] {
      b.create<LLVM::CallIntrinsicOp>(loc, TypeRange{},
                                      b.getStringAttr("llvm.nvvm.membar.gl"),
                                      ValueRange{});
    };
    auto atomic = [&](arith::AtomicRMWKind kind, int64_t value, int64_t word) {
      return b
          .create<memref::AtomicRMWOp>(loc, kind, cg.i32(value), scratch,
                                       ValueRange{cg.index(word)})
          .getResult();
    };
    fence();
    // Read the generation before arriving: it cannot move until this
    // block has arrived.
    Value generation = atomic(arith::AtomicRMWKind::addi, 0, 1);
    Value arrived = atomic(arith::AtomicRMWKind::addi, 1, 0);
    Value last = cmp(CmpIPredicate::eq,
                     b.create<arith::IndexCastOp>(loc, b.getIndexType(), arrived),
                     b.create<arith::SubIOp>(loc, grid, cg.index(1)));
    auto ifLast = b.create<scf::IfOp>(loc, last, /*withElseRegion=*/true);
    {
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(ifLast.thenBlock());
      atomic(arith::AtomicRMWKind::assign, 0, 0);
      atomic(arith::AtomicRMWKind::addi, 1, 1);
      b.setInsertionPointToStart(ifLast.elseBlock());
      auto spin = b.create<scf::WhileOp>(loc, TypeRange{}, ValueRange{});
      b.createBlock(&spin.getBefore());
      Value now = atomic(arith::AtomicRMWKind::addi, 0, 1);
      b.create<scf::ConditionOp>(loc, cmp(CmpIPredicate::eq, now, generation),
                                 ValueRange{});
      b.createBlock(&spin.getAfter());
      b.create<scf::YieldOp>(loc);
    }
    fence();
    });
  });
  b.create<gpu::BarrierOp>(loc);
}

LogicalResult lowerParallelDispatch(DispatchOp op, RowCodegen &cg, Value ids,
                                    ValueRange outputs, Value scratch) {
  return ParallelDispatchBuilder(op, cg, ids, outputs, scratch,
                                 moegen::abi::kDispatchWarpsPerBlock)
      .build();
}

LogicalResult lowerFusedDispatch(DispatchOp op, RowCodegen &cg, Value ids,
                                 ValueRange outputs, Value scratch,
                                 int64_t warpsPerBlock) {
  return ParallelDispatchBuilder(op, cg, ids, outputs, scratch, warpsPerBlock)
      .buildFused();
}

} // namespace mlir::moe::loops
