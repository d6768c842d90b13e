//===- EpTest.cpp - EP operations with ranks as threads -------------------===//
//
// The EP operations (runtime/ep/ExpertParallel.h) over an in-process
// communicator whose ranks are threads: the same logic the MPI tests run
// under mpirun (tests/lit/EP/), here also under the sanitizers with leak
// checks, and with a device-memory communicator the host path refuses.
//
//===----------------------------------------------------------------------===//

#include "runtime/Error.h"
#include "runtime/ep/ExpertParallel.h"

#include <gtest/gtest.h>

#include <barrier>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

using namespace moegen::rt;

namespace {

/// What the ranks of a ThreadGroup share: one posted buffer per rank and a
/// barrier that orders posting before reading and reading before reuse.
struct ThreadGroup {
  explicit ThreadGroup(int ranks)
      : posted(static_cast<std::size_t>(ranks)), sync(ranks) {}
  struct Post {
    const char *send = nullptr;
    std::vector<std::size_t> bytes, offsets;
  };
  std::vector<Post> posted;
  std::barrier<> sync;
};

class ThreadCommunicator : public ep::Communicator {
public:
  ThreadCommunicator(ThreadGroup &group, int rank, ep::MemorySpace space)
      : group(group), rankInGroup(rank), space(space) {}
  int rank() const override { return rankInGroup; }
  int size() const override { return static_cast<int>(group.posted.size()); }
  ep::MemorySpace memorySpace() const override { return space; }
  std::string name() const override { return "threads"; }

  void allGather(const void *send, std::size_t bytes, void *recv) override {
    std::vector<std::size_t> each(group.posted.size(), bytes), at;
    for (std::size_t r = 0; r < each.size(); ++r)
      at.push_back(r * bytes);
    allToAllV(send, each, std::vector<std::size_t>(each.size(), 0), recv,
              each, at);
  }
  void allGatherHost(const void *send, std::size_t bytes,
                     void *recv) override {
    allGather(send, bytes, recv);
  }
  void allToAllV(const void *send, std::span<const std::size_t> sendBytes,
                 std::span<const std::size_t> sendOffsets, void *recv,
                 std::span<const std::size_t> recvBytes,
                 std::span<const std::size_t> recvOffsets) override {
    ThreadGroup::Post &mine = group.posted[rankInGroup];
    mine.send = static_cast<const char *>(send);
    mine.bytes.assign(sendBytes.begin(), sendBytes.end());
    mine.offsets.assign(sendOffsets.begin(), sendOffsets.end());
    group.sync.arrive_and_wait();
    for (std::size_t r = 0; r < group.posted.size(); ++r) {
      const ThreadGroup::Post &from = group.posted[r];
      // EXPECT, not ASSERT: a rank leaving early would strand the others
      // at the barrier.
      EXPECT_EQ(from.bytes[rankInGroup], recvBytes[r]) << "rank " << r;
      if (from.bytes[rankInGroup] == recvBytes[r])
        std::memcpy(static_cast<char *>(recv) + recvOffsets[r],
                    from.send + from.offsets[rankInGroup], recvBytes[r]);
    }
    group.sync.arrive_and_wait();
  }

private:
  ThreadGroup &group;
  int rankInGroup;
  ep::MemorySpace space;
};

/// Runs `body` on `ranks` threads, one communicator each; returns what
/// each rank's call threw (empty: nothing).
std::vector<std::string>
onRanks(int ranks, const std::function<void(ep::Communicator &)> &body,
        ep::MemorySpace space = ep::MemorySpace::Host) {
  ThreadGroup group(ranks);
  std::vector<std::string> errors(static_cast<std::size_t>(ranks));
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r)
    threads.emplace_back([&, r] {
      ThreadCommunicator comm(group, r, space);
      try {
        body(comm);
      } catch (const Error &e) {
        errors[r] = std::string(toString(e.kind())) + ": " + e.what();
      }
    });
  for (std::thread &t : threads)
    t.join();
  return errors;
}

/// Rank r's ids: r tokens of k = 2 from 8 experts.
std::vector<int32_t> idsOf(int rank) {
  std::vector<int32_t> ids;
  for (int t = 0; t < rank; ++t) {
    ids.push_back((rank + t) % 8);
    ids.push_back((rank + t + 3) % 8);
  }
  return ids;
}

