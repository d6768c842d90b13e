//===- ExpertParallel.h - EP operations over a communicator -----*- C++ -*-===//
//
// The operations an MoE layer runs across its expert-parallel group. Each
// checks its arguments on its own rank, then agrees with the other ranks
// before any data moves: every rank's verdict and its signature (the sizes
// all ranks must share) are all-gathered, so that one rank's bad argument or
// a mismatch between ranks is reported on every rank, with the same message
// naming the rank, the argument, what was expected and what came, instead
// of a hang or an out-of-bounds exchange. docs/expert-parallelism.md.
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
/// [1, numExperts], ids in [0, numExperts), distinct within a token, the
/// communicator's buffers on the host; k and numExperts equal on all ranks.
std::vector<int32_t> allGatherForcedIds(Communicator &comm,
                                        std::span<const int32_t> ids,
                                        int64_t tokens, int64_t k,
                                        int64_t numExperts);

} // namespace moegen::rt::ep

#endif // MOEGEN_RUNTIME_EP_EXPERTPARALLEL_H
