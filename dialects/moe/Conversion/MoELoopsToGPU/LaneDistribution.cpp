//===- LaneDistribution.cpp - vector lanes to warp lanes ------------------===//

#include "dialects/moe/Conversion/MoELoopsToGPU/LaneDistribution.h"

#include "llvm/ADT/ScopeExit.h"
#include "llvm/ADT/StringSwitch.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/Matchers.h"

namespace mlir::moe::gpu_lowering {

Type laneType(Type type) {
  if (auto vector = dyn_cast<VectorType>(type))
    return vector.getElementType();
  return type;
}

namespace {
bool hasVectorTypes(Operation *op) {
  auto isVector = [](Type t) { return isa<VectorType>(t); };
  return llvm::any_of(op->getOperandTypes(), isVector) ||
         llvm::any_of(op->getResultTypes(), isVector);
}

SmallVector<Type> laneTypes(TypeRange types) {
  SmallVector<Type> result;
  for (Type t : types)
    result.push_back(laneType(t));
  return result;
}
} // namespace

LogicalResult
LaneDistributor::cloneBlock(Block &block,
                            const llvm::DenseSet<Operation *> &skip) {
  for (Operation &op : block) {
    if (skip.contains(&op))
      continue;
    if (failed(cloneOp(&op)))
      return failure();
  }
  return success();
}

Value segmentMemberMask(OpBuilder &b, Location loc, Value laneId,
                        int64_t lanesPerToken) {
  if (lanesPerToken >= 32)
    return b.create<arith::ConstantIntOp>(loc, -1, 32);
  Type i32 = b.getI32Type();
  Value laneI32 = b.create<arith::IndexCastOp>(loc, i32, laneId);
  Value first = b.create<arith::AndIOp>(
      loc, laneI32,
      b.create<arith::ConstantIntOp>(loc, ~(lanesPerToken - 1), 32));
  Value ones =
      b.create<arith::ConstantIntOp>(loc, (int64_t(1) << lanesPerToken) - 1, 32);
  return b.create<arith::ShLIOp>(loc, ones, first);
}

void LaneDistributor::segmentBarrier(Location loc) {
  // One lane is its own segment: nothing to order.
  if (lanesPerToken == 1)
    return;
  pending = PendingAccesses();
  // Back-to-back fenced accesses share the barrier between them.
  Block *block = b.getInsertionBlock();
  if (b.getInsertionPoint() != block->begin() &&
      isa<NVVM::SyncWarpOp>(*std::prev(b.getInsertionPoint())))
    return;
  b.create<NVVM::SyncWarpOp>(loc, collectiveMask());
}

bool LaneDistributor::ElementSet::mayHold(const Element &element) const {
  if (all)
    return true;
  if (element.constant)
    return llvm::is_contained(constants, *element.constant) || !ivs.empty() ||
           !otherTrips.empty();
  if (element.iv)
    return !constants.empty() || !ivs.empty() ||
           llvm::any_of(otherTrips,
                        [&](Value iv) { return iv != element.iv; });
  return !empty();
}

void LaneDistributor::ElementSet::add(const Element &element) {
  if (all)
    return;
  // Past a few constants, "all" is as good and bounded.
  if (element.constant && constants.size() < 64) {
    if (!llvm::is_contained(constants, *element.constant))
      constants.push_back(*element.constant);
  } else if (element.iv) {
    if (!llvm::is_contained(ivs, element.iv))
      ivs.push_back(element.iv);
  } else {
    *this = ElementSet();
    all = true;
  }
}

void LaneDistributor::ElementSet::merge(const ElementSet &other) {
  if (other.all)
    add(Element());
  for (int64_t c : other.constants)
    add(Element{c, Value()});
  for (Value iv : other.ivs)
    add(Element{std::nullopt, iv});
  if (all)
    return;
  for (Value iv : other.otherTrips)
    if (!llvm::is_contained(otherTrips, iv))
      otherTrips.push_back(iv);
}

void LaneDistributor::ElementSet::carryAround(Value iv) {
  if (!llvm::is_contained(ivs, iv))
    return;
  llvm::erase(ivs, iv);
  if (!llvm::is_contained(otherTrips, iv))
    otherTrips.push_back(iv);
}

void LaneDistributor::ElementSet::leave(Value iv) {
  if (llvm::is_contained(ivs, iv) || llvm::is_contained(otherTrips, iv))
    add(Element());
}

void LaneDistributor::RowAccesses::merge(const RowAccesses &other) {
  ownLoad |= other.ownLoad;
  ownStore |= other.ownStore;
  anyLoads.merge(other.anyLoads);
  anyStores.merge(other.anyStores);
}

void LaneDistributor::PendingAccesses::merge(const PendingAccesses &other) {
  unknown |= other.unknown;
  for (const auto &[row, accesses] : other.rows)
    rows[row].merge(accesses);
}

void LaneDistributor::record(RowAccesses &row, Access access,
                             Element element) {
  switch (access) {
  case Access::OwnLoad:
    row.ownLoad = true;
    break;
  case Access::OwnStore:
    row.ownStore = true;
    break;
  case Access::AnyLoad:
    row.anyLoads.add(element);
    break;
  case Access::AnyStore:
    row.anyStores.add(element);
    break;
  }
}

LaneDistributor::Element LaneDistributor::elementOf(ValueRange indices) {
  if (indices.size() != 1)
    return {};
  APInt constant;
  if (matchPattern(indices[0], m_ConstantInt(&constant)))
    return {constant.getSExtValue(), Value()};
  if (auto arg = dyn_cast<BlockArgument>(indices[0]))
    if (auto loop = dyn_cast<scf::ForOp>(arg.getOwner()->getParentOp());
        loop && arg == loop.getInductionVar())
      return {std::nullopt, arg};
  return {};
}

void LaneDistributor::orderSharedAccess(Location loc, Value memref,
                                        Access access, Element element) {
  if (lanesPerToken == 1 || !isShared(memref))
    return;
  auto it = pending.rows.find(memref);
  RowAccesses done = it == pending.rows.end() ? RowAccesses() : it->second;
  // A lane's own accesses never meet another lane's own accesses. A scalar
  // access (every lane of the segment, one element) meets every own access
  // and the scalar accesses of its element. Loads meet only stores.
  bool conflict = pending.unknown;
  switch (access) {
  case Access::OwnLoad:
    conflict |= !done.anyStores.empty();
    break;
  case Access::OwnStore:
    conflict |= !done.anyStores.empty() || !done.anyLoads.empty();
    break;
  case Access::AnyLoad:
    conflict |= done.ownStore || done.anyStores.mayHold(element);
    break;
  case Access::AnyStore:
    conflict |= done.ownStore || done.ownLoad ||
                done.anyStores.mayHold(element) ||
                done.anyLoads.mayHold(element);
    break;
  }
  if (conflict)
    segmentBarrier(loc);
  record(pending.rows[memref], access, element);
}

bool LaneDistributor::ElementSet::mayOverlap(const ElementSet &other) const {
  if (empty() || other.empty())
    return false;
  if (all || other.all || !ivs.empty() || !otherTrips.empty() ||
      !other.ivs.empty() || !other.otherTrips.empty())
    return true;
  return llvm::any_of(constants, [&](int64_t c) {
    return llvm::is_contained(other.constants, c);
  });
}

bool LaneDistributor::conflict(const PendingAccesses &done,
                               const PendingAccesses &next) {
  auto isEmpty = [](const PendingAccesses &p) {
    return !p.unknown && llvm::all_of(p.rows, [](const auto &row) {
      const RowAccesses &r = row.second;
      return !r.ownLoad && !r.ownStore && r.anyLoads.empty() &&
             r.anyStores.empty();
    });
  };
  if (done.unknown || next.unknown)
    return !isEmpty(done) && !isEmpty(next);
  for (const auto &[memref, later] : next.rows) {
    auto it = done.rows.find(memref);
    if (it == done.rows.end())
      continue;
    const RowAccesses &earlier = it->second;
    bool own = later.ownLoad || later.ownStore;
    if ((own && !earlier.anyStores.empty()) ||
        (later.ownStore && !earlier.anyLoads.empty()) ||
        (!later.anyLoads.empty() && earlier.ownStore) ||
        (!later.anyStores.empty() && (earlier.ownStore || earlier.ownLoad)) ||
        earlier.anyStores.mayOverlap(later.anyLoads) ||
        earlier.anyStores.mayOverlap(later.anyStores) ||
        earlier.anyLoads.mayOverlap(later.anyStores))
      return true;
  }
  return false;
}

bool LaneDistributor::isChunkAligned(Value index, int depth) {
  if (depth > 16)
    return false;
  APInt constant;
  if (matchPattern(index, m_ConstantInt(&constant)))
    return constant.getSExtValue() % lanesPerToken == 0;
  if (auto arg = dyn_cast<BlockArgument>(index)) {
    auto loop = dyn_cast<scf::ForOp>(arg.getOwner()->getParentOp());
    return loop && arg == loop.getInductionVar() &&
           isChunkAligned(loop.getLowerBound(), depth + 1) &&
           isChunkAligned(loop.getStep(), depth + 1);
  }
  if (auto add = index.getDefiningOp<arith::AddIOp>())
    return isChunkAligned(add.getLhs(), depth + 1) &&
           isChunkAligned(add.getRhs(), depth + 1);
  if (auto mul = index.getDefiningOp<arith::MulIOp>())
    return isChunkAligned(mul.getLhs(), depth + 1) ||
           isChunkAligned(mul.getRhs(), depth + 1);
  return false;
}

LaneDistributor::Access LaneDistributor::chunkAccess(Value index,
                                                     Type vectorType,
                                                     bool store) {
  auto vector = dyn_cast<VectorType>(vectorType);
  bool own = vector && vector.getRank() == 1 &&
             vector.getNumElements() == lanesPerToken && isChunkAligned(index);
  if (store)
    return own ? Access::OwnStore : Access::AnyStore;
  return own ? Access::OwnLoad : Access::AnyLoad;
}

/// Whether a masked chunk load from `memref` at an aligned start may read
/// every lane's element unmasked: the row is a whole number of chunks.
static bool isWholeChunks(Value memref, int64_t lanesPerToken) {
  auto type = dyn_cast<MemRefType>(memref.getType());
  return type && type.hasStaticShape() && type.getRank() >= 1 &&
         type.getShape().back() % lanesPerToken == 0;
}

LaneDistributor::PendingAccesses
LaneDistributor::summarizeSharedAccesses(Block &block, Value iv) {
  PendingAccesses summary;
  auto note = [&](Value source, Access access, Element element = {}) {
    Value memref = mapping.lookupOrNull(source);
    if (!memref || !isShared(memref))
      return;
    // Another loop's variable takes every value in the summary.
    if (element.iv && element.iv != iv)
      element = {};
    record(summary.rows[memref], access, element);
  };
  block.walk([&](Operation *op) {
    if (auto load = dyn_cast<vector::LoadOp>(op)) {
      note(load.getBase(), chunkAccess(load.getIndices().back(),
                                       load.getVectorType(), false));
    } else if (auto load = dyn_cast<vector::MaskedLoadOp>(op)) {
      Value memref = mapping.lookupOrNull(load.getBase());
      bool whole = memref && isWholeChunks(memref, lanesPerToken);
      note(load.getBase(),
           whole ? chunkAccess(load.getIndices().back(), load.getVectorType(),
                               false)
                 : Access::AnyLoad);
    } else if (auto store = dyn_cast<vector::StoreOp>(op)) {
      note(store.getBase(), chunkAccess(store.getIndices().back(),
                                        store.getVectorType(), true));
    } else if (auto store = dyn_cast<vector::MaskedStoreOp>(op)) {
      note(store.getBase(), chunkAccess(store.getIndices().back(),
                                        store.getVectorType(), true));
    } else if (auto gather = dyn_cast<vector::GatherOp>(op)) {
      note(gather.getBase(), Access::AnyLoad);
    } else if (auto scatter = dyn_cast<vector::ScatterOp>(op)) {
      note(scatter.getBase(), Access::AnyStore);
    } else if (auto load = dyn_cast<memref::LoadOp>(op)) {
      note(load.getMemRef(), Access::AnyLoad, elementOf(load.getIndices()));
    } else if (auto store = dyn_cast<memref::StoreOp>(op)) {
      note(store.getMemRef(), Access::AnyStore,
           elementOf(store.getIndices()));
    } else {
      for (Value operand : op->getOperands())
        if (Value memref = mapping.lookupOrNull(operand);
            memref && isShared(memref))
          summary.unknown = true;
    }
  });
  return summary;
}

Value LaneDistributor::collectiveMask() {
  return divergenceDepth == 0 ? allLanes : memberMask;
}

Value LaneDistributor::shuffleXor(Location loc, Value value, int64_t offset) {
  // shfl.sync.bfly's c operand: the segment bits of a lane id in [12:8]
  // and the highest source lane, 31, in [4:0] (CUDA's __shfl_xor_sync with
  // a width).
  Value clamp =
      b.create<arith::ConstantIntOp>(loc, ((32 - lanesPerToken) << 8) | 31, 32);
  Value distance = b.create<arith::ConstantIntOp>(loc, offset, 32);
  return b.create<NVVM::ShflOp>(loc, value.getType(), collectiveMask(), value,
                                distance, clamp, NVVM::ShflKind::bfly,
                                UnitAttr());
}

SmallVector<Value> LaneDistributor::gatherIndices(Location loc,
                                                  ValueRange indices,
                                                  Value indexVec, Value mask) {
  SmallVector<Value> result;
  for (Value index : indices)
    result.push_back(mapping.lookup(index));
  Value offset = mapping.lookup(indexVec);
  if (!offset.getType().isIndex())
    offset = b.create<arith::IndexCastOp>(loc, b.getIndexType(), offset);
  if (mask)
    offset = b.create<arith::SelectOp>(
        loc, mapping.lookup(mask), offset,
        b.create<arith::ConstantIndexOp>(loc, 0));
  result.back() = b.create<arith::AddIOp>(loc, result.back(), offset);
  return result;
}

SmallVector<Value> LaneDistributor::laneIndices(ValueRange indices) {
  SmallVector<Value> result;
  for (Value index : indices)
    result.push_back(mapping.lookup(index));
  result.back() =
      b.create<arith::AddIOp>(result.back().getLoc(), result.back(), lane);
  return result;
}

LogicalResult LaneDistributor::cloneOp(Operation *op) {
  // The row code's lane (the error record's leader) is the segment's lane.
  if (auto laneId = dyn_cast<gpu::LaneIdOp>(op)) {
    mapping.map(laneId.getResult(), lane);
    return success();
  }
  if (isa<scf::ForOp>(op))
    return cloneFor(op);
  if (isa<scf::IfOp>(op))
    return cloneIf(op);
  if (op->getDialect() &&
      op->getDialect()->getNamespace() == vector::VectorDialect::getDialectNamespace())
    return cloneVectorOp(op);
  if (isa<arith::ConstantOp>(op) && hasVectorTypes(op))
    return cloneConstant(op);
  if (isa<scf::YieldOp>(op)) {
    // Operands are already lane values.
    b.clone(*op, mapping);
    return success();
  }
  if (hasVectorTypes(op))
    return cloneElementwise(op);

  // A region op other than scf.for / scf.if (the error record's spin lock)
  // must hold scalar code only: it is cloned whole.
  if (op->getNumRegions() > 0) {
    WalkResult walk = op->walk([&](Operation *inner) {
      if (hasVectorTypes(inner) || isa<memref::AllocaOp>(inner))
        return WalkResult::interrupt();
      return WalkResult::advance();
    });
    if (walk.wasInterrupted())
      return op->emitOpError("holds vector code that cannot be spread over "
                             "warp lanes");
  }
  if (isa<memref::AllocaOp, memref::AllocOp>(op))
    return op->emitOpError("allocates memory inside a GPU kernel; rows must "
                           "be stack rows at the kernel entry");

  if (auto store = dyn_cast<memref::StoreOp>(op))
    orderSharedAccess(op->getLoc(), mapping.lookup(store.getMemRef()),
                      Access::AnyStore, elementOf(store.getIndices()));
  else if (auto load = dyn_cast<memref::LoadOp>(op))
    orderSharedAccess(op->getLoc(), mapping.lookup(load.getMemRef()),
                      Access::AnyLoad, elementOf(load.getIndices()));
  // A region op cloned whole: order what it does to shared rows before and
  // after it, unseen.
  bool opaque = false;
  if (op->getNumRegions() > 0) {
    op->walk([&](Operation *inner) {
      for (Value operand : inner->getOperands())
        if (Value memref = mapping.lookupOrNull(operand);
            memref && isShared(memref))
          opaque = true;
    });
    if (opaque && (pending.unknown || !pending.rows.empty()))
      segmentBarrier(op->getLoc());
  }
  b.clone(*op, mapping);
  if (opaque)
    pending.unknown = true;
  // A block barrier orders shared memory for every thread.
  if (isa<gpu::BarrierOp>(op))
    pending = PendingAccesses();
  return success();
}

LogicalResult LaneDistributor::cloneFor(Operation *op) {
  auto loop = cast<scf::ForOp>(op);
  // A trip count that depends on the token may differ between segments;
  // constant bounds keep the segments in step.
  auto isConstant = [&](Value v) {
    return matchPattern(mapping.lookup(v), m_Constant());
  };
  const bool tokenLoop = tokenBegin && loop.getLowerBound() == tokenBegin &&
                         loop.getUpperBound() == tokenEnd;
  const bool uniform = tokenLoop || (isConstant(loop.getLowerBound()) &&
                                     isConstant(loop.getUpperBound()) &&
                                     isConstant(loop.getStep()));
  Value iv = loop.getInductionVar();
  PendingAccesses body = summarizeSharedAccesses(*loop.getBody(), iv);
  // A barrier the loop's first accesses need from what came before goes
  // before the loop, once, rather than into every trip.
  if (lanesPerToken > 1 && conflict(pending, body))
    segmentBarrier(loop.getLoc());
  if (!uniform)
    ++divergenceDepth;
  auto restore = llvm::make_scope_exit([&] {
    if (!uniform)
      --divergenceDepth;
  });
  // An iteration starts after the previous one's accesses; the loop ends
  // after the last one's, or (no trip) where it started. The token loop
  // has exactly one trip.
  PendingAccesses before = pending;
  if (!tokenLoop) {
    for (auto &[memref, row] : body.rows) {
      row.anyLoads.carryAround(iv);
      row.anyStores.carryAround(iv);
    }
    pending.merge(body);
  }
  auto leave = llvm::make_scope_exit([&] {
    for (auto &[memref, row] : pending.rows) {
      row.anyLoads.leave(iv);
      row.anyStores.leave(iv);
    }
    pending.merge(before);
  });
  SmallVector<Value> inits;
  for (Value init : loop.getInitArgs())
    inits.push_back(mapping.lookup(init));
  LogicalResult status = success();
  auto newLoop = b.create<scf::ForOp>(
      loop.getLoc(), mapping.lookup(loop.getLowerBound()),
      mapping.lookup(loop.getUpperBound()), mapping.lookup(loop.getStep()),
      inits, [&](OpBuilder &nested, Location, Value iv, ValueRange iter) {
        OpBuilder::InsertionGuard guard(b);
        b.setInsertionPointToStart(nested.getInsertionBlock());
        mapping.map(loop.getInductionVar(), iv);
        for (auto [from, to] : llvm::zip(loop.getRegionIterArgs(), iter))
          mapping.map(from, to);
        status = cloneBlock(*loop.getBody());
      });
  for (auto [from, to] : llvm::zip(loop.getResults(), newLoop.getResults()))
    mapping.map(from, to);
  return status;
}

LogicalResult LaneDistributor::cloneIf(Operation *op) {
  auto ifOp = cast<scf::IfOp>(op);
  bool hasElse = !ifOp.getElseRegion().empty();
  auto newIf = b.create<scf::IfOp>(ifOp.getLoc(),
                                   laneTypes(ifOp.getResultTypes()),
                                   mapping.lookup(ifOp.getCondition()),
                                   /*withElseRegion=*/hasElse);
  // The condition depends on the token: segments may part here.
  ++divergenceDepth;
  auto restore = llvm::make_scope_exit([&] { --divergenceDepth; });
  auto cloneRegion = [&](Region &from, Region &to) -> LogicalResult {
    Block &target = to.front();
    // Builders add an empty scf.yield only for result-less ifs; the cloned
    // terminator replaces it.
    if (!target.empty())
      target.getTerminator()->erase();
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToEnd(&target);
    return cloneBlock(from.front());
  };
  // Each branch starts from what came before; after the if, either may
  // have run.
  PendingAccesses before = pending;
  if (failed(cloneRegion(ifOp.getThenRegion(), newIf.getThenRegion())))
    return failure();
  PendingAccesses afterThen = pending;
  pending = before;
  if (hasElse &&
      failed(cloneRegion(ifOp.getElseRegion(), newIf.getElseRegion())))
    return failure();
  pending.merge(afterThen);
  for (auto [from, to] : llvm::zip(ifOp.getResults(), newIf.getResults()))
    mapping.map(from, to);
  return success();
}

LogicalResult LaneDistributor::cloneConstant(Operation *op) {
  auto constant = cast<arith::ConstantOp>(op);
  auto dense = dyn_cast<DenseElementsAttr>(constant.getValue());
  Location loc = op->getLoc();
  if (!dense)
    return op->emitOpError("vector constant is not dense");
  Type element = dense.getElementType();
  if (dense.isSplat()) {
    Value scalar = b.create<arith::ConstantOp>(
        loc, element, cast<TypedAttr>(dense.getSplatValue<Attribute>()));
    mapping.map(constant.getResult(), scalar);
    return success();
  }
  // Lane ids (e0 + [0, 1, ..., 31]) come as the constant 0..31: any
  // arithmetic progression becomes start + lane * step.
  if (!isa<IntegerType>(element))
    return op->emitOpError("non-uniform float vector constant cannot be "
                           "spread over warp lanes");
  SmallVector<APInt> values(dense.getValues<APInt>());
  const int64_t count = static_cast<int64_t>(values.size());
  auto valueAt = [&](int64_t i) {
    return element.isInteger(1) ? int64_t(values[i].getZExtValue())
                                : values[i].getSExtValue();
  };
  // A sum over the lane's bits: v[l] = v[0] + sum of (v[2^b] - v[0]) over
  // the bits b set in l (folded lane masks such as `lane & 16 != 0`, and the
  // lanes' groups of the transposed group reductions).
  auto bitAdditive = [&]() -> Value {
    if (!llvm::isPowerOf2_64(count))
      return nullptr;
    for (int64_t l = 0; l < count; ++l) {
      int64_t expected = valueAt(0);
      for (int64_t bit = 1; bit < count; bit *= 2)
        if (l & bit)
          expected += valueAt(bit) - valueAt(0);
      if (valueAt(l) != expected)
        return nullptr;
    }
    Type i32 = b.getI32Type();
    Value laneI32 = b.create<arith::IndexCastOp>(loc, i32, lane);
    Value sum = b.create<arith::ConstantIntOp>(loc, valueAt(0), 32);
    Value zero = b.create<arith::ConstantIntOp>(loc, 0, 32);
    for (int64_t bit = 1; bit < count; bit *= 2) {
      int64_t delta = valueAt(bit) - valueAt(0);
      if (delta == 0)
        continue;
      Value set = b.create<arith::CmpIOp>(
          loc, arith::CmpIPredicate::ne,
          b.create<arith::AndIOp>(loc, laneI32,
                                  b.create<arith::ConstantIntOp>(loc, bit, 32)),
          zero);
      sum = b.create<arith::AddIOp>(
          loc, sum,
          b.create<arith::SelectOp>(
              loc, set, b.create<arith::ConstantIntOp>(loc, delta, 32), zero));
    }
    if (element.isInteger(1))
      return b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::ne, sum, zero);
    if (element.getIntOrFloatBitWidth() == 32)
      return sum;
    return b.create<arith::ExtSIOp>(loc, element, sum);
  };
  if (element.isInteger(1)) {
    // A folded constant mask: lanes [first, end) set (a prefix when first
    // is 0).
    int64_t first = 0;
    while (first < count && !values[first].isOne())
      ++first;
    int64_t end = first;
    while (end < count && values[end].isOne())
      ++end;
    bool interval = first < count;
    for (int64_t i = end; i < count; ++i)
      interval = interval && !values[i].isOne();
    if (interval) {
      Value mask = b.create<arith::CmpIOp>(
          loc, arith::CmpIPredicate::ult, lane,
          b.create<arith::ConstantIndexOp>(loc, end));
      if (first > 0)
        mask = b.create<arith::AndIOp>(
            loc, mask,
            b.create<arith::CmpIOp>(
                loc, arith::CmpIPredicate::uge, lane,
                b.create<arith::ConstantIndexOp>(loc, first)));
      mapping.map(constant.getResult(), mask);
      return success();
    }
    if (Value mask = bitAdditive()) {
      mapping.map(constant.getResult(), mask);
      return success();
    }
    return op->emitOpError("i1 vector constant is neither an interval of "
                           "lanes nor a sum over lane bits");
  }
  int64_t start = values[0].getSExtValue();
  int64_t step = count > 1 ? values[1].getSExtValue() - start : 0;
  bool progression = true;
  for (auto [i, v] : llvm::enumerate(values))
    progression = progression &&
                  v.getSExtValue() == start + static_cast<int64_t>(i) * step;
  if (!progression) {
    if (element.getIntOrFloatBitWidth() <= 32)
      if (Value sum = bitAdditive()) {
        mapping.map(constant.getResult(), sum);
        return success();
      }
    return op->emitOpError("vector constant is not an arithmetic "
                           "progression over lanes");
  }
  Value laneId = b.create<arith::IndexCastOp>(loc, element, lane);
  Value stepped = b.create<arith::MulIOp>(
      loc, laneId, b.create<arith::ConstantOp>(loc, IntegerAttr::get(element, step)));
  mapping.map(constant.getResult(),
              b.create<arith::AddIOp>(
                  loc, stepped,
                  b.create<arith::ConstantOp>(loc, IntegerAttr::get(element, start))));
  return success();
}

