//===- LaneDistribution.h - vector lanes to warp lanes ----------*- C++ -*-===//
//
// An nvptx row kernel from convert-moe-to-loops is vectorized over experts
// with vector_width = W, a power of two up to 32. On the GPU those W vector
// lanes are W lanes of a warp, a token's segment (lanes [s*W, s*W + W) for
// segment s; a warp routes 32 / W tokens): segment lane l holds element l
// of every vector value, so vector ops become the same op on scalars, chunk
// loads and stores address e0 + l, a mask is `l < valid`, and a reduction is
// a butterfly of shuffles within the segment whose result every lane of the
// segment holds. Scalar code was computed from reductions, constants and
// loop indices, so it is uniform across the segment and runs on each of its
// lanes unchanged; different segments may branch differently, so a
// warp-collective op (shuffle, redux, warp sync) under token-dependent
// control flow names the segment's lanes as its member mask, as
// cooperative groups' tiled partitions do. Outside such control flow every
// lane of the warp reaches it (the token loop has one trip in every
// segment), so it names the whole warp and shfl.sync's width keeps the
// exchange within the segment.
//
// Stack rows become per-token slices of shared memory. A chunk access whose
// start is a multiple of W touches only the lane's own element (element e
// belongs to lane e mod W); a scalar access (or an unaligned chunk) may
// touch any lane's. A segment barrier goes only where a lane may read or
// overwrite another lane's element since the last barrier (read after
// write, write after read or write), per row and across loops and branches,
// so the fast path of chunk loads and stores runs without fences.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_DIALECT_MOE_CONVERSION_MOELOOPSTOGPU_LANEDISTRIBUTION_H
#define MOEGEN_DIALECT_MOE_CONVERSION_MOELOOPSTOGPU_LANEDISTRIBUTION_H

#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/SmallVector.h"

#include <optional>

namespace mlir::moe::gpu_lowering {

class LaneDistributor {
public:
  /// Clones at `b`'s insertion point. `lane` is the lane within the
  /// token's segment (index, in [0, lanesPerToken)); `memberMask` (i32) has
  /// the bits of the segment's lanes in the warp, `allLanes` (i32) is -1.
  LaneDistributor(OpBuilder &b, IRMapping &mapping, Value lane,
                  Value memberMask, Value allLanes, int64_t lanesPerToken)
      : b(b), mapping(mapping), lane(lane), memberMask(memberMask),
        allLanes(allLanes), lanesPerToken(lanesPerToken) {}

  /// Memrefs (already mapped values) that live in shared memory, disjoint
  /// from one another: accesses to them are ordered by segment barriers.
  llvm::DenseSet<Value> sharedMemrefs;

  /// The source kernel's token range (token_begin, token_end): a loop over
  /// it has one trip in every segment (convert-moe-loops-to-gpu makes it
  /// so), so it keeps the warp converged.
  Value tokenBegin, tokenEnd;

  /// Clones the ops of `block` except those in `skip`, distributing vector
  /// values over lanes; emits an error on the op that cannot be.
  LogicalResult cloneBlock(Block &block,
                           const llvm::DenseSet<Operation *> &skip = {});

private:
  /// The element a scalar access to a 1-D row touches, as far as known:
  /// a constant, or exactly a loop's induction variable (source IR).
  struct Element {
    std::optional<int64_t> constant;
    Value iv;
  };
  /// Elements of a row that scalar accesses touched: all, constants,
  /// induction variables in this trip of their loop, and induction
  /// variables in other trips (carried around the loop: never this trip's
  /// element at the same variable).
  struct ElementSet {
    bool all = false;
    llvm::SmallVector<int64_t, 8> constants;
    llvm::SmallVector<Value, 2> ivs, otherTrips;
    bool empty() const {
      return !all && constants.empty() && ivs.empty() && otherTrips.empty();
    }
    bool mayHold(const Element &element) const;
    /// Whether the two sets may share an element.
    bool mayOverlap(const ElementSet &other) const;
    void add(const Element &element);
    void merge(const ElementSet &other);
    /// The set seen from the next trip of `iv`'s loop.
    void carryAround(Value iv);
    /// The set after `iv`'s loop: its elements are unknown.
    void leave(Value iv);
  };
  /// What the segment's lanes did to one shared row since the last segment
  /// barrier: own = each lane its own elements, any = possibly another's.
  struct RowAccesses {
    bool ownLoad = false, ownStore = false;
    ElementSet anyLoads, anyStores;
    void merge(const RowAccesses &other);
  };
  enum class Access { OwnLoad, OwnStore, AnyLoad, AnyStore };
  /// Per shared row (mapped value); `unknown`: every row may have anything
  /// pending (after code the distributor cannot see into).
  struct PendingAccesses {
    llvm::DenseMap<Value, RowAccesses> rows;
    bool unknown = false;
    void merge(const PendingAccesses &other);
  };

