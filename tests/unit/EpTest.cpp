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
#include <cmath>
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

  // The EP operations move host buffers: on a device communicator they
  // must use the host forms (which a real one stages), never these.
  void allGather(const void *send, std::size_t bytes, void *recv) override {
    EXPECT_EQ(space, ep::MemorySpace::Host) << "device allGather, host bytes";
    gather(send, bytes, recv);
  }
  void allGatherHost(const void *send, std::size_t bytes,
                     void *recv) override {
    ++hostCalls;
    gather(send, bytes, recv);
  }
  void allToAllV(const void *send, std::span<const std::size_t> sendBytes,
                 std::span<const std::size_t> sendOffsets, void *recv,
                 std::span<const std::size_t> recvBytes,
                 std::span<const std::size_t> recvOffsets) override {
    EXPECT_EQ(space, ep::MemorySpace::Host) << "device allToAllV, host bytes";
    exchange(send, sendBytes, sendOffsets, recv, recvBytes, recvOffsets);
  }
  void allToAllVHost(const void *send, std::span<const std::size_t> sendBytes,
                     std::span<const std::size_t> sendOffsets, void *recv,
                     std::span<const std::size_t> recvBytes,
                     std::span<const std::size_t> recvOffsets) override {
    ++hostCalls;
    exchange(send, sendBytes, sendOffsets, recv, recvBytes, recvOffsets);
  }

  /// Calls of the host forms.
  int hostCalls = 0;

private:
  void gather(const void *send, std::size_t bytes, void *recv) {
    std::vector<std::size_t> each(group.posted.size(), bytes), at;
    for (std::size_t r = 0; r < each.size(); ++r)
      at.push_back(r * bytes);
    exchange(send, each, std::vector<std::size_t>(each.size(), 0), recv, each,
             at);
  }
  void exchange(const void *send, std::span<const std::size_t> sendBytes,
                std::span<const std::size_t> sendOffsets, void *recv,
                std::span<const std::size_t> recvBytes,
                std::span<const std::size_t> recvOffsets) {
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
      // (memcpy wants real pointers even for 0 bytes.)
      if (from.bytes[rankInGroup] == recvBytes[r] && recvBytes[r] > 0)
        std::memcpy(static_cast<char *>(recv) + recvOffsets[r],
                    from.send + from.offsets[rankInGroup], recvBytes[r]);
    }
    group.sync.arrive_and_wait();
  }

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

// Dispatch and combine. Rank r holds 2r + 1 tokens of hidden size 5; token
// t of rank r picks k = 3 distinct experts of 8 from a fixed pattern.
constexpr int64_t kHidden = 5;

std::vector<int32_t> pickedBy(int rank, int64_t tokens, bool skewed) {
  std::vector<int32_t> ids;
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t j = 0; j < 3; ++j)
      ids.push_back(skewed ? static_cast<int32_t>(j) // all on rank 0
                           : static_cast<int32_t>((rank * 3 + t * 5 + j * 3) % 8));
  return ids;
}

float hiddenValue(int rank, int64_t t, int64_t h) {
  return 0.25f * static_cast<float>(rank) + 0.5f * static_cast<float>(t) -
         0.125f * static_cast<float>(h) + 1.0f;
}

float weightOf(int rank, int64_t t, int64_t j) {
  return 0.1f + 0.2f * static_cast<float>(j) + 0.01f * static_cast<float>(t + rank);
}

/// Expert e: y = (e + 1) * x + 0.5 e, elementwise (f32 rows).
void applyExperts(ep::Dispatched &dispatched, const ep::ExpertPlacement &placement,
                  int rank) {
  std::vector<int32_t> experts = placement.expertsOf(rank);
  for (std::size_t e = 0; e < experts.size(); ++e)
    for (int64_t row = dispatched.expertOffsets[e];
         row < dispatched.expertOffsets[e + 1]; ++row)
      for (int64_t h = 0; h < kHidden; ++h) {
        float x;
        std::memcpy(&x, dispatched.rows.data() + (row * kHidden + h) * 4, 4);
        float y = static_cast<float>(experts[e] + 1) * x +
                  0.5f * static_cast<float>(experts[e]);
        std::memcpy(dispatched.rows.data() + (row * kHidden + h) * 4, &y, 4);
      }
}

