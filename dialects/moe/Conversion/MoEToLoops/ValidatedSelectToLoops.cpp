//===- ValidatedSelectToLoops.cpp - hash_select, forced_select on a row ---===//
//
// The two selections whose ids come from the caller. Every id is checked
// before it is used and a violation is reported through the error record:
// an id out of range is replaced by expert 0, so the gather that follows
// stays in bounds; a repeated id is in range and kept (the outputs of a
// failed call are unspecified). A token id outside the hash table is
// checked before the table is read at all. The replay of a top-p router
// (forced_select with unused_slots) also accepts -1, an unused slot.
//
//===----------------------------------------------------------------------===//

#include "dialects/moe/Conversion/MoEToLoops/RowCodegen.h"

#include "mlir/Dialect/SCF/IR/SCF.h"
#include "llvm/ADT/TypeSwitch.h"

namespace mlir::moe::loops {

namespace {

/// Validates the k ids `loadId(j)` (any integer type) and stores the safe
/// ids into `ids`. `row` names the row in messages (the token for forced
/// ids, the table row for hash entries). With `unusedSlots`, -1 is an
/// unused slot: neither reported nor compared, and kept as -1.
void emitCheckedIds(RowCodegen &cg, const RowRef &ids, int64_t k,
                    int64_t numExperts, Value row,
                    function_ref<Value(Value j)> loadId,
                    KernelErrorCode outOfRange, KernelErrorCode repeated,
                    bool unusedSlots = false) {
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  cg.forLoop(0, k, {}, [&](Value j, ValueRange) {
    Value id = cg.toI64(loadId(j));
    Value unused =
        unusedSlots
            ? b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::eq, id,
                                      cg.i64(-1))
                  .getResult()
            : cg.boolean(false);
    Value ok = b.create<arith::OrIOp>(
        loc, unused, cg.inRange(id, cg.i64(numExperts)));
    cg.ifThen(b.create<arith::XOrIOp>(loc, ok, cg.boolean(true)),
              [&] { cg.recordError(outOfRange, row, j, id); });
    // k <= 64: the quadratic scan of one row is cheaper than a bitmap.
    cg.forLoop(cg.index(0), j, {}, [&](Value i, ValueRange) {
      Value earlier = cg.toI64(loadId(i));
      Value same =
          b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::eq, earlier, id);
      if (unusedSlots)
        same = b.create<arith::AndIOp>(
            loc, same, b.create<arith::XOrIOp>(loc, unused, cg.boolean(true)));
      cg.ifThen(same, [&] { cg.recordError(repeated, row, j, id); });
      return SmallVector<Value>{};
    });
    Value safe = b.create<arith::TruncIOp>(loc, b.getI32Type(),
                                           cg.safeId(id, numExperts));
    if (unusedSlots)
      safe = b.create<arith::SelectOp>(loc, unused, cg.i32(-1), safe);
    cg.store(safe, ids, j);
    return SmallVector<Value>{};
  });
}

LogicalResult lowerForcedSelect(ForcedSelectOp op, RowCodegen &cg) {
  RowRef forced = cg.rowOf(op.getForcedIds());
  RowRef ids = cg.newRow(op.getIds());
  emitCheckedIds(
      cg, ids, ids.size, op.getExperts(), cg.token,
      [&](Value j) { return cg.load(forced, j); },
      KernelErrorCode::ForcedIdOutOfRange, KernelErrorCode::ForcedIdRepeated,
      op.getUnusedSlots());
  return success();
}

LogicalResult lowerHashSelect(HashSelectOp op, RowCodegen &cg) {
  OpBuilder &b = cg.b;
  Location loc = cg.loc;
  Value tokenIds = cg.rowOf(op.getTokenIds()).memref;
  Value table = cg.rowOf(op.getTable()).memref;
  if (!tokenIds || !table)
    return op.emitOpError("token ids and table must be arguments of the entry "
                          "point");
  RowRef ids = cg.newRow(op.getIds());
  const int64_t k = ids.size;

  Value tokenId = cg.toI64(
      b.create<memref::LoadOp>(loc, tokenIds, ValueRange{cg.token}));
  Value vocab = cg.toI64(b.create<memref::DimOp>(loc, table, 0));
  Value known = cg.inRange(tokenId, vocab);
  auto ifKnown = b.create<scf::IfOp>(loc, known, /*withElseRegion=*/true);
  {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(ifKnown.thenBlock());
    Value row = b.create<arith::IndexCastOp>(loc, b.getIndexType(), tokenId);
    emitCheckedIds(
        cg, ids, k, op.getExperts(), tokenId,
        [&](Value j) {
          return b.create<memref::LoadOp>(loc, table, ValueRange{row, j});
        },
        KernelErrorCode::HashEntryOutOfRange,
        KernelErrorCode::HashEntryRepeated);

    b.setInsertionPointToStart(ifKnown.elseBlock());
    cg.recordError(KernelErrorCode::TokenIdOutsideVocab, cg.token, vocab,
                   tokenId);
    cg.forLoop(0, k, {}, [&](Value j, ValueRange) {
      cg.store(cg.i32(0), ids, j);
      return SmallVector<Value>{};
    });
  }
  return success();
}

} // namespace

LogicalResult lowerValidatedSelection(Operation *op, RowCodegen &cg) {
  return llvm::TypeSwitch<Operation *, LogicalResult>(op)
      .Case([&](ForcedSelectOp op) { return lowerForcedSelect(op, cg); })
      .Case([&](HashSelectOp op) { return lowerHashSelect(op, cg); })
      .Default([](Operation *op) {
        return op->emitOpError("is not a validated selection op");
      });
}

} // namespace mlir::moe::loops