TEST(EpTest, AllGatherForcedIdsConcatenatesRanksInOrder) {
  std::vector<std::vector<int32_t>> got(4);
  std::vector<std::string> errors = onRanks(4, [&](ep::Communicator &comm) {
    got[comm.rank()] =
        ep::allGatherForcedIds(comm, idsOf(comm.rank()), comm.rank(), 2, 8);
  });
  std::vector<int32_t> expected;
  for (int r = 0; r < 4; ++r) {
    std::vector<int32_t> ids = idsOf(r);
    expected.insert(expected.end(), ids.begin(), ids.end());
  }
  for (int r = 0; r < 4; ++r) {
    EXPECT_EQ(errors[r], "") << "rank " << r;
    EXPECT_EQ(got[r], expected) << "rank " << r;
  }
}

TEST(EpTest, EveryRankWithoutTokensGathersNothing) {
  std::vector<std::string> errors = onRanks(3, [](ep::Communicator &comm) {
    EXPECT_TRUE(ep::allGatherForcedIds(comm, {}, 0, 4, 16).empty());
  });
  for (const std::string &e : errors)
    EXPECT_EQ(e, "");
}

/// Every rank must report `message`, the same line.
void expectEveryRank(const std::vector<std::string> &errors,
                     const std::string &message) {
  for (std::size_t r = 0; r < errors.size(); ++r)
    EXPECT_EQ(errors[r], "InvalidArgument: " + message) << "rank " << r;
}

TEST(EpTest, OneRanksBadArgumentFailsEveryRank) {
  expectEveryRank(onRanks(3,
                          [](ep::Communicator &comm) {
                            std::vector<int32_t> ids = idsOf(comm.rank());
                            if (comm.rank() == 2)
                              ids[3] = -1;
                            ep::allGatherForcedIds(comm, ids, comm.rank(), 2,
                                                   8);
                          }),
                  "all_gather_forced_ids: rank 2: forced_ids[1][1] = -1 is "
                  "outside [0, 8)");
  expectEveryRank(onRanks(2,
                          [](ep::Communicator &comm) {
                            std::vector<int32_t> ids = idsOf(comm.rank());
                            if (comm.rank() == 1)
                              ids = {4, 4};
                            ep::allGatherForcedIds(comm, ids, comm.rank(), 2,
                                                   8);
                          }),
                  "all_gather_forced_ids: rank 1: forced_ids[0] repeats "
                  "expert 4 (at 0 and 1)");
  expectEveryRank(onRanks(2,
                          [](ep::Communicator &comm) {
                            std::vector<int32_t> ids = idsOf(comm.rank());
                            // One id short of [1, 2].
                            if (comm.rank() == 1)
                              ids.pop_back();
                            ep::allGatherForcedIds(comm, ids, comm.rank(), 2,
                                                   8);
                          }),
                  "all_gather_forced_ids: rank 1: forced_ids: shape [1, 2] "
                  "needs 2 ids, got 1");
  expectEveryRank(onRanks(2,
                          [](ep::Communicator &comm) {
                            ep::allGatherForcedIds(comm, {}, 0,
                                                   comm.rank() == 0 ? 9 : 2,
                                                   8);
                          }),
                  "all_gather_forced_ids: rank 0: k must be in [1, 8], got 9");
}

TEST(EpTest, RanksThatDisagreeFailEveryRank) {
  expectEveryRank(
      onRanks(3,
              [](ep::Communicator &comm) {
                int64_t k = comm.rank() == 2 ? 1 : 2;
                std::vector<int32_t> ids(
                    static_cast<std::size_t>(comm.rank() * k), 0);
                for (std::size_t i = 0; i < ids.size(); ++i)
                  ids[i] = static_cast<int32_t>(i % k);
                ep::allGatherForcedIds(comm, ids, comm.rank(), k, 8);
              }),
      "all_gather_forced_ids: rank 2: k = 1, rank 0 has 2");
  expectEveryRank(onRanks(2,
                          [](ep::Communicator &comm) {
                            ep::allGatherForcedIds(
                                comm, {}, 0, 2, comm.rank() == 1 ? 64 : 8);
                          }),
                  "all_gather_forced_ids: rank 1: experts = 64, rank 0 has 8");
}

TEST(EpTest, HostIdsOnADeviceCommunicatorAreRefused) {
  expectEveryRank(
      onRanks(
          2,
          [](ep::Communicator &comm) {
            ep::allGatherForcedIds(comm, idsOf(comm.rank()), comm.rank(), 2,
                                   8);
          },
          ep::MemorySpace::CudaDevice),
      "all_gather_forced_ids: rank 0: forced_ids are host memory but the "
      "threads communicator exchanges device buffers");
}

} // namespace
