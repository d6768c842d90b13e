//===- PermuteToLoops.cpp - moe.permute and moe.combine over hidden rows --===//
//
// Both run one token per trip of the token loop. A token's k row indices
// (permute: the sources of sorted positions t*k .. t*k+k-1; combine: the
// positions of its k slots) are loaded and validated once, then the rows
// are walked in vector chunks of the kernel's width. On a GPU the k rows of
// a chunk are loaded back to back, so that k independent loads are in
// flight (each chunk one coalesced warp-wide access per row); on the host
// permute copies one row after the other (sequential streams, which the
// core's prefetchers follow), and combine, which needs all k rows of a
// chunk for its sum, reads them together. H is a run-time size: whole
// chunks first, then one masked tail chunk.
//
// Combine accumulates in f32 with one fused multiply-add per slot, in slot
// order, and rounds once to the row type: every backend and the golden
// reference (std::fma) compute the same bits.
//
// An index outside [0, T * k) is reported and replaced by one in bounds
// (the token's own row for permute, row 0 for combine), so no memory
// outside the arguments is ever addressed. With `unused_slots` (a top-p
// router's metadata) an index of -1 is an unused slot: permute writes a
// row of zeros for it and combine adds no term.
//
//===----------------------------------------------------------------------===//

#include "dialects/moe/Conversion/MoEToLoops/RowCodegen.h"

#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

namespace mlir::moe::loops {

namespace {

/// Calls `body(e0, mask)` for the chunks of `width` elements covering
/// [0, size): the whole chunks with a null mask, then the tail chunk (when
/// size is not a multiple of the width) with a mask of its valid lanes.
void forEachRowChunk(RowCodegen &cg, Value size,
                     function_ref<void(Value e0, Value mask)> body) {
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  Value width = cg.index(cg.width);
  Value whole = b.create<arith::MulIOp>(
      loc, b.create<arith::DivUIOp>(loc, size, width), width);
  b.create<scf::ForOp>(
      loc, cg.index(0), whole, width, ValueRange{},
      [&](OpBuilder &nested, Location, Value e0, ValueRange) {
        OpBuilder::InsertionGuard guard(b);
        b.setInsertionPointToStart(nested.getInsertionBlock());
        body(e0, Value());
        b.create<scf::YieldOp>(loc);
      });
  if (cg.width == 1)
    return;
  Value rest = b.create<arith::SubIOp>(loc, size, whole);
  cg.ifThen(b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::ne, rest,
                                    cg.index(0)),
            [&] {
              Value mask = b.create<vector::CreateMaskOp>(
                  loc, VectorType::get({cg.width}, b.getI1Type()),
                  ValueRange{rest});
              body(whole, mask);
            });
}

/// A chunk of row `row` of the 2-D memref at column e0 (masked lanes read
/// zero, never memory past the row).
Value loadRowChunk(RowCodegen &cg, Value memref, Value row, Value e0,
                   Value mask) {
  OpBuilder &b = cg.b;
  Type element = cast<MemRefType>(memref.getType()).getElementType();
  VectorType type = cg.vectorOf(element);
  if (!mask)
    return b.create<vector::LoadOp>(cg.loc, type, memref, ValueRange{row, e0});
  Value zeros =
      b.create<arith::ConstantOp>(cg.loc, type, b.getZeroAttr(type));
  return b.create<vector::MaskedLoadOp>(cg.loc, type, memref,
                                        ValueRange{row, e0}, mask, zeros);
}

void storeRowChunk(RowCodegen &cg, Value chunk, Value memref, Value row,
                   Value e0, Value mask) {
  if (!mask)
    cg.b.create<vector::StoreOp>(cg.loc, chunk, memref, ValueRange{row, e0});
  else
    cg.b.create<vector::MaskedStoreOp>(cg.loc, memref, ValueRange{row, e0},
                                       mask, chunk);
}

/// Loads `indexes[token * k + j]` for j < k, reports each outside
/// [0, slots) with `code` and returns them as indices, each bad one
/// replaced by `fallback`. Also returns the slot numbers token * k + j and,
/// with `unusedSlots`, whether each index is -1 (an unused slot, not
/// reported; it reads `fallback` too).
void loadRowIndices(RowCodegen &cg, Value indexes, int64_t k, Value slots,
                    KernelErrorCode code, Value fallback, bool unusedSlots,
                    SmallVectorImpl<Value> &rows,
                    SmallVectorImpl<Value> &slotNumbers,
                    SmallVectorImpl<Value> &unused) {
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  Value slots64 = cg.toI64(slots);
  Value first = b.create<arith::MulIOp>(loc, cg.token, cg.index(k));
  for (int64_t j = 0; j < k; ++j) {
    Value slot = b.create<arith::AddIOp>(loc, first, cg.index(j));
    Value entry = b.create<memref::LoadOp>(loc, indexes, ValueRange{slot});
    Value entry64 = cg.toI64(entry);
    Value valid = cg.inRange(entry64, slots64);
    Value isUnused = cg.boolean(false);
    if (unusedSlots) {
      isUnused = b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::eq,
                                         entry64, cg.i64(-1));
      unused.push_back(isUnused);
    }
    Value bad = b.create<arith::XOrIOp>(
        loc, b.create<arith::OrIOp>(loc, valid, isUnused), cg.boolean(true));
    cg.ifThen(bad, [&] { cg.recordError(code, slot, slots, entry); });
    Value index = b.create<arith::IndexCastOp>(loc, b.getIndexType(), entry64);
    rows.push_back(b.create<arith::SelectOp>(loc, valid, index, fallback));
    slotNumbers.push_back(slot);
  }
}

} // namespace

