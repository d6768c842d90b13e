//===- ExpertParallel.cpp - EP operations over a communicator -------------===//

#include "runtime/ep/ExpertParallel.h"

#include "runtime/Error.h"

#include <algorithm>
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

namespace {

/// This rank's verdict on allGatherForcedIds' arguments; empty if fine.
std::string checkForcedIds(const Communicator &comm,
                           std::span<const int32_t> ids, int64_t tokens,
                           int64_t k, int64_t numExperts) {
  if (comm.memorySpace() != MemorySpace::Host)
    return "forced_ids are host memory but the " + comm.name() +
           " communicator exchanges device buffers";
  if (numExperts < 1)
    return "the expert count must be at least 1, got " +
           std::to_string(numExperts);
  if (k < 1 || k > numExperts)
    return "k must be in [1, " + std::to_string(numExperts) + "], got " +
           std::to_string(k);
  if (tokens < 0 || tokens > std::numeric_limits<int64_t>::max() / k)
    return "forced_ids: the token count must be in [0, 2^63 / k), got " +
           std::to_string(tokens);
  if (static_cast<int64_t>(ids.size()) != tokens * k)
    return "forced_ids: shape [" + std::to_string(tokens) + ", " +
           std::to_string(k) + "] needs " + std::to_string(tokens * k) +
           " ids, got " + std::to_string(ids.size());
  for (int64_t t = 0; t < tokens; ++t) {
    const int32_t *row = ids.data() + t * k;
    for (int64_t j = 0; j < k; ++j) {
      if (row[j] < 0 || row[j] >= numExperts)
        return "forced_ids[" + std::to_string(t) + "][" + std::to_string(j) +
               "] = " + std::to_string(row[j]) + " is outside [0, " +
               std::to_string(numExperts) + ")";
      for (int64_t i = 0; i < j; ++i)
        if (row[i] == row[j])
          return "forced_ids[" + std::to_string(t) + "] repeats expert " +
                 std::to_string(row[j]) + " (at " + std::to_string(i) +
                 " and " + std::to_string(j) + ")";
    }
  }
  return "";
}

} // namespace

std::vector<int32_t> allGatherForcedIds(Communicator &comm,
                                        std::span<const int32_t> ids,
                                        int64_t tokens, int64_t k,
                                        int64_t numExperts) {
  const SignatureEntry signature[] = {
      {"k", k}, {"experts", numExperts}, {"tokens", tokens, false}};
  std::vector<std::vector<int64_t>> agreed = agreeOnArguments(
      comm, "all_gather_forced_ids", signature,
      checkForcedIds(comm, ids, tokens, k, numExperts));
  const std::vector<int64_t> &rankTokens = agreed[2];

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
  comm.allToAllV(ids.data(), sendBytes, sendOffsets, gathered.data(),
                 recvBytes, recvOffsets);
  return gathered;
}

} // namespace moegen::rt::ep