LogicalResult LaneDistributor::cloneElementwise(Operation *op) {
  // Elementwise arith and math ops: the same op on this lane's element.
  Dialect *dialect = op->getDialect();
  if (op->getNumRegions() != 0 || !dialect ||
      !llvm::is_contained({arith::ArithDialect::getDialectNamespace(),
                           math::MathDialect::getDialectNamespace()},
                          dialect->getNamespace()))
    return op->emitOpError("has vector operands or results and is not "
                           "elementwise arith or math: cannot be spread "
                           "over warp lanes");
  OperationState state(op->getLoc(), op->getName());
  for (Value operand : op->getOperands())
    state.operands.push_back(mapping.lookup(operand));
  state.types = laneTypes(op->getResultTypes());
  state.attributes = op->getAttrs();
  Operation *scalar = b.create(state);
  for (auto [from, to] : llvm::zip(op->getResults(), scalar->getResults()))
    mapping.map(from, to);
  return success();
}

Value LaneDistributor::segmentReduce(Location loc, Value value,
                                     StringRef kind) {
  if (lanesPerToken == 1)
    return value;
  Type type = value.getType();
  Type i32 = b.getI32Type();
  // Whether any or all of the segment's flags are set is one ballot, its
  // segment bits tested once: a VOTE and a compare, where a redux.sync of
  // the widened flag costs a conversion each way as well.
  if (type.isInteger(1) && (kind == "or" || kind == "and")) {
    Value ballot =
        b.create<NVVM::VoteBallotOp>(loc, i32, collectiveMask(), value);
    Value mine = b.create<arith::AndIOp>(loc, ballot, memberMask);
    if (kind == "or")
      return b.create<arith::CmpIOp>(
          loc, arith::CmpIPredicate::ne, mine,
          b.create<arith::ConstantIntOp>(loc, 0, 32));
    return b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::eq, mine,
                                   memberMask);
  }
  // Shuffles move 32-bit words: narrower integers (i1 flags) are widened.
  bool widen = type.isInteger() && type.getIntOrFloatBitWidth() < 32;
  if (widen)
    value = b.create<arith::ExtUIOp>(loc, i32, value);
  // Integer reductions are one redux.sync over the segment's lanes (sm_80
  // and up, every arch the backend targets) instead of log2(W) shuffles;
  // but redux.sync has no segment width, so in converged code, where the
  // shuffles may name the whole warp, a segment's reduction stays a
  // butterfly of shuffles.
  std::optional<NVVM::ReduxKind> redux;
  if (value.getType().isInteger(32) &&
      (lanesPerToken == 32 || divergenceDepth > 0))
    redux = llvm::StringSwitch<std::optional<NVVM::ReduxKind>>(kind)
                .Case("minsi", NVVM::ReduxKind::MIN)
                .Case("maxsi", NVVM::ReduxKind::MAX)
                .Case("add", NVVM::ReduxKind::ADD)
                .Case("or", NVVM::ReduxKind::OR)
                .Case("and", NVVM::ReduxKind::AND)
                .Default(std::nullopt);
  if (redux) {
    value = b.create<NVVM::ReduxOp>(loc, i32, value, *redux, memberMask);
    if (widen)
      value = b.create<arith::TruncIOp>(loc, type, value);
    return value;
  }
  for (int64_t offset = lanesPerToken / 2; offset >= 1; offset /= 2) {
    Value other = shuffleXor(loc, value, offset);
    if (kind == "maximumf")
      value = b.create<arith::MaximumFOp>(loc, value, other);
    else if (kind == "minimumf")
      value = b.create<arith::MinimumFOp>(loc, value, other);
    else if (kind == "add" && isa<FloatType>(value.getType()))
      value = b.create<arith::AddFOp>(loc, value, other);
    else if (kind == "add")
      value = b.create<arith::AddIOp>(loc, value, other);
    else if (kind == "minsi")
      value = b.create<arith::MinSIOp>(loc, value, other);
    else if (kind == "maxsi")
      value = b.create<arith::MaxSIOp>(loc, value, other);
    else if (kind == "or")
      value = b.create<arith::OrIOp>(loc, value, other);
    else if (kind == "and")
      value = b.create<arith::AndIOp>(loc, value, other);
  }
  if (widen)
    value = b.create<arith::TruncIOp>(loc, type, value);
  return value;
}

