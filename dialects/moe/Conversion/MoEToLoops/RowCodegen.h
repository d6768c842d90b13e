//===- RowCodegen.h - Emitting one token's row of moe ops -------*- C++ -*-===//
//
// convert-moe-to-loops fuses the row-wise ops of an entry point into one
// loop over tokens. Inside it, each op reads rows of its operands and writes
// a row of its result; this header is the vocabulary the op-family files
// (ScoringToLoops.cpp, SelectionToLoops.cpp, ...) share: where a row lives,
// constants, vector chunks over the expert dimension, loops and the error
// record. The schedule (vector width) comes from `moe.kernel_config`.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_DIALECT_MOE_CONVERSION_MOETOLOOPS_ROWCODEGEN_H
#define MOEGEN_DIALECT_MOE_CONVERSION_MOETOLOOPS_ROWCODEGEN_H

#include "dialects/moe/IR/MoEOps.h"
#include "dialects/moe/IR/MoEAttrs.h"
#include "abi/KernelError.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/Builders.h"
#include "llvm/ADT/DenseMap.h"

#include <optional>

namespace mlir::moe::loops {

using moegen::KernelErrorCode;
using moegen::kKernelErrorWords;

/// Where the current token's row of a tensor value lives: a row of a
/// [T, N] kernel argument (indexed [token, i]) or a whole 1-D buffer
/// (indexed [i]): a per-token stack buffer, or an argument such as the bias
/// that every token shares.
struct RowRef {
  Value memref;
  bool perToken = false;
  /// Valid elements.
  int64_t size = 0;
  /// A stack row padded to whole vector chunks (allocRow): chunks may be
  /// loaded and stored whole. Argument rows never are: their tails are
  /// masked.
  bool padded = false;
  Type elementType() const {
    return cast<MemRefType>(memref.getType()).getElementType();
  }
};

/// Builds the body of one token. Ops insert at `b`'s insertion point;
/// stack buffers go to `allocBuilder` (the function entry).
class RowCodegen {
public:
  RowCodegen(OpBuilder &b, OpBuilder &allocBuilder, Location loc,
             int64_t vectorWidth, Value errorRecord);

  OpBuilder &b;
  OpBuilder &allocBuilder;
  Location loc;
  const int64_t width;
  Value errorRecord;
  /// The token being processed (index); set by the driver per loop.
  Value token;
  /// How moe.topk finds a row's best k (from moe.kernel_config).
  TopKMethod topkMethod = TopKMethod::ArgmaxPasses;
  /// The kernels' target: on nvptx the vector lanes become a warp's lanes
  /// (convert-moe-loops-to-gpu), and the error record is shared by warps
  /// that run in any order.
  KernelTarget target = KernelTarget::Cpu;

  /// The groups a moe.group_mask kept, for a top-k of its masked keys that
  /// reads the kept groups' chunks straight from the keys instead of a
  /// masked row (SelectionToLoops.cpp). Keyed by the masked tensor.
  struct KeptGroups {
    RowRef keys;
    /// i32 row of the `keep` kept groups, in the order they were picked.
    RowRef groups;
    int64_t perGroup = 0;
    int64_t keep = 0;
  };
  llvm::DenseMap<Value, KeptGroups> keptGroups;

private:
  std::optional<RowRef> reusedRow(Type elementType, int64_t size, bool padded);
  SmallVector<RowRef> stackRows;
  size_t reuseNext = 0, reuseEnd = 0;

public:

  /// Each moe.expert_choice's per-expert thresholds, found before the token
  /// loop that lowers it: in the i32 buffer `words`, from `keys` the E
  /// c-th largest keys (expertChoiceOrder) and from `tokens` the last token
  /// taken with that key.
  struct ExpertChoiceThresholds {
    Value words;
    int64_t keys = 0, tokens = 0;
  };
  llvm::DenseMap<Operation *, ExpertChoiceThresholds> expertChoiceThresholds;

