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
//
// Exit code 0 when the rank saw what the scenario expects, 1 otherwise.
//
//===----------------------------------------------------------------------===//

#include "runtime/Error.h"
#include "runtime/ep/ExpertParallel.h"
#include "runtime/ep/MpiCommunicator.h"

#include <mpi.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

using namespace moegen::rt;

namespace {

constexpr int64_t kExperts = 8;
constexpr int64_t kTopK = 2;

/// Rank r's forced ids: r tokens, token t of rank r picks (r + t) % 8 and
/// (r + t + 3) % 8.
std::vector<int32_t> forcedIds(int rank) {
  std::vector<int32_t> ids;
  for (int t = 0; t < rank; ++t) {
    ids.push_back((rank + t) % kExperts);
    ids.push_back((rank + t + 3) % kExperts);
  }
  return ids;
}

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
  try {
    ep::allGatherForcedIds(comm, ids, tokens, k, experts);
  } catch (const Error &e) {
    std::printf("rank %d: %s error: %s\n", rank, toString(e.kind()),
                e.what());
    return 0;
  }
  std::printf("rank %d: FAIL: no error\n", rank);
  return 1;
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
      else if (scenario == "bad-id" || scenario == "duplicate" ||
               scenario == "bad-k" || scenario == "bad-experts")
        status = expectError(comm, scenario);
      else
        std::fprintf(stderr, "usage: moegen-ep-check all-gather|bad-id|"
                             "duplicate|bad-k|bad-experts\n");
    } catch (const Error &e) {
      std::printf("rank %d: FAIL: %s\n", comm.rank(), e.what());
    }
  }
  std::fflush(stdout);
  MPI_Finalize();
  return status;
}