LogicalResult LaneDistributor::cloneVectorOp(Operation *op) {
  Location loc = op->getLoc();
  if (auto load = dyn_cast<vector::LoadOp>(op)) {
    Value memref = mapping.lookup(load.getBase());
    orderSharedAccess(loc, memref,
                      chunkAccess(load.getIndices().back(),
                                  load.getVectorType(), false));
    mapping.map(load.getResult(),
                b.create<memref::LoadOp>(loc, memref,
                                         laneIndices(load.getIndices())));
    return success();
  }
  if (auto load = dyn_cast<vector::MaskedLoadOp>(op)) {
    Value memref = mapping.lookup(load.getBase());
    Value mask = mapping.lookup(load.getMask());
    SmallVector<Value> indices = laneIndices(load.getIndices());
    Access access = chunkAccess(load.getIndices().back(), load.getVectorType(),
                                false);
    if (access == Access::OwnLoad && isShared(memref) &&
        isWholeChunks(memref, lanesPerToken)) {
      // A row of whole chunks: every lane's own element is in bounds, and
      // a masked-off lane reads it and keeps the pass-through value.
    } else {
      // A masked-off lane loads the chunk's first element (in bounds: a
      // tail chunk starts inside the row), which may be another lane's.
      access = Access::AnyLoad;
      indices.back() = b.create<arith::SelectOp>(
          loc, mask, indices.back(), mapping.lookup(load.getIndices().back()));
    }
    orderSharedAccess(loc, memref, access);
    Value value = b.create<memref::LoadOp>(loc, memref, indices);
    mapping.map(load.getResult(),
                b.create<arith::SelectOp>(
                    loc, mask, value, mapping.lookup(load.getPassThru())));
    return success();
  }
  if (auto gather = dyn_cast<vector::GatherOp>(op)) {
    // Each lane loads its own element, base + index; a masked-off lane
    // loads the base element (in bounds) and keeps the pass-through value.
    if (gather.getVectorType().getRank() != 1)
      return op->emitOpError("only 1-D gathers can be spread over lanes");
    Value memref = mapping.lookup(gather.getBase());
    SmallVector<Value> indices = gatherIndices(
        loc, gather.getIndices(), gather.getIndexVec(), gather.getMask());
    orderSharedAccess(loc, memref, Access::AnyLoad);
    Value value = b.create<memref::LoadOp>(loc, memref, indices);
    mapping.map(gather.getResult(),
                b.create<arith::SelectOp>(
                    loc, mapping.lookup(gather.getMask()), value,
                    mapping.lookup(gather.getPassThru())));
    return success();
  }
  if (auto scatter = dyn_cast<vector::ScatterOp>(op)) {
    // Each lane stores its own element at base + index, if its mask lane
    // is set (the token-lanes layout's rows: lane i's token's row).
    if (scatter.getVectorType().getRank() != 1)
      return op->emitOpError("only 1-D scatters can be spread over lanes");
    Value memref = mapping.lookup(scatter.getBase());
    SmallVector<Value> indices =
        gatherIndices(loc, scatter.getIndices(), scatter.getIndexVec());
    orderSharedAccess(loc, memref, Access::AnyStore);
    auto ifOp = b.create<scf::IfOp>(loc, mapping.lookup(scatter.getMask()),
                                    /*withElseRegion=*/false);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(ifOp.thenBlock());
    b.create<memref::StoreOp>(loc, mapping.lookup(scatter.getValueToStore()),
                              memref, indices);
    return success();
  }
  if (auto store = dyn_cast<vector::StoreOp>(op)) {
    Value memref = mapping.lookup(store.getBase());
    orderSharedAccess(loc, memref,
                      chunkAccess(store.getIndices().back(),
                                  store.getVectorType(), true));
    b.create<memref::StoreOp>(loc, mapping.lookup(store.getValueToStore()),
                              memref, laneIndices(store.getIndices()));
    return success();
  }
  if (auto store = dyn_cast<vector::MaskedStoreOp>(op)) {
    Value memref = mapping.lookup(store.getBase());
    // Any barrier waits before the lane-dependent branch.
    orderSharedAccess(loc, memref,
                      chunkAccess(store.getIndices().back(),
                                  store.getVectorType(), true));
    auto ifOp = b.create<scf::IfOp>(loc, mapping.lookup(store.getMask()),
                                    /*withElseRegion=*/false);
    {
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(ifOp.thenBlock());
      b.create<memref::StoreOp>(loc, mapping.lookup(store.getValueToStore()),
                                memref, laneIndices(store.getIndices()));
    }
    return success();
  }
  if (auto mask = dyn_cast<vector::ConstantMaskOp>(op)) {
    int64_t valid = cast<IntegerAttr>(mask.getMaskDimSizes()[0]).getInt();
    Value bound = b.create<arith::ConstantIndexOp>(loc, valid);
    mapping.map(mask.getResult(),
                b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::ult, lane,
                                        bound));
    return success();
  }
  if (auto mask = dyn_cast<vector::CreateMaskOp>(op)) {
    // A run-time tail (permute and combine's rows of H elements). The
    // bound is signed: a negative one masks every lane.
    if (mask.getNumOperands() != 1)
      return op->emitOpError("only 1-D masks can be distributed over lanes");
    mapping.map(mask.getResult(),
                b.create<arith::CmpIOp>(loc, arith::CmpIPredicate::slt, lane,
                                        mapping.lookup(mask.getOperand(0))));
    return success();
  }
  if (auto extract = dyn_cast<vector::ExtractOp>(op)) {
    // Canonicalization turns reductions over one-lane vectors into
    // extracts: with one lane per token, element 0 is the lane's value.
    VectorType source = extract.getSourceVectorType();
    if (lanesPerToken != 1 || source.getRank() != 1 ||
        source.getNumElements() != 1 || !extract.getDynamicPosition().empty())
      return op->emitOpError("only element 0 of a one-lane vector can be "
                             "extracted on warp lanes");
    mapping.map(extract.getResult(), mapping.lookup(extract.getVector()));
    return success();
  }
  if (auto splat = dyn_cast<vector::SplatOp>(op)) {
    mapping.map(splat.getResult(), mapping.lookup(splat.getInput()));
    return success();
  }
  if (auto broadcast = dyn_cast<vector::BroadcastOp>(op)) {
    if (isa<VectorType>(broadcast.getSourceType()))
      return op->emitOpError("broadcast of a vector cannot be spread over "
                             "warp lanes");
    mapping.map(broadcast.getResult(), mapping.lookup(broadcast.getSource()));
    return success();
  }
  if (auto shuffle = dyn_cast<vector::ShuffleOp>(op)) {
    // A permutation lane -> lane ^ c of one vector (the transposed group
    // reductions, SelectionToLoops.cpp): a warp xor shuffle.
    SmallVector<int64_t> mask;
    for (Attribute index : shuffle.getMask())
      mask.push_back(cast<IntegerAttr>(index).getInt());
    int64_t offset = mask.empty() ? -1 : mask[0];
    bool xorPermutation = int64_t(mask.size()) == lanesPerToken &&
                          offset >= 0 && offset < lanesPerToken;
    for (int64_t i = 0; xorPermutation && i < int64_t(mask.size()); ++i)
      xorPermutation = mask[i] == (i ^ offset);
    Type element = shuffle.getResultVectorType().getElementType();
    if (!xorPermutation || !(element.isF32() || element.isInteger(32)))
      return op->emitOpError("only an xor permutation of one vector of f32 "
                             "or i32 lanes has a warp-shuffle lowering");
    Value source = mapping.lookup(shuffle.getV1());
    mapping.map(shuffle.getResult(), offset == 0
                                         ? source
                                         : shuffleXor(loc, source, offset));
    return success();
  }
  if (auto reduction = dyn_cast<vector::ReductionOp>(op)) {
    std::string kind = vector::stringifyCombiningKind(reduction.getKind());
    if (!llvm::is_contained({"maximumf", "minimumf", "add", "minsi", "maxsi",
                             "or", "and"},
                            StringRef(kind)) ||
        (kind == "add" && reduction.getType().isInteger(1)))
      return op->emitOpError("reduction kind '")
             << kind << "' has no warp-shuffle lowering";
    if (reduction.getAcc())
      return op->emitOpError("reduction with an accumulator has no "
                             "warp-shuffle lowering");
    Type type = reduction.getType();
    if (type.getIntOrFloatBitWidth() > 32)
      return op->emitOpError("reduction over ")
             << type << " has no warp-shuffle lowering (32-bit lanes)";
    mapping.map(reduction.getResult(),
                segmentReduce(loc, mapping.lookup(reduction.getVector()), kind));
    return success();
  }
  return op->emitOpError("cannot be spread over warp lanes");
}

} // namespace mlir::moe::gpu_lowering