  /// An elementwise moe.score whose only readers are moe.gathers (hash
  /// and forced selection) is not scored row-wide: its logits are
  /// validated, and each gather scores the k logits it picks
  /// (ScoringToLoops.cpp, WeightsToLoops.cpp). The scores tensor -> its op.
  llvm::DenseMap<Value, ScoreOp> scoresByNeed;

  //--- Values of the entry: rows of tensors and scalars (index args) -----//
  llvm::DenseMap<Value, RowRef> rows;
  llvm::DenseMap<Value, Value> scalars;
  RowRef rowOf(Value tensor) const { return rows.lookup(tensor); }
  /// A stack row of `size` elements padded to whole vector chunks, the
  /// padding zeroed; allocated at the function entry.
  RowRef allocRow(Type elementType, int64_t size);
  /// A stack row that is only ever indexed by scalars: no padding, and any
  /// element type (i1 included, which chunks of memory do not hold).
  RowRef allocScalarRow(Type elementType, int64_t size);
  /// A new stack row for `result` ([T, N] tensor), registered in `rows`.
  RowRef newRow(Value result);
  /// The stack rows allocated so far, in order.
  size_t numStackRows() const { return stackRows.size(); }
  /// The allocations that follow take the stack rows [begin, end) in order,
  /// as long as they ask for the same types and sizes: a kernel that emits
  /// the same ops again (in another token loop, once the first is done)
  /// reuses their rows instead of growing the token's rows.
  void reuseRowsFrom(size_t begin, size_t end);

  //--- Constants and types ----------------------------------------------//
  Value index(int64_t v);
  Value i32(int64_t v);
  Value i64(int64_t v);
  Value f32(double v);
  Value boolean(bool v);
  VectorType vectorOf(Type element) const;
  Value splat(Value scalar);

  //--- Rows --------------------------------------------------------------//
  /// Indices of element `i` of `row` for the current token.
  SmallVector<Value> indices(const RowRef &row, Value i);
  Value load(const RowRef &row, Value i);
  /// load() widened to f32 when the row holds bf16/f16.
  Value loadF32(const RowRef &row, Value i);
  void store(Value value, const RowRef &row, Value i);
  /// `width` lanes at e0 widened to f32 for float rows; lanes at or past
  /// `valid` read `padding` (never memory) for argument rows and whatever
  /// the padding of a stack row holds.
  Value loadChunk(const RowRef &row, Value e0, int64_t valid, Value padding);
  /// Stores a chunk; lanes at or past `valid` are written only to the
  /// padding of stack rows.
  void storeChunk(Value vector, const RowRef &row, Value e0, int64_t valid);
  /// Lane ids e0, e0+1, ... as vector<width x i32>.
  Value laneIds(Value e0);

  //--- Control flow -------------------------------------------------------//
  using ChunkBody =
      function_ref<SmallVector<Value>(Value e0, int64_t valid, ValueRange)>;
  /// Runs `body` over vector chunks covering [0, n): a loop over the full
  /// chunks, `unroll` of them a trip, then the chunks left and one
  /// statically sized tail chunk. Returns the final iteration values.
  SmallVector<Value> forEachChunk(int64_t n, ValueRange init, ChunkBody body,
                                  int64_t unroll = 1);
  using LoopBody = function_ref<SmallVector<Value>(Value iv, ValueRange)>;
  /// scf.for over [lb, ub) with step 1 (index bounds).
  SmallVector<Value> forLoop(Value lb, Value ub, ValueRange init,
                             LoopBody body);
  SmallVector<Value> forLoop(int64_t lb, int64_t ub, ValueRange init,
                             LoopBody body) {
    return forLoop(index(lb), index(ub), init, body);
  }
  /// scf.if without results.
  void ifThen(Value condition, function_ref<void()> thenBody);