/// Each rank's combined rows after dispatch, experts and combine.
std::vector<std::vector<float>>
moeLayer(int ranks, bool skewed, std::vector<std::string> *errors = nullptr,
         ep::MemorySpace space = ep::MemorySpace::Host) {
  std::vector<std::vector<float>> out(static_cast<std::size_t>(ranks));
  std::vector<std::string> got = onRanks(ranks, [&](ep::Communicator &comm) {
    int r = comm.rank();
    int64_t tokens = 2 * r + 1;
    std::vector<float> hidden;
    std::vector<float> weights;
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t h = 0; h < kHidden; ++h)
        hidden.push_back(hiddenValue(r, t, h));
      for (int64_t j = 0; j < 3; ++j)
        weights.push_back(weightOf(r, t, j));
    }
    ep::ExpertPlacement placement = ep::ExpertPlacement::contiguous(8, ranks);
    ep::Dispatched dispatched = ep::dispatch(
        comm, std::as_bytes(std::span<const float>(hidden)), ep::RowType::F32,
        kHidden, pickedBy(r, tokens, skewed), tokens, 3, placement);
    applyExperts(dispatched, placement, r);
    std::vector<std::byte> combined =
        ep::combine(comm, dispatched.handle, dispatched.rows, weights);
    out[r].resize(combined.size() / 4);
    std::memcpy(out[r].data(), combined.data(), combined.size());
    if (space != ep::MemorySpace::Host) {
      EXPECT_GT(static_cast<ThreadCommunicator &>(comm).hostCalls, 0);
    }
  }, space);
  if (errors)
    *errors = got;
  return out;
}

/// What one process computes for rank r's tokens, in the same order.
std::vector<float> singleRank(int r, bool skewed) {
  int64_t tokens = 2 * r + 1;
  std::vector<int32_t> ids = pickedBy(r, tokens, skewed);
  std::vector<float> out;
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t h = 0; h < kHidden; ++h) {
      float sum = 0.0f;
      for (int64_t j = 0; j < 3; ++j) {
        int32_t e = ids[t * 3 + j];
        float y = static_cast<float>(e + 1) * hiddenValue(r, t, h) +
                  0.5f * static_cast<float>(e);
        sum = std::fma(weightOf(r, t, j), y, sum); // combine's contract
      }
      out.push_back(sum);
    }
  return out;
}

TEST(EpTest, DispatchExpertsCombineEqualsOneRank) {
  for (int ranks : {1, 2, 4}) {
    std::vector<std::string> errors;
    std::vector<std::vector<float>> out = moeLayer(ranks, false, &errors);
    for (int r = 0; r < ranks; ++r) {
      EXPECT_EQ(errors[r], "") << ranks << " ranks, rank " << r;
      EXPECT_EQ(out[r], singleRank(r, false)) << ranks << " ranks, rank " << r;
    }
  }
}

TEST(EpTest, EveryTokenToOneRank) {
  std::vector<std::string> errors;
  std::vector<std::vector<float>> out = moeLayer(4, true, &errors);
  for (int r = 0; r < 4; ++r) {
    EXPECT_EQ(errors[r], "") << "rank " << r;
    EXPECT_EQ(out[r], singleRank(r, true)) << "rank " << r;
  }
}

