//===- GpuEmuRuntimeTest.cpp - The SIMT emulation runtime -------*- C++ -*-===//
//
// Kernels written by hand against the runtime's ABI, as the emulation
// lowering emits them: one function per GPU thread, packed arguments
// (parameters, blockIdx, threadIdx, ctx), a check before every load and
// store, a yield after every atomic. They cover shuffle semantics (width,
// partial warps), warp syncs and barriers, each fault the runtime reports
// (out of bounds, races, deadlocks, livelocks), and that the schedule
// follows the seed.
//
//===----------------------------------------------------------------------===//

#include "compiler/backend/gpuemu/EmuRuntime.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <numeric>
#include <set>

using namespace moegen::gpuemu;

namespace {

/// The packed arguments of a kernel with `Params` parameters.
template <size_t Params> struct KernelArgs {
  explicit KernelArgs(void **args) : args(args) {}
  uint64_t param(size_t i) const { return *static_cast<uint64_t *>(args[i]); }
  template <typename T> T *pointer(size_t i) const {
    return reinterpret_cast<T *>(param(i));
  }
  int64_t block() const { return *static_cast<int64_t *>(args[Params]); }
  int64_t thread() const { return *static_cast<int64_t *>(args[Params + 1]); }
  void *ctx() const { return *static_cast<void **>(args[Params + 2]); }
  int64_t lane() const { return thread() % 32; }
  int64_t warp() const { return thread() / 32; }

  void **args;
};

template <typename T> T load(void *ctx, const T *address, bool isShared) {
  moegen_emu_check_access(ctx, address, sizeof(T), 0, isShared, -1);
  return *address;
}

/// `site` numbers the store instruction, as the lowering does.
template <typename T>
void store(void *ctx, T *address, T value, bool isShared, int32_t site = 0) {
  moegen_emu_check_access(ctx, address, sizeof(T), 1, isShared, site);
  *address = value;
}

float shuffleXor(void *ctx, float value, int32_t offset, int32_t width) {
  return std::bit_cast<float>(moegen_emu_shfl_xor_i32(
      ctx, std::bit_cast<int32_t>(value), offset, width, -1));
}

uint64_t addressOf(const void *pointer) {
  return reinterpret_cast<uint64_t>(pointer);
}

template <typename T>
MemoryRegion regionOf(const std::vector<T> &buffer, const char *name) {
  return {buffer.data(), buffer.size() * sizeof(T), name};
}

LaunchConfig configFor(const char *kernel, int64_t grid, int64_t block,
                       uint64_t seed = 1) {
  LaunchConfig config;
  config.kernel = kernel;
  config.gridDim = grid;
  config.blockDim = block;
  config.seed = seed;
  config.workerThreads = 1;
  return config;
}

/// Every message ends the same way.
void expectSeedSuffix(const std::string &message, uint64_t seed) {
  std::string suffix = "(seed " + std::to_string(seed) +
                       "; MOEGEN_EMU_SEED=" + std::to_string(seed) +
                       " reproduces it)";
  EXPECT_TRUE(message.size() >= suffix.size() &&
              message.compare(message.size() - suffix.size(), suffix.size(),
                              suffix) == 0)
      << message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
}

float inputValue(int64_t block, int64_t thread) {
  return float((block * 7919 + thread * 104729) % 1000) * 0.5f - 100.0f;
}

//===----------------------------------------------------------------------===//
// Shuffles
//===----------------------------------------------------------------------===//

/// out[i] = the max of in[] over i's warp, by a butterfly of five shuffles.
void warpMaxKernel(void **raw) {
  KernelArgs<2> a(raw);
  int64_t blockDim = 128;
  int64_t index = a.block() * blockDim + a.thread();
  float value = load(a.ctx(), a.pointer<float>(0) + index, false);
  for (int32_t offset = 16; offset > 0; offset /= 2)
    value = std::max(value, shuffleXor(a.ctx(), value, offset, 32));
  store(a.ctx(), a.pointer<float>(1) + index, value, false);
}

TEST(GpuEmuRuntime, WarpButterflyMaxOnEveryLaneUnderManySeeds) {
  int64_t grid = 5, block = 128;
  std::vector<float> in(size_t(grid * block)), expected(in.size());
  for (int64_t b = 0; b < grid; ++b)
    for (int64_t t = 0; t < block; ++t)
      in[size_t(b * block + t)] = inputValue(b, t);
  for (size_t warp = 0; warp < in.size() / 32; ++warp) {
    float max =
        *std::max_element(in.begin() + warp * 32, in.begin() + warp * 32 + 32);
    std::fill(expected.begin() + warp * 32, expected.begin() + warp * 32 + 32,
              max);
  }
  for (uint64_t seed : {1, 2, 3, 42, 1000}) {
    for (unsigned workers : {1u, 3u}) {
      std::vector<float> out(in.size(), -1.0f);
      LaunchConfig config = configFor("warp_max", grid, block, seed);
      config.workerThreads = workers;
      config.regions = {regionOf(in, "in"), regionOf(out, "out")};
      EXPECT_EQ(launch(config, &warpMaxKernel,
                       {addressOf(in.data()), addressOf(out.data())}),
                "");
      EXPECT_EQ(out, expected)
          << "seed " << seed << ", " << workers << " workers";
    }
  }
}

/// Sums within segments of 8 lanes, then a shuffle across segments (offset
/// 8 with width 8) that must leave every lane its own value.
void segmentSumKernel(void **raw) {
  KernelArgs<2> a(raw);
  int32_t value = int32_t(a.thread() * a.thread());
  for (int32_t offset = 4; offset > 0; offset /= 2)
    value += moegen_emu_shfl_xor_i32(a.ctx(), value, offset, 8, -1);
  value = moegen_emu_shfl_xor_i32(a.ctx(), value, 8, 8, -1);
  int32_t neighbour = moegen_emu_shfl_xor_i32(a.ctx(), value, 1, 1, -1);
  store(a.ctx(), a.pointer<int32_t>(0) + a.thread(), value, false);
  store(a.ctx(), a.pointer<int32_t>(1) + a.thread(), neighbour, false);
}

TEST(GpuEmuRuntime, ShuffleWidthSplitsTheWarpIntoSegments) {
  std::vector<int32_t> sums(64), neighbours(64);
  LaunchConfig config = configFor("segment_sum", 1, 64);
  config.regions = {regionOf(sums, "sums"), regionOf(neighbours, "nbrs")};
  ASSERT_EQ(launch(config, &segmentSumKernel,
                   {addressOf(sums.data()), addressOf(neighbours.data())}),
            "");
  for (int32_t thread = 0; thread < 64; ++thread) {
    int32_t first = thread & ~7, expected = 0;
    for (int32_t t = first; t < first + 8; ++t)
      expected += t * t;
    EXPECT_EQ(sums[size_t(thread)], expected) << "thread " << thread;
    EXPECT_EQ(neighbours[size_t(thread)], expected) << "width 1";
  }
}

/// Segments of 8 lanes that diverge: segment s runs s + 1 rounds of a
/// butterfly sum and a redux, each over its own member mask, as a tiled
/// kernel whose tokens take different paths does.
void divergentSegmentsKernel(void **raw) {
  KernelArgs<2> a(raw);
  const int32_t lane = int32_t(a.lane());
  const int32_t segment = lane / 8;
  const int32_t mask = int32_t(0xFFu << (8 * segment));
  int32_t value = lane + 1, rounds = 0;
  for (int32_t round = 0; round <= segment; ++round, ++rounds)
    for (int32_t offset = 4; offset > 0; offset /= 2)
      value += moegen_emu_shfl_xor_i32(a.ctx(), value, offset, 8, mask);
  int32_t smallest =
      moegen_emu_redux_i32(a.ctx(), lane, moegen::gpuemu::kReduxMin, mask);
  store(a.ctx(), a.pointer<int32_t>(0) + a.thread(), value, false);
  store(a.ctx(), a.pointer<int32_t>(1) + a.thread(), smallest + 100 * rounds,
        false);
}

TEST(GpuEmuRuntime, SegmentsWithTheirOwnMasksMayDiverge) {
  for (uint64_t seed : {1, 2, 3, 4}) {
    std::vector<int32_t> sums(32), mins(32);
    LaunchConfig config = configFor("divergent_segments", 1, 32, seed);
    config.regions = {regionOf(sums, "sums"), regionOf(mins, "mins")};
    ASSERT_EQ(launch(config, &divergentSegmentsKernel,
                     {addressOf(sums.data()), addressOf(mins.data())}),
              "");
    for (int32_t lane = 0; lane < 32; ++lane) {
      int32_t segment = lane / 8, expected = 0;
      for (int32_t l = segment * 8; l < segment * 8 + 8; ++l)
        expected += l + 1;
      // Each round multiplies the segment's sum by 8.
      for (int32_t round = 0; round < segment; ++round)
        expected *= 8;
      EXPECT_EQ(sums[size_t(lane)], expected) << "lane " << lane;
      EXPECT_EQ(mins[size_t(lane)], segment * 8 + 100 * (segment + 1))
          << "lane " << lane;
    }
  }
}

/// A ballot per segment of 8 lanes, each over its own member mask: lanes
/// whose id is a multiple of 3 vote yes.
void segmentBallotKernel(void **raw) {
  KernelArgs<1> a(raw);
  const int32_t lane = int32_t(a.lane());
  const int32_t mask = int32_t(0xFFu << (8 * (lane / 8)));
  const int32_t ballot =
      moegen_emu_ballot_i32(a.ctx(), lane % 3 == 0 ? 1 : 0, mask);
  store(a.ctx(), a.pointer<int32_t>(0) + a.thread(), ballot, false);
}

TEST(GpuEmuRuntime, BallotHoldsTheBitsOfTheMembersThatVoteYes) {
  std::vector<int32_t> ballots(64);
  LaunchConfig config = configFor("segment_ballot", 1, 64);
  config.regions = {regionOf(ballots, "ballots")};
  ASSERT_EQ(launch(config, &segmentBallotKernel, {addressOf(ballots.data())}),
            "");
  uint32_t yes = 0;
  for (int32_t lane = 0; lane < 32; lane += 3)
    yes |= 1u << lane;
  for (int32_t thread = 0; thread < 64; ++thread)
    EXPECT_EQ(uint32_t(ballots[size_t(thread)]),
              yes & (0xFFu << (8 * ((thread % 32) / 8))))
        << "thread " << thread;
}

/// match.any over the whole warp: each lane holds lane % 5.
void matchAnyKernel(void **raw) {
  KernelArgs<1> a(raw);
  const int32_t lane = int32_t(a.lane());
  store(a.ctx(), a.pointer<int32_t>(0) + a.thread(),
        moegen_emu_match_any_i32(a.ctx(), lane % 5, -1), false);
}

TEST(GpuEmuRuntime, MatchAnyHoldsTheLanesWithTheSameValue) {
  std::vector<int32_t> masks(32);
  LaunchConfig config = configFor("match_any", 1, 32);
  config.regions = {regionOf(masks, "masks")};
  ASSERT_EQ(launch(config, &matchAnyKernel, {addressOf(masks.data())}), "");
  for (int32_t lane = 0; lane < 32; ++lane) {
    uint32_t expected = 0;
    for (int32_t other = lane % 5; other < 32; other += 5)
      expected |= 1u << other;
    EXPECT_EQ(uint32_t(masks[size_t(lane)]), expected) << "lane " << lane;
  }
}

/// Lane 5 names a different member mask than the rest of its segment.
void disagreeingMaskKernel(void **raw) {
  KernelArgs<0> a(raw);
  if (a.lane() >= 8)
    return;
  int32_t mask = a.lane() == 5 ? 0x3F : 0xFF;
  moegen_emu_shfl_xor_i32(a.ctx(), 1, 1, 8, mask);
}

/// A full-width shuffle whose partners lie outside the member mask.
void outsideMaskKernel(void **raw) {
  KernelArgs<0> a(raw);
  if (a.lane() >= 8)
    return;
  moegen_emu_shfl_xor_i32(a.ctx(), 1, 8, 32, 0xFF);
}

TEST(GpuEmuRuntime, MemberMaskMisuseIsAFault) {
  LaunchConfig config = configFor("disagree", 1, 32);
  std::string fault = launch(config, &disagreeingMaskKernel, {});
  EXPECT_NE(fault.find("disagree"), std::string::npos) << fault;
  config = configFor("outside", 1, 32);
  fault = launch(config, &outsideMaskKernel, {});
  EXPECT_NE(fault.find("outside its member mask"), std::string::npos) << fault;
}

/// blockDim 40: warp 1 has lanes 0-7; partners past them do not exist.
void partialWarpKernel(void **raw) {
  KernelArgs<1> a(raw);
  int32_t value = int32_t((a.thread() * 37) % 41);
  for (int32_t offset = 16; offset > 0; offset /= 2)
    value =
        std::max(value, moegen_emu_shfl_xor_i32(a.ctx(), value, offset, 32, -1));
  store(a.ctx(), a.pointer<int32_t>(0) + a.thread(), value, false);
}

TEST(GpuEmuRuntime, PartialLastWarpShufflesAmongItsLanes) {
  std::vector<int32_t> out(40);
  LaunchConfig config = configFor("partial", 1, 40);
  config.regions = {regionOf(out, "out")};
  ASSERT_EQ(launch(config, &partialWarpKernel, {addressOf(out.data())}), "");
  for (int64_t warp = 0; warp < 2; ++warp) {
    int64_t first = warp * 32, last = std::min<int64_t>(first + 32, 40);
    int32_t max = 0;
    for (int64_t t = first; t < last; ++t)
      max = std::max(max, int32_t((t * 37) % 41));
    for (int64_t t = first; t < last; ++t)
      EXPECT_EQ(out[size_t(t)], max) << "thread " << t;
  }
}

void earlyReturnShuffleKernel(void **raw) {
  KernelArgs<0> a(raw);
  if (a.lane() == 3)
    return;
  moegen_emu_shfl_xor_i32(a.ctx(), 1, 1, 32, -1);
}

TEST(GpuEmuRuntime, ShuffleWithReturnedLanesIsAFault) {
  for (uint64_t seed : {1, 2, 3}) {
    std::string fault =
        launch(configFor("early", 1, 32, seed), &earlyReturnShuffleKernel, {});
    EXPECT_NE(fault.find("shuffle by lane"), std::string::npos) << fault;
    EXPECT_NE(fault.find("returned"), std::string::npos) << fault;
    expectSeedSuffix(fault, seed);
  }
}

//===----------------------------------------------------------------------===//
// Shared memory, warp syncs, barriers and races
//===----------------------------------------------------------------------===//

/// Each lane writes its element of the warp's row; with `sync`, a warp sync
/// orders the row before every lane reads all of it.
template <bool Sync> void sharedRowKernel(void **raw) {
  KernelArgs<1> a(raw);
  auto *row =
      static_cast<int32_t *>(moegen_emu_shared_base(a.ctx())) + a.warp() * 32;
  store(a.ctx(), row + a.lane(), int32_t(a.thread() * 3), true);
  if (Sync)
    moegen_emu_warp_sync(a.ctx(), -1);
  // Unsigned: without the sync a lane may read the poisoned pattern.
  uint32_t sum = 0;
  for (int64_t lane = 0; lane < 32; ++lane)
    sum += uint32_t(load(a.ctx(), row + lane, true));
  store(a.ctx(), a.pointer<int32_t>(0) + a.block() * 64 + a.thread(),
        int32_t(sum), false);
}

TEST(GpuEmuRuntime, SharedRowWrittenByLanesAndReadAfterAWarpSync) {
  std::vector<int32_t> out(3 * 64);
  for (uint64_t seed : {1, 7, 99}) {
    LaunchConfig config = configFor("row", 3, 64, seed);
    config.sharedBytes = 64 * 4;
    config.regions = {regionOf(out, "out")};
    ASSERT_EQ(launch(config, &sharedRowKernel<true>, {addressOf(out.data())}),
              "");
    for (int64_t thread = 0; thread < 64; ++thread) {
      int32_t first = int32_t(thread / 32 * 32), expected = 0;
      for (int32_t t = first; t < first + 32; ++t)
        expected += t * 3;
      EXPECT_EQ(out[size_t(128 + thread)], expected);
    }
  }
}

TEST(GpuEmuRuntime, SharedRowWithoutTheWarpSyncIsARace) {
  std::vector<int32_t> out(64);
  for (uint64_t seed : {1, 7, 99}) {
    LaunchConfig config = configFor("row", 1, 64, seed);
    config.sharedBytes = 64 * 4;
    config.regions = {regionOf(out, "out")};
    std::string fault =
        launch(config, &sharedRowKernel<false>, {addressOf(out.data())});
    EXPECT_NE(fault.find("gpu-emu: kernel 'row' block 0 thread "),
              std::string::npos)
        << fault;
    EXPECT_NE(fault.find("shared-memory race on offset "), std::string::npos)
        << fault;
    EXPECT_NE(fault.find("with no barrier or warp sync between them"),
              std::string::npos)
        << fault;
    expectSeedSuffix(fault, seed);

    config.checkRaces = false;
    EXPECT_EQ(launch(config, &sharedRowKernel<false>, {addressOf(out.data())}),
              "");
  }
}

/// A shuffle exchanges registers; it does not order shared memory.
void shuffleInsteadOfSyncKernel(void **raw) {
  KernelArgs<0> a(raw);
  auto *row = static_cast<int32_t *>(moegen_emu_shared_base(a.ctx()));
  store(a.ctx(), row + a.lane(), 1, true);
  moegen_emu_shfl_xor_i32(a.ctx(), 0, 1, 32, -1);
  load(a.ctx(), row + (a.lane() ^ 1), true);
}

TEST(GpuEmuRuntime, AShuffleDoesNotOrderSharedMemory) {
  LaunchConfig config = configFor("shuffle_only", 1, 32);
  config.sharedBytes = 128;
  std::string fault = launch(config, &shuffleInsteadOfSyncKernel, {});
  EXPECT_NE(fault.find("shared-memory race"), std::string::npos) << fault;
}

/// Every lane of every warp stores one word (a warp-wide uniform store, as
/// the NVPTX kernels' scalar code does to shared rows), syncs, reads it.
/// Within a warp that is one store instruction of which one lane wins; across
/// warps (`AllWarps` on one word) it is a race.
template <bool AllWarps> void uniformStoreKernel(void **raw) {
  KernelArgs<0> a(raw);
  auto *row = static_cast<int32_t *>(moegen_emu_shared_base(a.ctx()));
  int32_t *word = row + (AllWarps ? 0 : a.thread() / 32);
  store(a.ctx(), word, 7, true);
  moegen_emu_warp_sync(a.ctx(), -1);
  load(a.ctx(), word, true);
}

/// Two different store instructions to one word by lanes of one warp with no
/// warp sync between them: a race, even though each alone would be a
/// warp-wide store.
void twoStoreSitesKernel(void **raw) {
  KernelArgs<0> a(raw);
  auto *row = static_cast<int32_t *>(moegen_emu_shared_base(a.ctx()));
  store(a.ctx(), row, 7, true, /*site=*/1);
  store(a.ctx(), row, int32_t(a.lane()), true, /*site=*/2);
  moegen_emu_warp_sync(a.ctx(), -1);
}

TEST(GpuEmuRuntime, TwoStoreSitesWithoutAWarpSyncRace) {
  LaunchConfig config = configFor("two_sites", 1, 32);
  config.sharedBytes = 4;
  std::string fault = launch(config, &twoStoreSitesKernel, {});
  EXPECT_NE(fault.find("shared-memory race on offset 0"), std::string::npos)
      << fault;
}

TEST(GpuEmuRuntime, AWarpWideUniformStoreIsNotARaceAcrossWarpsItIs) {
  LaunchConfig config = configFor("uniform", 1, 64);
  config.sharedBytes = 8;
  EXPECT_EQ(launch(config, &uniformStoreKernel<false>, {}), "");
  std::string fault = launch(config, &uniformStoreKernel<true>, {});
  EXPECT_NE(fault.find("shared-memory race on offset 0"), std::string::npos)
      << fault;
}

/// Lanes 0-15 and 16-31 sync separately. Lanes see their own half's row
/// after the sync; `Cross` also reads the other half's, a race.
template <bool Cross> void halfWarpSyncKernel(void **raw) {
  KernelArgs<0> a(raw);
  auto *row = static_cast<int32_t *>(moegen_emu_shared_base(a.ctx()));
  store(a.ctx(), row + a.lane(), int32_t(a.lane()), true);
  bool low = a.lane() < 16;
  moegen_emu_warp_sync(a.ctx(), low ? 0x0000FFFF : int32_t(0xFFFF0000));
  int64_t partner = Cross ? a.lane() ^ 16 : a.lane() ^ 1;
  load(a.ctx(), row + partner, true);
  // A full sync orders everything; afterwards any lane may overwrite.
  moegen_emu_warp_sync(a.ctx(), -1);
  store(a.ctx(), row + (a.lane() ^ 31), int32_t(0), true);
}

TEST(GpuEmuRuntime, PartialMaskWarpSyncsOrderOnlyTheirMembers) {
  LaunchConfig config = configFor("halves", 1, 32);
  config.sharedBytes = 128;
  for (uint64_t seed : {1, 2, 3, 4}) {
    config.seed = seed;
    EXPECT_EQ(launch(config, &halfWarpSyncKernel<false>, {}), "");
    std::string fault = launch(config, &halfWarpSyncKernel<true>, {});
    EXPECT_NE(fault.find("shared-memory race"), std::string::npos) << fault;
  }
}

/// Threads of different warps exchange through shared memory around a
/// barrier; `Barrier` false leaves it out.
template <bool Barrier> void blockExchangeKernel(void **raw) {
  KernelArgs<1> a(raw);
  auto *values = static_cast<float *>(moegen_emu_shared_base(a.ctx()));
  store(a.ctx(), values + a.thread(), float(a.thread()), true);
  if (Barrier)
    moegen_emu_barrier(a.ctx());
  float other = load(a.ctx(), values + (a.thread() + 37) % 128, true);
  if (Barrier)
    moegen_emu_barrier(a.ctx());
  // Many threads read offset 0, nobody writes it again: no race.
  other += load(a.ctx(), values, true);
  store(a.ctx(), a.pointer<float>(0) + a.thread(), other, false);
}

TEST(GpuEmuRuntime, BarrierOrdersSharedMemoryAcrossWarps) {
  std::vector<float> out(128);
  LaunchConfig config = configFor("exchange", 1, 128, 5);
  config.sharedBytes = 128 * 4;
  config.regions = {regionOf(out, "out")};
  ASSERT_EQ(launch(config, &blockExchangeKernel<true>, {addressOf(out.data())}),
            "");
  for (int64_t t = 0; t < 128; ++t)
    EXPECT_EQ(out[size_t(t)], float((t + 37) % 128));
  std::string fault =
      launch(config, &blockExchangeKernel<false>, {addressOf(out.data())});
  EXPECT_NE(fault.find("shared-memory race"), std::string::npos) << fault;
}

/// Atomic adds to one shared counter do not race with each other; a barrier
/// orders them before the read.
void sharedAtomicKernel(void **raw) {
  KernelArgs<1> a(raw);
  auto *counter = static_cast<int32_t *>(moegen_emu_shared_base(a.ctx()));
  if (a.thread() == 0)
    store(a.ctx(), counter, 0, true);
  moegen_emu_barrier(a.ctx());
  moegen_emu_check_access(a.ctx(), counter, 4, 2, true, 1);
  __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
  moegen_emu_yield(a.ctx());
  moegen_emu_barrier(a.ctx());
  if (a.thread() == 5)
    store(a.ctx(), a.pointer<int32_t>(0), load(a.ctx(), counter, true), false);
}

TEST(GpuEmuRuntime, SharedAtomicsDoNotRaceWithEachOther) {
  std::vector<int32_t> out(1);
  LaunchConfig config = configFor("shared_atomic", 2, 96);
  config.sharedBytes = 4;
  config.regions = {regionOf(out, "out")};
  ASSERT_EQ(launch(config, &sharedAtomicKernel, {addressOf(out.data())}), "");
  EXPECT_EQ(out[0], 96);
}

//===----------------------------------------------------------------------===//
// Out-of-bounds accesses
//===----------------------------------------------------------------------===//

/// Thread 37 of block 3 writes one element past the shared rows.
void sharedOverrunKernel(void **raw) {
  KernelArgs<0> a(raw);
  auto *rows = static_cast<int32_t *>(moegen_emu_shared_base(a.ctx()));
  int64_t elements = moegen_emu_shared_bytes(a.ctx()) / 4;
  int64_t index = a.block() == 3 && a.thread() == 37 ? elements : a.thread();
  store(a.ctx(), rows + index, int32_t(1), true);
}

TEST(GpuEmuRuntime, OutOfBoundsSharedWriteIsReported) {
  LaunchConfig config = configFor("route", 6, 64, 42);
  config.sharedBytes = 64 * 4;
  std::string fault = launch(config, &sharedOverrunKernel, {});
  EXPECT_EQ(fault.rfind("gpu-emu: kernel 'route' block 3 thread 37 (warp 1, "
                        "lane 5): out-of-bounds write of 4 bytes at 0x",
                        0),
            0u)
      << fault;
  EXPECT_NE(fault.find(": shared offset 256, shared memory holds 256 bytes "
                       "(seed 42; MOEGEN_EMU_SEED=42 reproduces it)"),
            std::string::npos)
      << fault;
  // The same fault every time (the address aside: shared memory is
  // allocated per launch), and the process carries on.
  auto withoutAddress = [](std::string message) {
    size_t at = message.find(" at 0x");
    return message.erase(at, message.find(':', at) - at);
  };
  EXPECT_EQ(withoutAddress(launch(config, &sharedOverrunKernel, {})),
            withoutAddress(fault));
  config.workerThreads = 4;
  EXPECT_EQ(withoutAddress(launch(config, &sharedOverrunKernel, {})),
            withoutAddress(fault));
}

/// The last thread writes one element past `out`, into memory that exists
/// (the write never happens: the check stops the thread).
void globalOverrunKernel(void **raw) {
  KernelArgs<2> a(raw);
  int64_t count = int64_t(a.param(1));
  int64_t index = a.block() * 32 + a.thread();
  store(a.ctx(), a.pointer<int32_t>(0) + index, int32_t(index), false);
  (void)count;
}

TEST(GpuEmuRuntime, OutOfBoundsGlobalWriteIsReportedAndNeverHappens) {
  std::vector<int32_t> storage(64 + 1, -7);
  LaunchConfig config = configFor("overrun", 2, 32);
  // The kernel covers 64 elements, the argument only holds 63.
  config.regions = {{storage.data(), 63 * sizeof(int32_t), "out"}};
  std::string fault = launch(config, &globalOverrunKernel,
                             {addressOf(storage.data()), uint64_t(63)});
  EXPECT_NE(fault.find("block 1 thread 31 (warp 0, lane 31): out-of-bounds "
                       "write of 4 bytes at 0x"),
            std::string::npos)
      << fault;
  EXPECT_NE(fault.find("not in any argument; nearest: out [0x"),
            std::string::npos)
      << fault;
  expectSeedSuffix(fault, 1);
  EXPECT_EQ(storage[63], -7);
  EXPECT_EQ(storage[64], -7);
}

//===----------------------------------------------------------------------===//
// Atomics, deadlocks and livelocks
//===----------------------------------------------------------------------===//

/// Lane 0 of every warp takes a spin lock and increments a plain counter in
/// two steps with a yield between them (lost updates if the lock failed);
/// the other lanes wait at a warp sync.
void spinLockKernel(void **raw) {
  KernelArgs<2> a(raw);
  auto *lock = a.pointer<int32_t>(0);
  auto *counter = a.pointer<int64_t>(1);
  void *ctx = a.ctx();
  if (a.lane() == 0) {
    for (;;) {
      moegen_emu_check_access(ctx, lock, 4, 2, false, 2);
      bool taken = __atomic_exchange_n(lock, 1, __ATOMIC_ACQUIRE) != 0;
      moegen_emu_yield(ctx);
      if (!taken)
        break;
    }
    int64_t value = load(ctx, counter, false);
    moegen_emu_check_access(ctx, lock, 4, 0, false, 3);
    (void)__atomic_load_n(lock, __ATOMIC_RELAXED);
    moegen_emu_yield(ctx);
    store(ctx, counter, value + 1, false);
    moegen_emu_check_access(ctx, lock, 4, 1, false, 4);
    __atomic_store_n(lock, 0, __ATOMIC_RELEASE);
    moegen_emu_yield(ctx);
  }
  moegen_emu_warp_sync(ctx, -1);
}

TEST(GpuEmuRuntime, SpinLockAcrossWarpsAndBlocksCountsEveryWarp) {
  for (unsigned workers : {1u, 2u, 4u}) {
    for (uint64_t seed : {1, 2, 3}) {
      std::vector<int32_t> lock(1, 0);
      std::vector<int64_t> counter(1, 0);
      LaunchConfig config = configFor("spin", 6, 128, seed);
      config.workerThreads = workers;
      config.regions = {regionOf(lock, "lock"), regionOf(counter, "counter")};
      ASSERT_EQ(launch(config, &spinLockKernel,
                       {addressOf(lock.data()), addressOf(counter.data())}),
                "");
      EXPECT_EQ(counter[0], 6 * 4) << workers << " workers, seed " << seed;
    }
  }
}

void barrierAfterReturnKernel(void **raw) {
  KernelArgs<0> a(raw);
  if (a.thread() == 1)
    return;
  moegen_emu_barrier(a.ctx());
}

TEST(GpuEmuRuntime, BarrierNeverReachedIsAFaultNotAHang) {
  for (uint64_t seed : {1, 2, 3, 4}) {
    std::string fault = launch(configFor("deadlock", 2, 2, seed),
                               &barrierAfterReturnKernel, {});
    EXPECT_NE(fault.find("thread 0 (warp 0, lane 0): barrier not reached by "
                         "thread"),
              std::string::npos)
        << fault;
    expectSeedSuffix(fault, seed);
  }
}

/// Lane 0 waits at a barrier, the others at a shuffle: no one can proceed.
void mixedSyncKernel(void **raw) {
  KernelArgs<0> a(raw);
  if (a.lane() == 0)
    moegen_emu_barrier(a.ctx());
  else
    moegen_emu_shfl_xor_i32(a.ctx(), 0, 1, 32, -1);
}

TEST(GpuEmuRuntime, DeadlockNamesWhatEveryoneWaitsFor) {
  std::string fault = launch(configFor("mixed", 1, 32), &mixedSyncKernel, {});
  EXPECT_NE(fault.find("thread 0 (warp 0, lane 0): deadlock, no thread can "
                       "proceed: thread 0 waits at a barrier; threads 1-31 "
                       "wait at a shuffle"),
            std::string::npos)
      << fault;
}

/// Lane 0 spins on a flag nobody sets.
void livelockKernel(void **raw) {
  KernelArgs<1> a(raw);
  auto *flag = a.pointer<int32_t>(0);
  if (a.thread() != 0)
    return;
  for (;;) {
    moegen_emu_check_access(a.ctx(), flag, 4, 0, false, 5);
    int32_t value = __atomic_load_n(flag, __ATOMIC_ACQUIRE);
    moegen_emu_yield(a.ctx());
    if (value)
      return;
  }
}

TEST(GpuEmuRuntime, SpinningForeverIsALivelock) {
  std::vector<int32_t> flag(1, 0);
  LaunchConfig config = configFor("spin_forever", 1, 32);
  config.regions = {regionOf(flag, "flag")};
  std::string fault = launch(config, &livelockKernel, {addressOf(flag.data())});
  EXPECT_NE(fault.find("block 0 thread 0 (warp 0, lane 0): livelock"),
            std::string::npos)
      << fault;
}

//===----------------------------------------------------------------------===//
// Seeds
//===----------------------------------------------------------------------===//

/// Each thread takes a ticket: the tickets record the schedule.
void ticketKernel(void **raw) {
  KernelArgs<2> a(raw);
  auto *next = a.pointer<int32_t>(0);
  moegen_emu_check_access(a.ctx(), next, 4, 2, false, 6);
  int32_t ticket = __atomic_fetch_add(next, 1, __ATOMIC_RELAXED);
  moegen_emu_yield(a.ctx());
  store(a.ctx(), a.pointer<int32_t>(1) + a.block() * 64 + a.thread(), ticket,
        false);
}

std::vector<int32_t> ticketsUnder(uint64_t seed) {
  std::vector<int32_t> next(1, 0), tickets(4 * 64, -1);
  LaunchConfig config = configFor("tickets", 4, 64, seed);
  config.regions = {regionOf(next, "next"), regionOf(tickets, "tickets")};
  EXPECT_EQ(launch(config, &ticketKernel,
                   {addressOf(next.data()), addressOf(tickets.data())}),
            "");
  return tickets;
}

TEST(GpuEmuRuntime, ScheduleFollowsTheSeed) {
  std::vector<int32_t> first = ticketsUnder(1);
  std::vector<int32_t> sorted = first;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int32_t> all(sorted.size());
  std::iota(all.begin(), all.end(), 0);
  EXPECT_EQ(sorted, all);
  EXPECT_EQ(ticketsUnder(1), first) << "one worker: deterministic";
  std::set<std::vector<int32_t>> schedules;
  for (uint64_t seed = 1; seed <= 5; ++seed)
    schedules.insert(ticketsUnder(seed));
  EXPECT_EQ(schedules.size(), 5u);
  // Not the identity order either: threads really are interleaved.
  EXPECT_NE(first, all);
}

TEST(GpuEmuRuntime, SeedFromEnvironment) {
  const char *saved = std::getenv("MOEGEN_EMU_SEED");
  std::string savedValue = saved ? saved : "";
  unsetenv("MOEGEN_EMU_SEED");
  EXPECT_EQ(seedFromEnvironment(17), 17u);
  setenv("MOEGEN_EMU_SEED", "12345678901234", 1);
  EXPECT_EQ(seedFromEnvironment(17), 12345678901234u);
  setenv("MOEGEN_EMU_SEED", "0", 1);
  EXPECT_EQ(seedFromEnvironment(17), 0u);
  setenv("MOEGEN_EMU_SEED", "12abc", 1);
  EXPECT_EQ(seedFromEnvironment(17), 17u);
  setenv("MOEGEN_EMU_SEED", "", 1);
  EXPECT_EQ(seedFromEnvironment(17), 17u);
  if (saved)
    setenv("MOEGEN_EMU_SEED", savedValue.c_str(), 1);
  else
    unsetenv("MOEGEN_EMU_SEED");
}

TEST(GpuEmuRuntime, InvalidLaunchesAreRejected) {
  EXPECT_NE(launch(configFor("big", 1, 2048), &mixedSyncKernel, {})
                .find("invalid launch: blockDim 2048"),
            std::string::npos);
  EXPECT_EQ(launch(configFor("empty", 0, 32), &mixedSyncKernel, {}), "");
}

} // namespace
