//===- EpPlan.h - What the host and device EP operations share ---*- C++
//-*-===//
//
// The checks and the bookkeeping of dispatch and combine, apart from where
// the rows live: ExpertParallel.cpp moves host rows by these plans,
// DeviceExpertParallel.cpp device rows. Internal to runtime/ep.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_RUNTIME_EP_EPPLAN_H
#define MOEGEN_RUNTIME_EP_EPPLAN_H

#include "runtime/ep/ExpertParallel.h"

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace moegen::rt::ep::plan {

/// Expert ids [tokens, k] named `name`: k in [1, numExperts], the shape,
/// ids in [0, numExperts) (or -1 with `unusedSlots`), distinct within a
/// token. Empty if fine, else the reason.
std::string checkIds(std::span<const int32_t> ids, int64_t tokens, int64_t k,
                     int64_t numExperts, const std::string &name,
                     bool unusedSlots);

/// Empty if every expert's rank is in [0, ranks) and the hidden size in
/// [1, 2^40], else the reason.
std::string checkPlacementAndHidden(const ExpertPlacement &placement, int ranks,
                                    int64_t hiddenSize);

std::size_t rowBytes(RowType type, int64_t hiddenSize);

/// A fingerprint of the placement: ranks must hold the same map.
int64_t placementHash(const ExpertPlacement &placement);

/// What dispatch's ranks agree on (and, per rank, its token count).
std::vector<SignatureEntry> dispatchSignature(RowType rowType,
                                              int64_t hiddenSize,
                                              int64_t tokens, int64_t k,
                                              const ExpertPlacement &placement,
                                              bool unusedSlots);

/// What every rank sent here, back to back in rank order: rank r's part
/// is data[offsets[r], offsets[r + 1]).
template <typename T> struct Received {
  std::vector<T> data;
  std::vector<std::size_t> offsets;
  std::size_t count(std::size_t rank) const {
    return offsets[rank + 1] - offsets[rank];
  }
  const T *from(std::size_t rank) const { return data.data() + offsets[rank]; }
};

/// Exchanges per-rank counts: counts[r] goes to rank r; returns what each
/// rank sent here.
std::vector<int64_t> exchangeCounts(Communicator &comm,
                                    const std::vector<int64_t> &counts);

/// Exchanges per-rank host vectors of trivially copyable T: sent[r] goes
/// to rank r. Counts travel first.
template <typename T>
Received<T> exchangeVectors(Communicator &comm,
                            const std::vector<std::vector<T>> &sent) {
  const std::size_t ranks = sent.size();
  std::vector<int64_t> counts(ranks);
  for (std::size_t r = 0; r < ranks; ++r)
    counts[r] = static_cast<int64_t>(sent[r].size());
  std::vector<int64_t> incoming = exchangeCounts(comm, counts);
  std::vector<T> packed;
  std::size_t sentTotal = 0;
  for (const std::vector<T> &part : sent)
    sentTotal += part.size();
  packed.reserve(sentTotal);
  Received<T> received;
  received.offsets.assign(ranks + 1, 0);
  std::vector<std::size_t> sendBytes(ranks), sendAt(ranks), recvBytes(ranks),
      recvAt(ranks);
  for (std::size_t r = 0; r < ranks; ++r) {
    sendAt[r] = packed.size() * sizeof(T);
    sendBytes[r] = sent[r].size() * sizeof(T);
    packed.insert(packed.end(), sent[r].begin(), sent[r].end());
    recvAt[r] = received.offsets[r] * sizeof(T);
    recvBytes[r] = static_cast<std::size_t>(incoming[r]) * sizeof(T);
    received.offsets[r + 1] =
        received.offsets[r] + static_cast<std::size_t>(incoming[r]);
  }
  received.data.resize(received.offsets[ranks]);
  comm.allToAllVHost(packed.data(), sendBytes, sendAt, received.data.data(),
                     recvBytes, recvAt);
  return received;
}

/// Dispatch's sends: each token once per destination rank, in token order.
struct Sends {
  /// Per destination rank: the local tokens sent there, ascending.
  std::vector<std::vector<int64_t>> tokensTo;
  /// Per destination rank: k entries per sent token, the slot's local
  /// expert index there or -1 where the slot's expert is elsewhere.
  std::vector<std::vector<int32_t>> slotsTo;
  /// Per local token and slot: the rank of its expert, -1 for unused.
  std::vector<int32_t> slotRank;
  /// How many experts `rank` (this one) holds.
  int64_t localExperts = 0;
};
Sends planSends(std::span<const int32_t> ids, int64_t tokens, int64_t k,
                const ExpertPlacement &placement, int ranks, int rank);

/// Where the received rows go: grouped by local expert, expert e's rows
/// in (source rank, token, slot) order.
struct Grouping {
  std::vector<int64_t> expertOffsets; // [localExperts + 1]
  /// Per grouped row: the received row it copies (rank order, as
  /// Received lays them out).
  std::vector<int64_t> sourceRow;
  /// Per source rank: the grouped rows whose outputs go back to it, in
  /// the order it expects them.
  std::vector<std::vector<int64_t>> returnRows;
};
/// Throws Error(Communication) when a peer's slots name a local expert
/// this rank does not hold or do not match its rows (`rowsFrom[r]` rows
/// from rank r).
Grouping groupReceived(const Received<int32_t> &slotsFrom,
                       const std::vector<std::size_t> &rowsFrom, int64_t k,
                       int64_t localExperts);

/// Dispatch's handle for combine, from its plan (sends and grouping are
/// moved from).
DispatchHandle makeHandle(int64_t tokens, int64_t k, int64_t hiddenSize,
                          RowType rowType, Sends &sends, Grouping &grouping);

/// combine's local checks of its handle and sizes; empty if fine.
std::string checkCombine(const Communicator &comm, const DispatchHandle &handle,
                         std::size_t expertOutputBytes, std::size_t weights);

/// Per rank: the bytes its expert outputs sent back here must have (its
/// slots of this rank's tokens, one row each).
std::vector<std::size_t> expectedReturnBytes(const DispatchHandle &handle,
                                             int ranks);
/// Throws Error(Communication) unless rank r sent back expected[r] bytes.
void checkReturned(const std::vector<std::size_t> &expected,
                   const std::vector<std::size_t> &got);

} // namespace moegen::rt::ep::plan

#endif // MOEGEN_RUNTIME_EP_EPPLAN_H