  /// Emits a segment barrier first if `access` to `memref` may conflict
  /// with what another lane did since the last one; records the access.
  /// `element`: what a scalar access touches. Memrefs
  /// outside shared memory are ignored.
  void orderSharedAccess(Location loc, Value memref, Access access,
                         Element element = {});
  static void record(RowAccesses &row, Access access, Element element);
  /// Whether an access in `next` may conflict with one in `done`.
  static bool conflict(const PendingAccesses &done,
                       const PendingAccesses &next);
  /// The element a scalar access to a 1-D row at `indices` touches.
  static Element elementOf(ValueRange indices);
  /// The accesses of loop body `block` and everything nested in it to
  /// shared rows mapped so far (the rows live outside loops and branches);
  /// only `iv`, the loop's own variable, is kept as a known element.
  PendingAccesses summarizeSharedAccesses(Block &block, Value iv);
  /// Whether a chunk access at `index` (source IR) touches only each
  /// lane's own elements: its start is provably a multiple of W.
  bool isChunkAligned(Value index, int depth = 0);
  Access chunkAccess(Value index, Type vectorType, bool store);

  LogicalResult cloneOp(Operation *op);
  LogicalResult cloneFor(Operation *op);
  LogicalResult cloneIf(Operation *op);
  LogicalResult cloneVectorOp(Operation *op);
  LogicalResult cloneElementwise(Operation *op);
  LogicalResult cloneConstant(Operation *op);
  /// The element `lane` of a chunk starting at `indices`' last index.
  SmallVector<Value> laneIndices(ValueRange indices);
  /// The element a lane gathers or scatters: `indices` with the lane's
  /// value of `indexVec` added to the last (0 where `mask`, if given, is
  /// off: the base element, in bounds).
  SmallVector<Value> gatherIndices(Location loc, ValueRange indices,
                                   Value indexVec, Value mask = Value());
  Value segmentReduce(Location loc, Value value, StringRef kind);
  /// The member mask of a collective here: the whole warp in converged
  /// code (every lane runs it, so shfl.sync's width keeps the exchange
  /// within segments and ptxas needs no convergence check), the segment's
  /// lanes under token-dependent control flow.
  Value collectiveMask();
  /// `value` (f32 or i32) of lane `lane ^ offset` of the segment.
  Value shuffleXor(Location loc, Value value, int64_t offset);
  void segmentBarrier(Location loc);
  bool isShared(Value memref) const { return sharedMemrefs.contains(memref); }

  OpBuilder &b;
  IRMapping &mapping;
  Value lane;
  Value memberMask;
  /// The constant -1: every lane of the warp.
  Value allLanes;
  int64_t lanesPerToken;
  /// How many token-dependent branches and loops enclose the insertion
  /// point (0: every lane of the warp gets here together).
  int divergenceDepth = 0;
  /// Shared-row accesses since the last segment barrier on the way here.
  PendingAccesses pending;
};

/// The i32 member mask of the segment of `lanesPerToken` lanes that holds
/// `laneId` (the lane in the warp, index): a constant -1 for whole warps.
Value segmentMemberMask(OpBuilder &b, Location loc, Value laneId,
                        int64_t lanesPerToken);

/// The scalar type a vector<W x T> value has on one lane.
Type laneType(Type type);

} // namespace mlir::moe::gpu_lowering

#endif // MOEGEN_DIALECT_MOE_CONVERSION_MOELOOPSTOGPU_LANEDISTRIBUTION_H
