//===- RowCodegen.cpp - Emitting one token's row of moe ops ---------------===//

#include "dialects/moe/Conversion/MoEToLoops/RowCodegen.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

namespace mlir::moe::loops {

RowCodegen::RowCodegen(OpBuilder &b, OpBuilder &allocBuilder, Location loc,
                       int64_t vectorWidth, Value errorRecord)
    : b(b), allocBuilder(allocBuilder), loc(loc), width(vectorWidth),
      errorRecord(errorRecord) {}

std::optional<RowRef> RowCodegen::reusedRow(Type elementType, int64_t size,
                                            bool padded) {
  if (reuseNext >= reuseEnd)
    return std::nullopt;
  const RowRef &row = stackRows[reuseNext];
  if (row.elementType() != elementType || row.size != size ||
      row.padded != padded) {
    reuseNext = reuseEnd; // the op sequence differs from here on
    return std::nullopt;
  }
  ++reuseNext;
  return row;
}

void RowCodegen::reuseRowsFrom(size_t begin, size_t end) {
  reuseNext = begin;
  reuseEnd = end;
}

RowRef RowCodegen::allocRow(Type elementType, int64_t size) {
  if (std::optional<RowRef> row = reusedRow(elementType, size, true))
    return *row;
  // Whole chunks, so that chunk loads and stores of a stack row never need
  // a mask.
  int64_t padded = (size + width - 1) / width * width;
  Value buffer = allocBuilder.create<memref::AllocaOp>(
      loc, MemRefType::get({padded}, elementType));
  // Padding lanes are read (and ignored) by chunk loads: give them a
  // defined value once, at the entry, rather than reading uninitialized
  // stack. One store of a zero chunk over the last chunk, before anything
  // else writes the row: on a GPU one lane-parallel store instead of a
  // fenced scalar store per padding element.
  if (padded > size) {
    auto chunkType = VectorType::get({width}, elementType);
    Value zeros = allocBuilder.create<arith::ConstantOp>(
        loc, chunkType, allocBuilder.getZeroAttr(chunkType));
    allocBuilder.create<vector::StoreOp>(
        loc, zeros, buffer,
        ValueRange{
            allocBuilder.create<arith::ConstantIndexOp>(loc, padded - width)});
  }
  stackRows.push_back(RowRef{buffer, /*perToken=*/false, size, /*padded=*/true});
  return stackRows.back();
}

RowRef RowCodegen::allocScalarRow(Type elementType, int64_t size) {
  if (std::optional<RowRef> row = reusedRow(elementType, size, false))
    return *row;
  Value buffer = allocBuilder.create<memref::AllocaOp>(
      loc, MemRefType::get({size}, elementType));
  stackRows.push_back(
      RowRef{buffer, /*perToken=*/false, size, /*padded=*/false});
  return stackRows.back();
}

RowRef RowCodegen::newRow(Value result) {
  auto type = cast<RankedTensorType>(result.getType());
  RowRef row =
      allocRow(type.getElementType(), type.getDimSize(type.getRank() - 1));
  rows[result] = row;
  return row;
}

Value RowCodegen::index(int64_t v) {
  return b.create<arith::ConstantIndexOp>(loc, v);
}
Value RowCodegen::i32(int64_t v) {
  return b.create<arith::ConstantIntOp>(loc, v, 32);
}
Value RowCodegen::i64(int64_t v) {
  return b.create<arith::ConstantIntOp>(loc, v, 64);
}
Value RowCodegen::f32(double v) {
  return b.create<arith::ConstantFloatOp>(loc, APFloat(static_cast<float>(v)),
                                          b.getF32Type());
}
Value RowCodegen::boolean(bool v) {
  return b.create<arith::ConstantIntOp>(loc, v, 1);
}
VectorType RowCodegen::vectorOf(Type element) const {
  return VectorType::get({width}, element);
}
Value RowCodegen::splat(Value scalar) {
  return b.create<vector::SplatOp>(loc, vectorOf(scalar.getType()), scalar);
}

SmallVector<Value> RowCodegen::indices(const RowRef &row, Value i) {
  if (row.perToken)
    return {token, i};
  return {i};
}

Value RowCodegen::load(const RowRef &row, Value i) {
  return b.create<memref::LoadOp>(loc, row.memref, indices(row, i));
}

Value RowCodegen::loadF32(const RowRef &row, Value i) {
  Value value = load(row, i);
  if (!value.getType().isF32())
    value = b.create<arith::ExtFOp>(loc, b.getF32Type(), value);
  return value;
}

void RowCodegen::store(Value value, const RowRef &row, Value i) {
  b.create<memref::StoreOp>(loc, value, row.memref, indices(row, i));
}

Value RowCodegen::loadChunk(const RowRef &row, Value e0, int64_t valid,
                            Value padding) {
  Type element = row.elementType();
  VectorType type = vectorOf(element);
  Value chunk;
  if (valid == width || row.padded) {
    chunk = b.create<vector::LoadOp>(loc, type, row.memref, indices(row, e0));
  } else {
    // The tail of an argument row: masked lanes read the padding, not
    // memory past the row.
    Value mask = b.create<vector::ConstantMaskOp>(
        loc, VectorType::get({width}, b.getI1Type()),
        b.getI64ArrayAttr({valid}));
    Value pad = padding;
    if (pad.getType() != element)
      pad = b.create<arith::TruncFOp>(loc, element, pad);
    chunk = b.create<vector::MaskedLoadOp>(loc, type, row.memref,
                                           indices(row, e0), mask, splat(pad));
  }
  if (isa<FloatType>(element) && !element.isF32())
    chunk = b.create<arith::ExtFOp>(loc, vectorOf(b.getF32Type()), chunk);
  return chunk;
}

void RowCodegen::storeChunk(Value vector, const RowRef &row, Value e0,
                            int64_t valid) {
  if (valid == width || row.padded) {
    b.create<vector::StoreOp>(loc, vector, row.memref, indices(row, e0));
    return;
  }
  Value mask = b.create<vector::ConstantMaskOp>(
      loc, VectorType::get({width}, b.getI1Type()),
      b.getI64ArrayAttr({valid}));
  b.create<vector::MaskedStoreOp>(loc, row.memref, indices(row, e0), mask,
                                  vector);
}

Value RowCodegen::laneIds(Value e0) {
  SmallVector<int32_t> steps;
  for (int64_t lane = 0; lane < width; ++lane)
    steps.push_back(static_cast<int32_t>(lane));
  VectorType type = vectorOf(b.getI32Type());
  Value lanes = b.create<arith::ConstantOp>(
      loc, type, DenseElementsAttr::get(type, ArrayRef<int32_t>(steps)));
  Value base = b.create<arith::IndexCastOp>(loc, b.getI32Type(), e0);
  return b.create<arith::AddIOp>(loc, lanes, splat(base));
}

SmallVector<Value> RowCodegen::forEachChunk(int64_t n, ValueRange init,
                                            ChunkBody body, int64_t unroll) {
  const int64_t step = width * std::max<int64_t>(1, unroll);
  const int64_t looped = n / step * step;
  SmallVector<Value> values(init.begin(), init.end());
  if (looped > 0) {
    auto loop = b.create<scf::ForOp>(
        loc, index(0), index(looped), index(step), values,
        [&](OpBuilder &nested, Location, Value first, ValueRange iter) {
          OpBuilder::InsertionGuard guard(b);
          b.setInsertionPointToStart(nested.getInsertionBlock());
          SmallVector<Value> next(iter.begin(), iter.end());
          for (int64_t e = 0; e < step; e += width) {
            Value e0 = e == 0 ? first
                              : b.create<arith::AddIOp>(loc, first, index(e));
            next = body(e0, width, next);
          }
          b.create<scf::YieldOp>(loc, next);
        });
    values.assign(loop.getResults().begin(), loop.getResults().end());
  }
  // Whole chunks the unrolled loop leaves, then the tail.
  for (int64_t e0 = looped; e0 < n; e0 += width)
    values = body(index(e0), std::min(width, n - e0), values);
  return values;
}

SmallVector<Value> RowCodegen::forLoop(Value lb, Value ub, ValueRange init,
                                       LoopBody body) {
  auto loop = b.create<scf::ForOp>(
      loc, lb, ub, index(1), init,
      [&](OpBuilder &nested, Location, Value iv, ValueRange iter) {
        OpBuilder::InsertionGuard guard(b);
        b.setInsertionPointToStart(nested.getInsertionBlock());
        SmallVector<Value> next = body(iv, iter);
        b.create<scf::YieldOp>(loc, next);
      });
  return SmallVector<Value>(loop.getResults().begin(),
                            loop.getResults().end());
}

void RowCodegen::ifThen(Value condition, function_ref<void()> thenBody) {
  auto ifOp = b.create<scf::IfOp>(loc, condition, /*withElseRegion=*/false);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(ifOp.thenBlock());
  thenBody();
}

Value RowCodegen::toI64(Value v) {
  Type type = v.getType();
  if (type.isIndex())
    return b.create<arith::IndexCastOp>(loc, b.getI64Type(), v);
  if (type.getIntOrFloatBitWidth() < 64)
    return b.create<arith::ExtSIOp>(loc, b.getI64Type(), v);
  return v;
}

void RowCodegen::recordError(KernelErrorCode code, Value index0, Value index1,
                             Value value, bool eachThread) {
  SmallVector<Value> words{i64(static_cast<int64_t>(code)), toI64(token),
                           toI64(index0), toI64(index1), toI64(value)};
  int64_t category = moegen::kernelErrorCategory(static_cast<int64_t>(code));

  // Replace the record when it is empty or holds a violation of a later
  // category. On the host a record belongs to one task whose tokens arrive
  // in order, so within a category the first one stays; on the GPU warps
  // run in any order, so a lower token also wins.
  auto updateRecord = [&] {
    Value current =
        b.create<memref::LoadOp>(loc, errorRecord, index(moegen::kErrorCode));
    Value currentCategory = i64(0);
    for (int64_t threshold : moegen::kErrorCategoryThresholds) {
      Value reached = b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::sge,
                                              current, i64(threshold));
      currentCategory = b.create<arith::AddIOp>(
          loc, currentCategory,
          b.create<arith::ExtUIOp>(loc, b.getI64Type(), reached));
    }
    Value replace = b.create<arith::OrIOp>(
        loc,
        b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::eq, current,
                                i64(0)),
        b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::sgt,
                                currentCategory, i64(category)));
    if (target == KernelTarget::Nvptx) {
      Value currentToken = b.create<memref::LoadOp>(
          loc, errorRecord, index(moegen::kErrorToken));
      Value sameCategoryLaterToken = b.create<arith::AndIOp>(
          loc,
          b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::eq,
                                  currentCategory, i64(category)),
          b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::sgt,
                                  currentToken, words[1]));
      replace = b.create<arith::OrIOp>(loc, replace, sameCategoryLaterToken);
      if (eachThread) {
        // Threads of one token report in any order too: the lower
        // (index0, index1) wins.
        auto word = [&](int64_t slot) {
          return b.create<memref::LoadOp>(loc, errorRecord, index(slot))
              .getResult();
        };
        auto cmp = [&](arith::CmpIPredicate predicate, Value x, Value y) {
          return b.create<arith::CmpIOp>(loc, predicate, x, y).getResult();
        };
        Value current0 = word(moegen::kErrorIndex0);
        Value current1 = word(moegen::kErrorIndex0 + 1);
        Value laterIndex = b.create<arith::OrIOp>(
            loc, cmp(arith::CmpIPredicate::sgt, current0, words[2]),
            b.create<arith::AndIOp>(
                loc, cmp(arith::CmpIPredicate::eq, current0, words[2]),
                cmp(arith::CmpIPredicate::sgt, current1, words[3])));
        Value sameTokenLaterIndex = b.create<arith::AndIOp>(
            loc,
            b.create<arith::AndIOp>(
                loc,
                cmp(arith::CmpIPredicate::eq, currentCategory, i64(category)),
                cmp(arith::CmpIPredicate::eq, currentToken, words[1])),
            laterIndex);
        replace = b.create<arith::OrIOp>(loc, replace, sameTokenLaterIndex);
      }
    }
    ifThen(replace, [&] {
      for (auto [slot, word] : llvm::enumerate(words))
        b.create<memref::StoreOp>(loc, word, errorRecord,
                                  index(static_cast<int64_t>(slot)));
    });
  };

  if (target == KernelTarget::Cpu) {
    updateRecord();
    return;
  }
  // One lane per warp (or the reporting thread) takes the lock: exchange 1
  // in until 0 comes out (acquire), update, exchange 0 back (release).
  // Errors are rare, so the lock is cold on the fast path.
  Value leader = boolean(true);
  if (!eachThread) {
    Value lane = b.create<gpu::LaneIdOp>(loc, /*upperBound=*/nullptr);
    leader =
        b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::eq, lane, index(0));
  }
  ifThen(leader, [&] {
    Value lockSlot = index(moegen::kErrorLockWord);
    auto spin = b.create<scf::WhileOp>(loc, TypeRange{}, ValueRange{});
    {
      OpBuilder::InsertionGuard guard(b);
      Block *before = b.createBlock(&spin.getBefore());
      Value previous = b.create<memref::AtomicRMWOp>(
          loc, arith::AtomicRMWKind::assign, i64(1), errorRecord,
          ValueRange{lockSlot});
      Value held = b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::ne,
                                           previous, i64(0));
      b.create<scf::ConditionOp>(loc, held, ValueRange{});
      (void)before;
      b.createBlock(&spin.getAfter());
      b.create<scf::YieldOp>(loc);
    }
    updateRecord();
    b.create<memref::AtomicRMWOp>(loc, arith::AtomicRMWKind::assign, i64(0),
                                  errorRecord, ValueRange{lockSlot});
  });
}

Value RowCodegen::inRange(Value value, Value bound) {
  // Unsigned compare: a negative value wraps above any bound.
  return b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::ult, value, bound);
}

Value RowCodegen::safeId(Value id, int64_t bound) {
  Type type = id.getType();
  Value limit = b.create<arith::ConstantIntOp>(loc, bound,
                                               type.getIntOrFloatBitWidth());
  Value zero = b.create<arith::ConstantIntOp>(loc, 0,
                                              type.getIntOrFloatBitWidth());
  return b.create<arith::SelectOp>(loc, inRange(id, limit), id, zero);
}

} // namespace mlir::moe::loops
