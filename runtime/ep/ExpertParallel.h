//===- ExpertParallel.h - EP operations over a communicator -----*- C++ -*-===//
//
// The operations an MoE layer runs across its expert-parallel group. Each
// checks its arguments on its own rank, then agrees with the other ranks
// before any data moves: every rank's verdict and its signature (the sizes
// all ranks must share) are all-gathered, so that one rank's bad argument or
// a mismatch between ranks is reported on every rank, with the same message
// naming the rank, the argument, what was expected and what came, instead
// of a hang or an out-of-bounds exchange. The operations take host buffers
// on every communicator: a device one (NCCL) stages them through device
// memory (Communicator::allToAllVHost). docs/expert-parallelism.md.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_RUNTIME_EP_EXPERTPARALLEL_H
#define MOEGEN_RUNTIME_EP_EXPERTPARALLEL_H

#include "runtime/ep/Communicator.h"

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace moegen::rt::ep {

/// A named size every rank must agree on, or (sameOnAllRanks = false) a
/// per-rank size that is only gathered.
struct SignatureEntry {
  std::string_view name;
  int64_t value;
  bool sameOnAllRanks = true;
};

/// Gathers every rank's verdict (`localError`, empty when its arguments
/// are fine) and signature. Throws rt::Error(InvalidArgument) on every
/// rank, with one message, when a rank failed its own check ("OPERATION:
/// rank R: ...") or ranks disagree ("OPERATION: rank R: NAME = got, rank 0
/// has expected"). Returns, per entry, every rank's value (rank order).
/// Every rank must pass the same entry names in the same order (the same
/// call site); at most 8 entries.
std::vector<std::vector<int64_t>>
agreeOnArguments(Communicator &comm, std::string_view operation,
                 std::span<const SignatureEntry> signature,
                 const std::string &localError);

/// Router replay under EP: every rank's forced expert ids ([tokens, k],
/// int32, rank-local token counts may differ, 0 included), concatenated in
/// rank order into [sum of tokens, k]. Checked before any exchange: k in
/// [1, numExperts], ids in [0, numExperts), distinct within a token; k and
/// numExperts equal on all ranks. With `unusedSlots` (a top-p router's
/// ids, RouterFacts::unusedSlots; agreed across ranks too) an id may be -1,
/// an unused slot, neither range-checked nor compared.
std::vector<int32_t> allGatherForcedIds(Communicator &comm,
                                        std::span<const int32_t> ids,
                                        int64_t tokens, int64_t k,
                                        int64_t numExperts,
                                        bool unusedSlots = false);

/// Which rank holds each expert.
struct ExpertPlacement {
  /// rankOfExpert[e]: the rank holding expert e.
  std::vector<int32_t> rankOfExpert;

  /// Experts in equal contiguous blocks: rank r holds [r E/n, (r+1) E/n).
  /// Throws InvalidArgument unless ranks divides numExperts.
  static ExpertPlacement contiguous(int64_t numExperts, int ranks);
  int64_t numExperts() const {
    return static_cast<int64_t>(rankOfExpert.size());
  }
  /// The experts `rank` holds, ascending: its local experts 0, 1, ...
  std::vector<int32_t> expertsOf(int rank) const;
};

/// The element type of hidden rows.
enum class RowType { F32, BF16 };

/// What combine needs to send expert outputs back: filled by dispatch.
struct DispatchHandle {
  int64_t tokens = 0, k = 0, hiddenSize = 0;
  RowType rowType = RowType::F32;
  /// Per source rank: the grouped rows (dispatch's output) whose outputs go
  /// back to it, in the order it expects them (its tokens in order, then
  /// top-k slot order).
  std::vector<std::vector<int64_t>> returnRows;
  /// Per local token and top-k slot: the rank holding that expert, -1 for
  /// an unused slot.
  std::vector<int32_t> slotRank;
  int64_t groupedRows = 0;
};

struct Dispatched {
  /// The received rows grouped by local expert: expertOffsets[e] to
  /// expertOffsets[e + 1] are local expert e's rows, [rows, hiddenSize].
  std::vector<std::byte> rows;
  std::vector<int64_t> expertOffsets;
  DispatchHandle handle;
};

/// EP dispatch: sends each token's hidden row ([tokens, hiddenSize] of
/// rowType) once to every rank holding one of its experts (ids: [tokens,
/// k] int32), and returns the rows this rank received, grouped by local
/// expert (a row whose token picked two local experts appears under
/// both). Per-rank token counts may differ; 0 is fine. Checked before any
/// exchange: ids in range and distinct per token, shapes; agreed across
/// ranks: k, the expert count, hiddenSize, rowType, the placement and
/// `unusedSlots`. With `unusedSlots` (a top-p router) a slot whose id is
/// -1 goes nowhere and adds no term in combine.
Dispatched dispatch(Communicator &comm, std::span<const std::byte> hidden,
                    RowType rowType, int64_t hiddenSize,
                    std::span<const int32_t> ids, int64_t tokens, int64_t k,
                    const ExpertPlacement &placement,
                    bool unusedSlots = false);

/// EP combine: sends the expert outputs ([groupedRows, hiddenSize] of the
/// handle's rowType, dispatch's layout) back to the tokens' ranks and
/// returns, per local token in order, the sum over its top-k slots in slot
/// order of weight * output, accumulated in fp32 and stored in rowType
/// ([tokens, hiddenSize]): the same sum a single rank computes.
std::vector<std::byte> combine(Communicator &comm,
                               const DispatchHandle &handle,
                               std::span<const std::byte> expertOutputs,
                               std::span<const float> weights);

} // namespace moegen::rt::ep

#endif // MOEGEN_RUNTIME_EP_EXPERTPARALLEL_H
