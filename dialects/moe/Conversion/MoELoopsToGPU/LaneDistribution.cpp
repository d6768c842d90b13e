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
  // Back-to-back fenced stores share the barrier between them.
  Block *block = b.getInsertionBlock();
  if (b.getInsertionPoint() != block->begin() &&
      isa<NVVM::SyncWarpOp>(*std::prev(b.getInsertionPoint())))
    return;
  b.create<NVVM::SyncWarpOp>(loc, collectiveMask());
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

  auto store = dyn_cast<memref::StoreOp>(op);
  bool fenced = store && isShared(mapping.lookup(store.getMemRef()));
  if (fenced)
    segmentBarrier(op->getLoc());
  b.clone(*op, mapping);
  if (fenced)
    segmentBarrier(op->getLoc());
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
  if (!uniform)
    ++divergenceDepth;
  auto restore = llvm::make_scope_exit([&] {
    if (!uniform)
      --divergenceDepth;
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
  if (failed(cloneRegion(ifOp.getThenRegion(), newIf.getThenRegion())))
    return failure();
  if (hasElse &&
      failed(cloneRegion(ifOp.getElseRegion(), newIf.getElseRegion())))
    return failure();
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
  // Shuffles move 32-bit words: narrower integers (i1 flags) are widened.
  bool widen = type.isInteger() && type.getIntOrFloatBitWidth() < 32;
  Type i32 = b.getI32Type();
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
    mapping.map(load.getResult(),
                b.create<memref::LoadOp>(loc, mapping.lookup(load.getBase()),
                                         laneIndices(load.getIndices())));
    return success();
  }
  if (auto load = dyn_cast<vector::MaskedLoadOp>(op)) {
    // A masked-off lane loads the chunk's first element (in bounds: a tail
    // chunk starts inside the row) and keeps the pass-through value.
    Value mask = mapping.lookup(load.getMask());
    SmallVector<Value> indices = laneIndices(load.getIndices());
    indices.back() = b.create<arith::SelectOp>(
        loc, mask, indices.back(), mapping.lookup(load.getIndices().back()));
    Value value =
        b.create<memref::LoadOp>(loc, mapping.lookup(load.getBase()), indices);
    mapping.map(load.getResult(),
                b.create<arith::SelectOp>(
                    loc, mask, value, mapping.lookup(load.getPassThru())));
    return success();
  }
  if (auto store = dyn_cast<vector::StoreOp>(op)) {
    Value memref = mapping.lookup(store.getBase());
    if (isShared(memref))
      segmentBarrier(loc);
    b.create<memref::StoreOp>(loc, mapping.lookup(store.getValueToStore()),
                              memref, laneIndices(store.getIndices()));
    if (isShared(memref))
      segmentBarrier(loc);
    return success();
  }
  if (auto store = dyn_cast<vector::MaskedStoreOp>(op)) {
    Value memref = mapping.lookup(store.getBase());
    if (isShared(memref))
      segmentBarrier(loc);
    auto ifOp = b.create<scf::IfOp>(loc, mapping.lookup(store.getMask()),
                                    /*withElseRegion=*/false);
    {
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(ifOp.thenBlock());
      b.create<memref::StoreOp>(loc, mapping.lookup(store.getValueToStore()),
                                memref, laneIndices(store.getIndices()));
    }
    // The barrier waits outside the lane-dependent branch.
    if (isShared(memref))
      segmentBarrier(loc);
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