  //--- Validation -------------------------------------------------------//
  /// Stores (code, token, index0, index1, value) into the error record
  /// unless it already holds an earlier violation (semantics.md §2: by
  /// category, then token); operands are i64 or index. On nvptx, lane 0
  /// updates the record under the spin lock of its sixth word; with
  /// `eachThread`, every thread that calls it does (its lanes report
  /// different violations), and within a token the lower index0 wins.
  void recordError(KernelErrorCode code, Value index0, Value index1,
                   Value value, bool eachThread = false);
  Value toI64(Value v);
  /// `id` (i32/i64) if 0 <= id < bound, else 0: the value a kernel goes on
  /// with after reporting a bad id, so that it never addresses memory.
  Value safeId(Value id, int64_t bound);
  /// 0 <= value < bound, with value and bound of the same integer type.
  Value inRange(Value value, Value bound);
};

/// Lowers one row-wise op at the codegen's insertion point (inside the
/// token loop). One function per op family, in the file named after it.
LogicalResult lowerScoring(ScoreOp op, RowCodegen &cg);
LogicalResult lowerSharedGate(SharedGateOp op, RowCodegen &cg);
LogicalResult lowerSelection(Operation *op, RowCodegen &cg);
LogicalResult lowerValidatedSelection(Operation *op, RowCodegen &cg);
LogicalResult lowerWeights(Operation *op, RowCodegen &cg);
LogicalResult lowerCapture(CaptureOp op, RowCodegen &cg);

/// An entry point that selects by expert choice is one kernel over all
/// tokens (ExpertChoiceToLoops.cpp): token loops in which `emitBefore`
/// emits the entry's ops before the selection for cg.token, the
/// per-expert thresholds between them, then one token loop in which
/// `emitAll` emits every op (moe.expert_choice by lowerExpertChoice) and
/// copies the results. The host form keeps the keys in a [T, E] heap
/// buffer; the nvptx form is a cooperative grid whose segments of
/// `lanesPerToken` lanes stride over the tokens, `tokensPerBlock` a block,
/// and count the radix select's digits in `scratch`
/// (abi::expertChoiceScratchWords(E) words) between grid barriers.
using EmitTokenOps = function_ref<LogicalResult()>;
LogicalResult lowerExpertChoiceHostKernel(ExpertChoiceOp op, RowCodegen &cg,
                                          Value numTokens,
                                          EmitTokenOps emitBefore,
                                          EmitTokenOps emitAll);
LogicalResult lowerExpertChoiceGridKernel(ExpertChoiceOp op, RowCodegen &cg,
                                          Value numTokens, Value scratch,
                                          int64_t tokensPerBlock,
                                          int64_t lanesPerToken,
                                          EmitTokenOps emitBefore,
                                          EmitTokenOps emitAll);
/// The selection for cg.token, from cg.expertChoiceThresholds.
LogicalResult lowerExpertChoice(ExpertChoiceOp op, RowCodegen &cg);
/// An f32 key as an i32 whose unsigned order is the keys' order, -0 = +0.
Value expertChoiceOrder(RowCodegen &cg, Value key);

/// A chunk of logits divided by the temperature and soft-capped (when the
/// op has them; -inf stays -inf), and the elementwise scorings of a chunk
/// (sigmoid, sqrtsoftplus, identity), as ScoringToLoops.cpp computes them
/// for a row: for layouts that hold other things in the lanes.
Value transformLogits(RowCodegen &cg, std::optional<APFloat> temperature,
                      std::optional<APFloat> softcap, Value chunk);
Value scoreElementwise(RowCodegen &cg, ScoringKind kind, Value chunk);
/// The scores of a cg.scoresByNeed entry's `score` at some experts, their
/// logits in one chunk, transformed and scored; lane j holds pick j's
/// score. The host form takes the picks as index scalars (at most
/// cg.width) and loads each; the GPU form a chunk of i32 ids in [0, E), of
/// which the first `valid` lanes count, each lane loading its own
/// (vector.gather).
Value scoreExperts(RowCodegen &cg, ScoreOp score, ArrayRef<Value> ids);
Value scoreExperts(RowCodegen &cg, ScoreOp score, Value ids, int64_t valid);
/// The GPU's normalization by `denominator` (a scalar or a chunk): a
/// correctly rounded division is a dozen instructions and a slow path
/// there, so one reciprocal and k products instead (1 ulp more). A
/// denominator below 2^-64 (an epsilon of 0 and tiny weights) is scaled by
/// 2^64 first, and each weight with it, so that the reciprocal stays
/// finite; 0, inf and NaN give what the division gives. Returns (scale,
/// reciprocal): weight * scale * reciprocal.
std::pair<Value, Value> gpuNormalizer(RowCodegen &cg, Value denominator);

/// The token-lanes layout (`topk = token_lanes`, TokenLanesToLoops.cpp;
/// which entries admit it: hasTokenLanesForm): the cg.width tokens
/// [first, first + width) routed with tokens across the lanes, each
/// untied result written to its output argument (`resultOutputs`); a
/// group holding an invalid input runs `perToken` for each of its tokens.
LogicalResult
lowerTokenLanesGroup(Block &body, RowCodegen &cg, Value first,
                     ArrayRef<std::pair<Value, Value>> resultOutputs,
                     function_ref<LogicalResult(Value token)> perToken);

/// Lowers a dispatch entry's moe.dispatch over all tokens: `ids` ([T, k])
/// and `outputs` (counts, offsets, sorted_slots, slot_positions) are the
/// kernel's memref arguments. Sets `cg.token` as it goes.
LogicalResult lowerDispatch(DispatchOp op, RowCodegen &cg, Value ids,
                            ValueRange outputs);
/// A dispatch's capacity per expert, C = ceil(factor * T * k / E) in f64,
/// at most T * k, as i32 (semantics.md §10, "Capacity").
Value dispatchCapacity(RowCodegen &cg, Value numTokens, int64_t k,
                       int64_t numExperts, double factor);
/// The nvptx form: a parallel stable counting sort over the whole grid of a
/// cooperative launch, with `scratch` (abi::dispatchScratchWords(E) i32
/// words) for its histograms and grid barrier (ParallelDispatchToLoops.cpp).
LogicalResult lowerParallelDispatch(DispatchOp op, RowCodegen &cg, Value ids,
                                    ValueRange outputs, Value scratch);
/// The same sort after a route's token loop (a fused dispatch,
/// moe-fuse-dispatch): the block that stores its ids last runs it on its
/// `warpsPerBlock` warps, its counters in shared memory
/// (abi::fusedDispatchSharedBytes) or `scratch`.
LogicalResult lowerFusedDispatch(DispatchOp op, RowCodegen &cg, Value ids,
                                 ValueRange outputs, Value scratch,
                                 int64_t warpsPerBlock);

/// Every thread of a cooperative grid waits here until all have arrived;
/// what they wrote before is visible to all after. Thread 0 of each block
/// arrives for its block on the counter and generation in words 0 and 1 of
/// `scratch` (i32), which it leaves as it found them for the next launch.
/// A grid of one block takes the block barrier alone.
void emitGridBarrier(RowCodegen &cg, Value scratch);

/// The bias update over all experts (UpdateBiasToLoops.cpp): `bias`,
/// `counts` and `updated` are the kernel's [E] memref arguments.
LogicalResult lowerUpdateBias(UpdateBiasOp op, RowCodegen &cg, Value bias,
                              Value counts, Value updated);

/// Permute and combine, one token per call (PermuteToLoops.cpp): the
/// values are the kernel's memref arguments. Permute fills permuted rows
/// [token * k, token * k + k) from `hidden` by `sortedSlots`; combine
/// writes row `token` of `combined`.
LogicalResult lowerPermute(PermuteOp op, RowCodegen &cg, Value hidden,
                           Value sortedSlots, Value permuted);
LogicalResult lowerCombine(CombineOp op, RowCodegen &cg, Value expertOutput,
                           Value slotPositions, Value weights, Value combined);

} // namespace mlir::moe::loops

#endif // MOEGEN_DIALECT_MOE_CONVERSION_MOETOLOOPS_ROWCODEGEN_H