TEST(EpTest, DispatchSendsATokenOncePerRankAndGroupsByExpert) {
  // Rank 0's one token picks experts 0 and 1 (both on rank 0) and 6 (on
  // rank 1): two rows at rank 0 (one per local expert), one at rank 1.
  std::vector<ep::Dispatched> got(2);
  onRanks(2, [&](ep::Communicator &comm) {
    std::vector<float> hidden(comm.rank() == 0 ? 2 : 0, 7.0f);
    std::vector<int32_t> ids =
        comm.rank() == 0 ? std::vector<int32_t>{6, 0, 1} : std::vector<int32_t>{};
    got[comm.rank()] = ep::dispatch(
        comm, std::as_bytes(std::span<const float>(hidden)), ep::RowType::F32,
        2, ids, comm.rank() == 0 ? 1 : 0, 3, ep::ExpertPlacement::contiguous(8, 2));
  });
  EXPECT_EQ(got[0].expertOffsets, (std::vector<int64_t>{0, 1, 2, 2, 2}));
  EXPECT_EQ(got[1].expertOffsets, (std::vector<int64_t>{0, 0, 0, 1, 1}));
  EXPECT_EQ(got[0].rows.size(), 2u * 2 * 4);
  EXPECT_EQ(got[1].rows.size(), 1u * 2 * 4);
}

TEST(EpTest, UnusedSlotsGoNowhereAndAddNothing) {
  // A top-p router's ids: rank 0's token keeps experts 6 and 0 and leaves
  // its last slot unused (-1); rank 1's token keeps expert 5 only. With
  // identity experts each token comes back as its row times the weights
  // of its used slots; the unused slots' weights (NaN here) are never
  // read. Without unused_slots the -1 is refused on every rank.
  std::vector<std::vector<float>> out(2);
  std::vector<ep::Dispatched> got(2);
  const float nan = std::nanf("");
  std::vector<std::string> errors = onRanks(2, [&](ep::Communicator &comm) {
    const int r = comm.rank();
    std::vector<float> hidden{2.0f + float(r), -1.0f};
    std::vector<int32_t> ids = r == 0 ? std::vector<int32_t>{6, 0, -1}
                                      : std::vector<int32_t>{5, -1, -1};
    std::vector<float> weights = r == 0 ? std::vector<float>{0.5f, 0.25f, nan}
                                        : std::vector<float>{2.0f, nan, nan};
    got[r] = ep::dispatch(comm, std::as_bytes(std::span<const float>(hidden)),
                          ep::RowType::F32, 2, ids, 1, 3,
                          ep::ExpertPlacement::contiguous(8, 2),
                          /*unusedSlots=*/true);
    std::vector<std::byte> combined =
        ep::combine(comm, got[r].handle, got[r].rows, weights);
    out[r].resize(2);
    std::memcpy(out[r].data(), combined.data(), 8);
  });
  EXPECT_EQ(errors, (std::vector<std::string>{"", ""}));
  EXPECT_EQ(out[0], (std::vector<float>{2.0f * 0.75f, -0.75f}));
  EXPECT_EQ(out[1], (std::vector<float>{3.0f * 2.0f, -2.0f}));
  // Rank 0 holds expert 0 (rank 0's token), rank 1 experts 5 and 6.
  EXPECT_EQ(got[0].expertOffsets, (std::vector<int64_t>{0, 1, 1, 1, 1}));
  EXPECT_EQ(got[1].expertOffsets, (std::vector<int64_t>{0, 0, 1, 2, 2}));

  errors = onRanks(2, [&](ep::Communicator &comm) {
    std::vector<float> hidden{1.0f, 1.0f};
    std::vector<int32_t> ids{1, -1, 2};
    ep::dispatch(comm, std::as_bytes(std::span<const float>(hidden)),
                 ep::RowType::F32, 2, ids, 1, 3,
                 ep::ExpertPlacement::contiguous(8, 2));
  });
  EXPECT_NE(errors[0], "");
  EXPECT_EQ(errors[0], errors[1]);
  EXPECT_NE(errors[0].find("ids[0][1] = -1 is outside [0, 8)"),
            std::string::npos)
      << errors[0];
  // The gather of a top-p router's forced ids keeps the -1 slots.
  std::vector<std::vector<int32_t>> gathered(2);
  errors = onRanks(2, [&](ep::Communicator &comm) {
    std::vector<int32_t> ids{comm.rank(), -1};
    gathered[comm.rank()] =
        ep::allGatherForcedIds(comm, ids, 1, 2, 8, /*unusedSlots=*/true);
  });
  EXPECT_EQ(errors, (std::vector<std::string>{"", ""}));
  EXPECT_EQ(gathered[1], (std::vector<int32_t>{0, -1, 1, -1}));
}

