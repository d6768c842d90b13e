//===- EpCheck.cpp - EP operations under mpirun ---------------------------===//
//
// moegen-ep-check SCENARIO, run by every rank of `mpirun -n N`: each rank
// calls the EP operations as the scenario says, checks what it got against
// what it computes on its own, and prints one line "rank R: ..." (lit sorts
// and checks them: tests/lit/EP/). Error scenarios expect every rank to
// throw, with one message across ranks.
//
//   all-gather   rank r forces r tokens (rank 0 none), k = 2 of 8 experts
//   bad-id       the last rank forces expert 8 of 8
//   duplicate    rank 0 forces one expert twice in a token
//   bad-k        rank 1 passes k = 3 where the others pass 2
//   bad-experts  rank 1 passes 16 experts where the others pass 8
//   moe-layer    dispatch, experts y = (e + 1) x + e / 2, combine; compared
//                with what one rank computes for the same tokens
//   skewed       the same with every token's experts on rank 0 (experts
//                placed by an explicit map)
//   rank-dies    rank 1 exits before the exchange; the others must not
//                wait for it forever
//   dispatch-dtype, dispatch-k, dispatch-experts
//                dispatch where rank 1 passes bf16 rows, k = 3 or 16
//                experts where the others pass fp32, 2 and 8
//
// Exit code 0 when the rank saw what the scenario expects, 1 otherwise.
//
//===----------------------------------------------------------------------===//

#include "runtime/Error.h"
#include "runtime/ep/ExpertParallel.h"
#include "runtime/ep/MpiCommunicator.h"
#include "tests/ep/EpCheckCommon.h"

#include <mpi.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

using namespace moegen::rt;

using moegen::epcheck::expectThrow;
using moegen::epcheck::forcedIds;
using moegen::epcheck::kExperts;

namespace {

constexpr int64_t kTopK = 2;

int allGather(ep::Communicator &comm) {
  std::vector<int32_t> mine = forcedIds(comm.rank());
  std::vector<int32_t> got = ep::allGatherForcedIds(
      comm, mine, comm.rank(), kTopK, kExperts);
  std::vector<int32_t> expected;
  for (int r = 0; r < comm.size(); ++r) {
    std::vector<int32_t> ids = forcedIds(r);
    expected.insert(expected.end(), ids.begin(), ids.end());
  }
  if (got != expected) {
    std::printf("rank %d: FAIL: all-gather gave %zu ids, expected %zu\n",
                comm.rank(), got.size(), expected.size());
    return 1;
  }
  std::printf("rank %d: all-gather ok, %zu tokens\n", comm.rank(),
              got.size() / kTopK);
  return 0;
}

int expectError(ep::Communicator &comm, const std::string &scenario) {
  int rank = comm.rank(), last = comm.size() - 1;
  std::vector<int32_t> ids = forcedIds(rank);
  int64_t k = kTopK, experts = kExperts, tokens = rank;
  if (scenario == "bad-id" && rank == last)
    ids[1] = kExperts;
  else if (scenario == "duplicate" && rank == 0) {
    ids = {5, 5};
    tokens = 1;
  } else if (scenario == "bad-k" && rank == 1) {
    k = 3;
    ids.resize(static_cast<std::size_t>(tokens * k), 0);
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t j = 0; j < k; ++j)
        ids[t * k + j] = static_cast<int32_t>(j);
  } else if (scenario == "bad-experts" && rank == 1) {
    experts = 16;
  }
  return expectThrow(rank, [&] {
    ep::allGatherForcedIds(comm, ids, tokens, k, experts);
  });
}