LogicalResult lowerPermute(PermuteOp op, RowCodegen &cg, Value hidden,
                           Value sortedSlots, Value permuted) {
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  const int64_t k = op.getK();
  Value tokens = b.create<memref::DimOp>(loc, hidden, 0);
  Value size = b.create<memref::DimOp>(loc, hidden, 1);
  Value slots = b.create<arith::MulIOp>(loc, tokens, cg.index(k));

  // Position p = token * k + j holds slot s = sorted_slots[p], whose token
  // is s / k.
  SmallVector<Value> slotsHere, positions, sources, unused;
  loadRowIndices(cg, sortedSlots, k, slots,
                 KernelErrorCode::PermuteSlotOutOfRange,
                 b.create<arith::MulIOp>(loc, cg.token, cg.index(k)),
                 op.getUnusedSlots(), slotsHere, positions, unused);
  for (Value slot : slotsHere)
    sources.push_back(b.create<arith::DivUIOp>(loc, slot, cg.index(k)));
  // The row an unused position gets: zeros instead of its stand-in source.
  Type element = cast<MemRefType>(hidden.getType()).getElementType();
  VectorType chunkType = cg.vectorOf(element);
  auto rowFor = [&](size_t j, Value chunk) -> Value {
    if (unused.empty())
      return chunk;
    Value zeros = b.create<arith::ConstantOp>(loc, chunkType,
                                              b.getZeroAttr(chunkType));
    return b.create<arith::SelectOp>(loc, cg.splat(unused[j]), zeros, chunk);
  };

  if (cg.target == KernelTarget::Cpu) {
    // A core streams one row at a time best: k sequential copies.
    for (auto [j, source, position] : llvm::enumerate(sources, positions))
      forEachRowChunk(cg, size, [&](Value e0, Value mask) {
        storeRowChunk(cg, rowFor(j, loadRowChunk(cg, hidden, source, e0, mask)),
                      permuted, position, e0, mask);
      });
    return success();
  }
  forEachRowChunk(cg, size, [&](Value e0, Value mask) {
    SmallVector<Value> chunks;
    for (Value source : sources)
      chunks.push_back(loadRowChunk(cg, hidden, source, e0, mask));
    for (auto [j, chunk, position] : llvm::enumerate(chunks, positions))
      storeRowChunk(cg, rowFor(j, chunk), permuted, position, e0, mask);
  });
  return success();
}

LogicalResult lowerCombine(CombineOp op, RowCodegen &cg, Value expertOutput,
                           Value slotPositions, Value weights,
                           Value combined) {
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  const int64_t k = cast<MemRefType>(weights.getType()).getDimSize(1);
  Value tokens = b.create<memref::DimOp>(loc, weights, 0);
  Value size = b.create<memref::DimOp>(loc, expertOutput, 1);
  Value slots = b.create<arith::MulIOp>(loc, tokens, cg.index(k));

  SmallVector<Value> rows, slotNumbers, weightSplats, unused;
  loadRowIndices(cg, slotPositions, k, slots,
                 KernelErrorCode::CombinePositionOutOfRange, cg.index(0),
                 op.getUnusedSlots(), rows, slotNumbers, unused);
  for (int64_t j = 0; j < k; ++j)
    weightSplats.push_back(cg.splat(b.create<memref::LoadOp>(
        loc, weights, ValueRange{cg.token, cg.index(j)})));

  Type element = cast<MemRefType>(combined.getType()).getElementType();
  VectorType f32Chunk = cg.vectorOf(b.getF32Type());
  forEachRowChunk(cg, size, [&](Value e0, Value mask) {
    SmallVector<Value> chunks;
    for (Value row : rows) {
      Value chunk = loadRowChunk(cg, expertOutput, row, e0, mask);
      if (!element.isF32())
        chunk = b.create<arith::ExtFOp>(loc, f32Chunk, chunk);
      chunks.push_back(chunk);
    }
    Value sum = b.create<arith::ConstantOp>(loc, f32Chunk,
                                            b.getZeroAttr(f32Chunk));
    for (auto [j, chunk, weight] : llvm::enumerate(chunks, weightSplats)) {
      Value next = b.create<math::FmaOp>(loc, weight, chunk, sum);
      // An unused slot adds no term (not even 0 * inf).
      sum = unused.empty()
                ? next
                : b.create<arith::SelectOp>(loc, cg.splat(unused[j]), sum, next)
                      .getResult();
    }
    if (!element.isF32())
      sum = b.create<arith::TruncFOp>(loc, cg.vectorOf(element), sum);
    storeRowChunk(cg, sum, combined, cg.token, e0, mask);
  });
  return success();
}

} // namespace mlir::moe::loops
