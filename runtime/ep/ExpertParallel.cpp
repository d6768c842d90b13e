//===- ExpertParallel.cpp - EP operations over a communicator -------------===//

#include "runtime/ep/ExpertParallel.h"
#include "runtime/ep/EpPlan.h"

#include "runtime/Error.h"
#include "runtime/npy/HalfFloat.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

namespace moegen::rt::ep {
namespace {

constexpr std::size_t kMaxEntries = 8;

/// What each rank contributes to an agreement: its signature and its
/// verdict, fixed-size so that one all-gather carries it.
struct AgreementRecord {
  int64_t values[kMaxEntries];
  uint32_t failed;
  char error[244]; // NUL-terminated, truncated
};
static_assert(std::is_trivially_copyable_v<AgreementRecord>);

std::string prefix(std::string_view operation, int rank) {
  return std::string(operation) + ": rank " + std::to_string(rank) + ": ";
}

} // namespace

std::vector<std::vector<int64_t>>
agreeOnArguments(Communicator &comm, std::string_view operation,
                 std::span<const SignatureEntry> signature,
                 const std::string &localError) {
  if (signature.size() > kMaxEntries)
    throw Error(Error::Kind::InvalidArgument,
                std::string(operation) + ": more than 8 signature entries");
  AgreementRecord mine{};
  for (std::size_t i = 0; i < signature.size(); ++i)
    mine.values[i] = signature[i].value;
  mine.failed = localError.empty() ? 0 : 1;
  std::strncpy(mine.error, localError.c_str(), sizeof(mine.error) - 1);

  const int ranks = comm.size();
  std::vector<AgreementRecord> all(static_cast<std::size_t>(ranks));
  comm.allGatherHost(&mine, sizeof(mine), all.data());

  // Every rank reads the same records, so every rank throws the same line.
  for (int r = 0; r < ranks; ++r)
    if (all[r].failed) {
      std::string error(all[r].error,
                        strnlen(all[r].error, sizeof(all[r].error)));
      throw Error(Error::Kind::InvalidArgument, prefix(operation, r) + error);
    }
  for (std::size_t i = 0; i < signature.size(); ++i) {
    if (!signature[i].sameOnAllRanks)
      continue;
    for (int r = 1; r < ranks; ++r)
      if (all[r].values[i] != all[0].values[i])
        throw Error(Error::Kind::InvalidArgument,
                    prefix(operation, r) + std::string(signature[i].name) +
                        " = " + std::to_string(all[r].values[i]) +
                        ", rank 0 has " + std::to_string(all[0].values[i]));
  }
  std::vector<std::vector<int64_t>> values(signature.size());
  for (std::size_t i = 0; i < signature.size(); ++i)
    for (int r = 0; r < ranks; ++r)
      values[i].push_back(all[r].values[i]);
  return values;
}

std::vector<int32_t> allGatherForcedIds(Communicator &comm,
                                        std::span<const int32_t> ids,
                                        int64_t tokens, int64_t k,
                                        int64_t numExperts, bool unusedSlots) {
  const SignatureEntry signature[] = {{"k", k},
                                      {"experts", numExperts},
                                      {"unused_slots", unusedSlots},
                                      {"tokens", tokens, false}};
  std::vector<std::vector<int64_t>> agreed = agreeOnArguments(
      comm, "all_gather_forced_ids", signature,
      plan::checkIds(ids, tokens, k, numExperts, "forced_ids", unusedSlots));
  const std::vector<int64_t> &rankTokens = agreed[3];

  const std::size_t ranks = rankTokens.size();
  const std::size_t rowBytes = static_cast<std::size_t>(k) * sizeof(int32_t);
  std::vector<std::size_t> sendBytes(ranks, ids.size() * sizeof(int32_t));
  std::vector<std::size_t> sendOffsets(ranks, 0);
  std::vector<std::size_t> recvBytes(ranks), recvOffsets(ranks);
  std::size_t total = 0;
  for (std::size_t r = 0; r < ranks; ++r) {
    recvOffsets[r] = total;
    recvBytes[r] = static_cast<std::size_t>(rankTokens[r]) * rowBytes;
    total += recvBytes[r];
  }
  std::vector<int32_t> gathered(total / sizeof(int32_t));
  comm.allToAllVHost(ids.data(), sendBytes, sendOffsets, gathered.data(),
                     recvBytes, recvOffsets);
  return gathered;
}

} // namespace moegen::rt::ep