int moeLayer(ep::Communicator &comm, bool skewed) {
  constexpr int64_t hiddenSize = 16, k = 3;
  const int rank = comm.rank();
  const int64_t tokens = 3 * rank + 2;
  std::vector<float> hidden, weights;
  std::vector<int32_t> ids;
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t h = 0; h < hiddenSize; ++h)
      hidden.push_back(std::sin(0.1f * static_cast<float>(rank * 100 + t * 16 + h)));
    for (int64_t j = 0; j < k; ++j) {
      ids.push_back(skewed ? static_cast<int32_t>(j)
                           : static_cast<int32_t>((rank * 5 + t * 3 + j * 5) % kExperts));
      weights.push_back(0.2f + 0.1f * static_cast<float>(j));
    }
  }
  // Skewed: experts 0-3 on rank 0 (an explicit map), the others spread.
  ep::ExpertPlacement placement =
      ep::ExpertPlacement::contiguous(kExperts, comm.size());
  if (skewed)
    for (int32_t e = 0; e < kExperts; ++e)
      placement.rankOfExpert[e] = e < 4 ? 0 : e % comm.size();
  ep::Dispatched dispatched = ep::dispatch(
      comm, std::as_bytes(std::span<const float>(hidden)), ep::RowType::F32,
      hiddenSize, ids, tokens, k, placement);
  std::vector<int32_t> experts = placement.expertsOf(rank);
  auto expert = [](int32_t e, float x) {
    return static_cast<float>(e + 1) * x + 0.5f * static_cast<float>(e);
  };
  int64_t received = 0;
  for (std::size_t e = 0; e < experts.size(); ++e)
    for (int64_t row = dispatched.expertOffsets[e];
         row < dispatched.expertOffsets[e + 1]; ++row, ++received)
      for (int64_t h = 0; h < hiddenSize; ++h) {
        float x;
        std::byte *at = dispatched.rows.data() + (row * hiddenSize + h) * 4;
        std::memcpy(&x, at, 4);
        float y = expert(experts[e], x);
        std::memcpy(at, &y, 4);
      }
  std::vector<std::byte> combined =
      ep::combine(comm, dispatched.handle, dispatched.rows, weights);
  double maxError = 0.0;
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t h = 0; h < hiddenSize; ++h) {
      float single = 0.0f;
      for (int64_t j = 0; j < k; ++j)
        single = std::fma(weights[t * k + j],
                          expert(ids[t * k + j], hidden[t * hiddenSize + h]),
                          single); // combine's contract
      float got;
      std::memcpy(&got, combined.data() + (t * hiddenSize + h) * 4, 4);
      maxError = std::max(maxError, std::fabs(double(got) - double(single)));
    }
  std::printf("rank %d: %s ok, %lld tokens, %lld expert rows received, max "
              "abs error against one rank %g\n",
              rank, skewed ? "skewed" : "moe-layer",
              static_cast<long long>(tokens),
              static_cast<long long>(received), maxError);
  return maxError == 0.0 ? 0 : 1;
}

int dispatchMismatch(ep::Communicator &comm, const std::string &scenario) {
  const int rank = comm.rank();
  const bool deviant = rank == 1;
  ep::RowType type = deviant && scenario == "dispatch-dtype"
                         ? ep::RowType::BF16
                         : ep::RowType::F32;
  int64_t k = deviant && scenario == "dispatch-k" ? 3 : 2;
  int64_t experts = deviant && scenario == "dispatch-experts" ? 16 : kExperts;
  const int64_t hidden = 4, tokens = 1;
  std::vector<std::byte> rows(
      static_cast<std::size_t>(hidden) *
      (type == ep::RowType::F32 ? 4 : 2));
  std::vector<int32_t> ids;
  for (int64_t j = 0; j < k; ++j)
    ids.push_back(static_cast<int32_t>(j));
  return expectThrow(rank, [&] {
    ep::dispatch(comm, rows, type, hidden, ids, tokens, k,
                 ep::ExpertPlacement::contiguous(experts, comm.size()));
  });
}

} // namespace

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int status = 1;
  {
    ep::MpiCommunicator comm;
    std::string scenario = argc > 1 ? argv[1] : "";
    try {
      if (scenario == "all-gather")
        status = allGather(comm);
      else if (scenario == "rank-dies") {
        if (comm.rank() == 1)
          std::_Exit(3);
        status = allGather(comm);
      } else if (scenario == "dispatch-dtype" || scenario == "dispatch-k" ||
                 scenario == "dispatch-experts")
        status = dispatchMismatch(comm, scenario);
      else if (scenario == "moe-layer" || scenario == "skewed")
        status = moeLayer(comm, scenario == "skewed");
      else if (scenario == "bad-id" || scenario == "duplicate" ||
               scenario == "bad-k" || scenario == "bad-experts")
        status = expectError(comm, scenario);
      else
        std::fprintf(stderr, "usage: moegen-ep-check all-gather|bad-id|"
                             "duplicate|bad-k|bad-experts|moe-layer|"
                             "skewed|rank-dies|dispatch-dtype|"
                             "dispatch-k|dispatch-experts\n");
    } catch (const Error &e) {
      std::printf("rank %d: FAIL: %s\n", comm.rank(), e.what());
    }
  }
  std::fflush(stdout);
  MPI_Finalize();
  return status;
}