TEST(EpTest, Bf16RowsAreSummedInF32) {
  // One token of 1.0 (bf16), identity experts, weights 256, 1, -256: in
  // fp32 the sum in slot order is 1; a bf16 accumulator would round
  // 256 + 1 to 256 and give 0.
  std::vector<std::string> errors = onRanks(1, [](ep::Communicator &comm) {
    std::vector<uint16_t> hidden = {0x3f80}; // 1.0
    ep::Dispatched d = ep::dispatch(
        comm, std::as_bytes(std::span<const uint16_t>(hidden)),
        ep::RowType::BF16, 1, std::vector<int32_t>{0, 1, 2}, 1, 3,
        ep::ExpertPlacement::contiguous(4, 1));
    std::vector<float> weights = {256.0f, 1.0f, -256.0f};
    std::vector<std::byte> out = ep::combine(comm, d.handle, d.rows, weights);
    uint16_t bits;
    std::memcpy(&bits, out.data(), 2);
    EXPECT_EQ(bits, 0x3f80);
  });
  EXPECT_EQ(errors[0], "");
}

TEST(EpTest, BadDispatchArgumentsFailEveryRank) {
  ep::ExpertPlacement placement = ep::ExpertPlacement::contiguous(8, 2);
  expectEveryRank(
      onRanks(2,
              [&](ep::Communicator &comm) {
                std::vector<float> hidden(4, 1.0f);
                std::vector<int32_t> ids = {0, comm.rank() == 1 ? 9 : 1};
                ep::dispatch(comm, std::as_bytes(std::span<const float>(hidden)),
                             ep::RowType::F32, 4, ids, 1, 2, placement);
              }),
      "dispatch: rank 1: ids[0][1] = 9 is outside [0, 8)");
  expectEveryRank(
      onRanks(2,
              [&](ep::Communicator &comm) {
                std::vector<float> hidden(comm.rank() == 0 ? 3 : 4, 1.0f);
                ep::dispatch(comm, std::as_bytes(std::span<const float>(hidden)),
                             ep::RowType::F32, 4, std::vector<int32_t>{0, 1},
                             1, 2, placement);
              }),
      "dispatch: rank 0: hidden: 12 bytes are not [1, 4] rows of 16 bytes");
  std::vector<std::string> errors = onRanks(2, [&](ep::Communicator &comm) {
    ep::ExpertPlacement mine = placement;
    if (comm.rank() == 1)
      std::swap(mine.rankOfExpert[0], mine.rankOfExpert[7]);
    ep::dispatch(comm, {}, ep::RowType::F32, 4, {}, 0, 2, mine);
  });
  for (const std::string &e : errors)
    EXPECT_EQ(e.rfind("InvalidArgument: dispatch: rank 1: placement = ", 0), 0u)
        << e;
  EXPECT_THROW(ep::ExpertPlacement::contiguous(6, 4), Error);
}

TEST(EpTest, HostBuffersOnADeviceCommunicatorGoThroughTheHostForms) {
  // A device communicator (NCCL) stages host buffers: the EP operations
  // must call allGatherHost / allToAllVHost, never the device forms (the
  // stand-in fails the test if they do), and give the host result.
  std::vector<std::string> errors = onRanks(
      3,
      [](ep::Communicator &comm) {
        std::vector<int32_t> all = ep::allGatherForcedIds(
            comm, idsOf(comm.rank()), comm.rank(), 2, 8);
        EXPECT_EQ(all.size(), size_t(2 * (0 + 1 + 2)));
        EXPECT_GT(static_cast<ThreadCommunicator &>(comm).hostCalls, 0);
      },
      ep::MemorySpace::CudaDevice);
  for (const std::string &e : errors)
    EXPECT_EQ(e, "");
  std::vector<std::vector<float>> out =
      moeLayer(2, false, &errors, ep::MemorySpace::CudaDevice);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(errors[r], "") << "rank " << r;
    EXPECT_EQ(out[r], singleRank(r, false)) << "rank " << r;
  }
}

} // namespace