namespace moegen::rt::ep {

ExpertPlacement ExpertPlacement::contiguous(int64_t numExperts, int ranks) {
  if (ranks < 1 || numExperts < 1 || numExperts % ranks != 0)
    throw Error(Error::Kind::InvalidArgument,
                "contiguous expert placement: " + std::to_string(numExperts) +
                    " experts do not divide into " + std::to_string(ranks) +
                    " ranks");
  ExpertPlacement placement;
  const int64_t perRank = numExperts / ranks;
  for (int64_t e = 0; e < numExperts; ++e)
    placement.rankOfExpert.push_back(static_cast<int32_t>(e / perRank));
  return placement;
}

std::vector<int32_t> ExpertPlacement::expertsOf(int rank) const {
  std::vector<int32_t> experts;
  for (std::size_t e = 0; e < rankOfExpert.size(); ++e)
    if (rankOfExpert[e] == rank)
      experts.push_back(static_cast<int32_t>(e));
  return experts;
}

} // namespace moegen::rt::ep

namespace moegen::rt::ep::plan {

/// Expert ids [tokens, k] named `name`: k in [1, numExperts], the shape,
/// ids in [0, numExperts), distinct within a token. Empty if fine.
std::string checkIds(std::span<const int32_t> ids, int64_t tokens, int64_t k,
                     int64_t numExperts, const std::string &name,
                     bool unusedSlots) {
  if (numExperts < 1)
    return "the expert count must be at least 1, got " +
           std::to_string(numExperts);
  if (k < 1 || k > numExperts)
    return "k must be in [1, " + std::to_string(numExperts) + "], got " +
           std::to_string(k);
  if (tokens < 0 || tokens > std::numeric_limits<int64_t>::max() / k)
    return name + ": the token count must be in [0, 2^63 / k), got " +
           std::to_string(tokens);
  if (static_cast<int64_t>(ids.size()) != tokens * k)
    return name + ": shape [" + std::to_string(tokens) + ", " +
           std::to_string(k) + "] needs " + std::to_string(tokens * k) +
           " ids, got " + std::to_string(ids.size());
  for (int64_t t = 0; t < tokens; ++t) {
    const int32_t *row = ids.data() + t * k;
    for (int64_t j = 0; j < k; ++j) {
      if (unusedSlots && row[j] == -1)
        continue; // an unused slot of a top-p router
      if (row[j] < 0 || row[j] >= numExperts)
        return name + "[" + std::to_string(t) + "][" + std::to_string(j) +
               "] = " + std::to_string(row[j]) + " is outside [0, " +
               std::to_string(numExperts) + ")";
      for (int64_t i = 0; i < j; ++i)
        if (row[i] == row[j])
          return name + "[" + std::to_string(t) + "] repeats expert " +
                 std::to_string(row[j]) + " (at " + std::to_string(i) +
                 " and " + std::to_string(j) + ")";
    }
  }
  return "";
}

std::string checkPlacementAndHidden(const ExpertPlacement &placement,
                                    int ranks, int64_t hiddenSize) {
  const int64_t experts = placement.numExperts();
  for (int64_t e = 0; e < experts; ++e)
    if (placement.rankOfExpert[e] < 0 || placement.rankOfExpert[e] >= ranks)
      return "expert placement: expert " + std::to_string(e) +
             " is on rank " + std::to_string(placement.rankOfExpert[e]) +
             ", outside [0, " + std::to_string(ranks) + ")";
  if (hiddenSize < 1 || hiddenSize > (int64_t(1) << 40))
    return "the hidden size must be in [1, 2^40], got " +
           std::to_string(hiddenSize);
  return "";
}

std::size_t rowBytes(RowType type, int64_t hiddenSize) {
  return static_cast<std::size_t>(hiddenSize) *
         (type == RowType::F32 ? sizeof(float) : sizeof(uint16_t));
}

int64_t placementHash(const ExpertPlacement &placement) {
  // FNV-1a.
  uint64_t hash = 1469598103934665603ull;
  for (int32_t rank : placement.rankOfExpert) {
    hash ^= static_cast<uint32_t>(rank);
    hash *= 1099511628211ull;
  }
  return static_cast<int64_t>(hash >> 1);
}

std::vector<SignatureEntry> dispatchSignature(RowType rowType,
                                              int64_t hiddenSize,
                                              int64_t tokens, int64_t k,
                                              const ExpertPlacement &placement,
                                              bool unusedSlots) {
  return {{"k", k},
          {"experts", placement.numExperts()},
          {"hidden_size", hiddenSize},
          {"row_type", static_cast<int64_t>(rowType)},
          {"placement", placementHash(placement)},
          {"unused_slots", unusedSlots},
          {"tokens", tokens, false}};
}

std::vector<int64_t> exchangeCounts(Communicator &comm,
                                    const std::vector<int64_t> &counts) {
  const std::size_t ranks = counts.size();
  std::vector<int64_t> incoming(ranks);
  std::vector<std::size_t> eight(ranks, sizeof(int64_t)), at(ranks);
  for (std::size_t r = 0; r < ranks; ++r)
    at[r] = r * sizeof(int64_t);
  comm.allToAllVHost(counts.data(), eight, at, incoming.data(), eight, at);
  return incoming;
}

Sends planSends(std::span<const int32_t> ids, int64_t tokens, int64_t k,
                const ExpertPlacement &placement, int ranks, int rank) {
  // The rank of slot j of `row`, -1 for an unused slot.
  auto rankOf = [&](const int32_t *row, int64_t j) -> int32_t {
    return row[j] < 0 ? -1 : placement.rankOfExpert[row[j]];
  };
  // Local expert index of each expert on its rank.
  std::vector<int32_t> localIndex(placement.rankOfExpert.size());
  std::vector<int32_t> held(static_cast<std::size_t>(ranks), 0);
  for (std::size_t e = 0; e < localIndex.size(); ++e)
    localIndex[e] = held[placement.rankOfExpert[e]]++;

  Sends sends;
  sends.tokensTo.assign(static_cast<std::size_t>(ranks), {});
  sends.slotsTo.assign(static_cast<std::size_t>(ranks), {});
  sends.slotRank.reserve(static_cast<std::size_t>(tokens * k));
  sends.localExperts = held[rank];
  for (int64_t t = 0; t < tokens; ++t) {
    const int32_t *row = ids.data() + t * k;
    for (int r = 0; r < ranks; ++r) {
      bool sent = false;
      for (int64_t j = 0; j < k; ++j)
        sent |= rankOf(row, j) == r;
      if (!sent)
        continue;
      sends.tokensTo[r].push_back(t);
      for (int64_t j = 0; j < k; ++j)
        sends.slotsTo[r].push_back(rankOf(row, j) == r ? localIndex[row[j]]
                                                       : -1);
    }
    for (int64_t j = 0; j < k; ++j)
      sends.slotRank.push_back(rankOf(row, j));
  }
  return sends;
}

Grouping groupReceived(const Received<int32_t> &slotsFrom,
                       const std::vector<std::size_t> &rowsFrom, int64_t k,
                       int64_t localExperts) {
  const std::size_t ranks = rowsFrom.size();
  // Peers ran the same code on agreed arguments; a mismatch here is a
  // broken exchange, refused rather than read out of bounds.
  for (std::size_t r = 0; r < ranks; ++r)
    if (slotsFrom.count(r) != rowsFrom[r] * static_cast<std::size_t>(k))
      throw Error(Error::Kind::Communication,
                  "dispatch: rank " + std::to_string(r) + " sent " +
                      std::to_string(rowsFrom[r]) + " rows and " +
                      std::to_string(slotsFrom.count(r)) +
                      " slots, which do not match");
  Grouping grouping;
  grouping.expertOffsets.assign(static_cast<std::size_t>(localExperts + 1), 0);
  for (int32_t e : slotsFrom.data) {
    if (e >= localExperts)
      throw Error(Error::Kind::Communication,
                  "dispatch: a peer named local expert " + std::to_string(e) +
                      " of " + std::to_string(localExperts));
    if (e >= 0)
      ++grouping.expertOffsets[e + 1];
  }
  for (int64_t e = 0; e < localExperts; ++e)
    grouping.expertOffsets[e + 1] += grouping.expertOffsets[e];
  grouping.sourceRow.assign(
      static_cast<std::size_t>(grouping.expertOffsets[localExperts]), 0);
  std::vector<int64_t> next(grouping.expertOffsets.begin(),
                            grouping.expertOffsets.end() - 1);
  grouping.returnRows.assign(ranks, {});
  int64_t received = 0;
  for (std::size_t r = 0; r < ranks; ++r)
    for (std::size_t i = 0; i < rowsFrom[r]; ++i, ++received)
      for (int64_t j = 0; j < k; ++j) {
        int32_t e = slotsFrom.from(r)[i * k + j];
        if (e < 0)
          continue;
        int64_t at = next[e]++;
        grouping.sourceRow[at] = received;
        grouping.returnRows[r].push_back(at);
      }
  return grouping;
}

DispatchHandle makeHandle(int64_t tokens, int64_t k, int64_t hiddenSize,
                          RowType rowType, Sends &sends, Grouping &grouping) {
  DispatchHandle handle;
  handle.tokens = tokens;
  handle.k = k;
  handle.hiddenSize = hiddenSize;
  handle.rowType = rowType;
  handle.slotRank = std::move(sends.slotRank);
  handle.returnRows = std::move(grouping.returnRows);
  handle.groupedRows = static_cast<int64_t>(grouping.sourceRow.size());
  return handle;
}

std::string checkCombine(const Communicator &comm, const DispatchHandle &handle,
                         std::size_t expertOutputBytes, std::size_t weights) {
  const std::size_t bytesPerRow = rowBytes(handle.rowType, handle.hiddenSize);
  if (expertOutputBytes !=
      static_cast<std::size_t>(handle.groupedRows) * bytesPerRow)
    return "expert outputs: [" + std::to_string(handle.groupedRows) + ", " +
           std::to_string(handle.hiddenSize) + "] rows need " +
           std::to_string(handle.groupedRows * bytesPerRow) + " bytes, got " +
           std::to_string(expertOutputBytes);
  if (weights != static_cast<std::size_t>(handle.tokens * handle.k))
    return "weights: [" + std::to_string(handle.tokens) + ", " +
           std::to_string(handle.k) + "] needs " +
           std::to_string(handle.tokens * handle.k) + " weights, got " +
           std::to_string(weights);
  if (handle.returnRows.size() != static_cast<std::size_t>(comm.size()))
    return "the handle is from a dispatch over " +
           std::to_string(handle.returnRows.size()) + " ranks, not " +
           std::to_string(comm.size());
  if (handle.slotRank.size() != static_cast<std::size_t>(handle.tokens * handle.k))
    return "the handle has " + std::to_string(handle.slotRank.size()) +
           " slot ranks for [" + std::to_string(handle.tokens) + ", " +
           std::to_string(handle.k) + "] slots";
  for (int32_t r : handle.slotRank)
    if (r < -1 || r >= comm.size())
      return "the handle names rank " + std::to_string(r) +
             " for a slot, outside [-1, " + std::to_string(comm.size()) + ")";
  return "";
}

std::vector<std::size_t> expectedReturnBytes(const DispatchHandle &handle,
                                             int ranks) {
  const std::size_t bytesPerRow = rowBytes(handle.rowType, handle.hiddenSize);
  std::vector<std::size_t> expected(static_cast<std::size_t>(ranks), 0);
  for (int32_t r : handle.slotRank)
    if (r >= 0 && r < ranks)
      expected[r] += bytesPerRow;
  return expected;
}

void checkReturned(const std::vector<std::size_t> &expected,
                   const std::vector<std::size_t> &got) {
  for (std::size_t r = 0; r < expected.size(); ++r)
    if (got[r] != expected[r])
      throw Error(Error::Kind::Communication,
                  "combine: rank " + std::to_string(r) + " sent back " +
                      std::to_string(got[r]) + " bytes, " +
                      std::to_string(expected[r]) +
                      " expected: the ranks' handles are not from one "
                      "dispatch");
}

} // namespace moegen::rt::ep::plan

