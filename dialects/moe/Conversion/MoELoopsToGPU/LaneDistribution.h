//===- LaneDistribution.h - vector lanes to warp lanes ----------*- C++ -*-===//
//
// An nvptx row kernel from convert-moe-to-loops is vectorized over experts
// with vector_width = 32. On the GPU those 32 vector lanes are the 32 lanes
// of a warp: lane l holds element l of every vector value, so vector ops
// become the same op on scalars, chunk loads and stores address e0 + l, a
// mask is `l < valid`, and a reduction is a butterfly of shuffles whose
// result every lane holds. Scalar code was computed from reductions,
// constants and loop indices, so it is uniform across the warp and runs on
// every lane unchanged.
//
// Stack rows become per-warp slices of shared memory, written by chunks
// (one element per lane) and read by scalar index (any lane's element), so
// every store to them is fenced by warp barriers on both sides.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_DIALECT_MOE_CONVERSION_MOELOOPSTOGPU_LANEDISTRIBUTION_H
#define MOEGEN_DIALECT_MOE_CONVERSION_MOELOOPSTOGPU_LANEDISTRIBUTION_H

#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "llvm/ADT/DenseSet.h"

namespace mlir::moe::gpu_lowering {

class LaneDistributor {
public:
  /// Clones at `b`'s insertion point; `lane` is the lane id (index).
  LaneDistributor(OpBuilder &b, IRMapping &mapping, Value lane,
                  int64_t warpSize)
      : b(b), mapping(mapping), lane(lane), warpSize(warpSize) {}

  /// Memrefs (already mapped values) that live in shared memory: stores to
  /// them are fenced by warp barriers.
  llvm::DenseSet<Value> sharedMemrefs;

  /// Clones the ops of `block` except those in `skip`, distributing vector
  /// values over lanes; emits an error on the op that cannot be.
  LogicalResult cloneBlock(Block &block,
                           const llvm::DenseSet<Operation *> &skip = {});

private:
  LogicalResult cloneOp(Operation *op);
  LogicalResult cloneFor(Operation *op);
  LogicalResult cloneIf(Operation *op);
  LogicalResult cloneVectorOp(Operation *op);
  LogicalResult cloneElementwise(Operation *op);
  LogicalResult cloneConstant(Operation *op);
  /// The element `lane` of a chunk starting at `indices`' last index.
  SmallVector<Value> laneIndices(ValueRange indices);
  Value warpReduce(Location loc, Value value, StringRef kind);
  void warpBarrier(Location loc);
  bool isShared(Value memref) const { return sharedMemrefs.contains(memref); }

  OpBuilder &b;
  IRMapping &mapping;
  Value lane;
  int64_t warpSize;
};

/// The scalar type a vector<warpSize x T> value has on one lane.
Type laneType(Type type);

} // namespace mlir::moe::gpu_lowering

#endif // MOEGEN_DIALECT_MOE_CONVERSION_MOELOOPSTOGPU_LANEDISTRIBUTION_H