namespace moegen::rt::ep {

namespace {

std::string checkDispatch(const Communicator &comm,
                          std::span<const std::byte> hidden, RowType rowType,
                          int64_t hiddenSize, std::span<const int32_t> ids,
                          int64_t tokens, int64_t k,
                          const ExpertPlacement &placement, bool unusedSlots) {
  std::string error =
      plan::checkPlacementAndHidden(placement, comm.size(), hiddenSize);
  if (!error.empty())
    return error;
  error = plan::checkIds(ids, tokens, k, placement.numExperts(), "ids",
                         unusedSlots);
  if (!error.empty())
    return error;
  const std::size_t rowBytes = plan::rowBytes(rowType, hiddenSize);
  if (hidden.size() % rowBytes != 0 ||
      hidden.size() / rowBytes != static_cast<std::size_t>(tokens))
    return "hidden: " + std::to_string(hidden.size()) +
           " bytes are not [" + std::to_string(tokens) + ", " +
           std::to_string(hiddenSize) + "] rows of " +
           std::to_string(rowBytes) + " bytes";
  return "";
}

} // namespace

Dispatched dispatch(Communicator &comm, std::span<const std::byte> hidden,
                    RowType rowType, int64_t hiddenSize,
                    std::span<const int32_t> ids, int64_t tokens, int64_t k,
                    const ExpertPlacement &placement, bool unusedSlots) {
  agreeOnArguments(comm, "dispatch",
                   plan::dispatchSignature(rowType, hiddenSize, tokens, k,
                                           placement, unusedSlots),
                   checkDispatch(comm, hidden, rowType, hiddenSize, ids,
                                 tokens, k, placement, unusedSlots));
  const int ranks = comm.size();
  const std::size_t rowBytes = plan::rowBytes(rowType, hiddenSize);
  plan::Sends sends =
      plan::planSends(ids, tokens, k, placement, ranks, comm.rank());

  std::vector<std::vector<std::byte>> rowsTo(static_cast<std::size_t>(ranks));
  for (int r = 0; r < ranks; ++r)
    for (int64_t t : sends.tokensTo[r]) {
      const std::byte *source = hidden.data() + t * rowBytes;
      rowsTo[r].insert(rowsTo[r].end(), source, source + rowBytes);
    }
  plan::Received<std::byte> rowsFrom = plan::exchangeVectors(comm, rowsTo);
  plan::Received<int32_t> slotsFrom =
      plan::exchangeVectors(comm, sends.slotsTo);
  std::vector<std::size_t> rowCounts(static_cast<std::size_t>(ranks));
  for (int r = 0; r < ranks; ++r) {
    if (rowsFrom.count(r) % rowBytes != 0)
      throw Error(Error::Kind::Communication,
                  "dispatch: rank " + std::to_string(r) + " sent " +
                      std::to_string(rowsFrom.count(r)) +
                      " bytes, not whole rows");
    rowCounts[r] = rowsFrom.count(r) / rowBytes;
  }
  plan::Grouping grouping =
      plan::groupReceived(slotsFrom, rowCounts, k, sends.localExperts);

  Dispatched result;
  result.expertOffsets = grouping.expertOffsets;
  result.rows.resize(grouping.sourceRow.size() * rowBytes);
  for (std::size_t at = 0; at < grouping.sourceRow.size(); ++at)
    std::memcpy(result.rows.data() + at * rowBytes,
                rowsFrom.data.data() + grouping.sourceRow[at] * rowBytes,
                rowBytes);
  result.handle =
      plan::makeHandle(tokens, k, hiddenSize, rowType, sends, grouping);
  return result;
}

std::vector<std::byte> combine(Communicator &comm,
                               const DispatchHandle &handle,
                               std::span<const std::byte> expertOutputs,
                               std::span<const float> weights) {
  const std::size_t rowBytes = plan::rowBytes(handle.rowType, handle.hiddenSize);
  const SignatureEntry signature[] = {
      {"k", handle.k},
      {"hidden_size", handle.hiddenSize},
      {"row_type", static_cast<int64_t>(handle.rowType)}};
  agreeOnArguments(
      comm, "combine", signature,
      plan::checkCombine(comm, handle, expertOutputs.size(), weights.size()));

  // Back to the tokens' ranks, in the order each expects.
  std::vector<std::vector<std::byte>> back(handle.returnRows.size());
  for (std::size_t r = 0; r < back.size(); ++r)
    for (int64_t at : handle.returnRows[r]) {
      const std::byte *row = expertOutputs.data() + at * rowBytes;
      back[r].insert(back[r].end(), row, row + rowBytes);
    }
  plan::Received<std::byte> outputs = plan::exchangeVectors(comm, back);
  std::vector<std::size_t> got(back.size());
  for (std::size_t r = 0; r < got.size(); ++r)
    got[r] = outputs.count(r);
  plan::checkReturned(plan::expectedReturnBytes(handle, comm.size()), got);

  // Sum per token over its slots in slot order, in fp32: each slot's row
  // widened to fp32 once, then one multiply-add per element.
  std::vector<std::byte> combined(static_cast<std::size_t>(handle.tokens) *
                                  rowBytes);
  std::vector<std::size_t> nextFrom(outputs.offsets.begin(),
                                    outputs.offsets.end() - 1);
  const auto hidden = static_cast<std::size_t>(handle.hiddenSize);
  std::vector<float> sum(hidden), row(hidden);
  std::vector<uint16_t> narrow(hidden);
  for (int64_t t = 0; t < handle.tokens; ++t) {
    std::fill(sum.begin(), sum.end(), 0.0f);
    for (int64_t j = 0; j < handle.k; ++j) {
      int32_t r = handle.slotRank[t * handle.k + j];
      if (r < 0)
        continue; // an unused slot adds no term
      const std::byte *bytes = outputs.data.data() + nextFrom[r];
      nextFrom[r] += rowBytes;
      if (handle.rowType == RowType::F32) {
        std::memcpy(row.data(), bytes, rowBytes);
      } else {
        std::memcpy(narrow.data(), bytes, rowBytes);
        for (std::size_t h = 0; h < hidden; ++h)
          row[h] = npy::bf16ToFloat(narrow[h]);
      }
      // moe.combine's contract (semantics.md §10): one fused multiply-add
      // per slot, in slot order, so EP and the generated kernel agree bit
      // for bit.
      const float w = weights[t * handle.k + j];
      for (std::size_t h = 0; h < hidden; ++h)
        sum[h] = std::fma(w, row[h], sum[h]);
    }
    std::byte *out = combined.data() + t * rowBytes;
    if (handle.rowType == RowType::F32) {
      std::memcpy(out, sum.data(), rowBytes);
    } else {
      for (std::size_t h = 0; h < hidden; ++h)
        narrow[h] = npy::floatToBf16(sum[h]); // nearest even, NaN kept
      std::memcpy(out, narrow.data(), rowBytes);
    }
  }
  return combined;
}

} // namespace moegen::rt::ep
