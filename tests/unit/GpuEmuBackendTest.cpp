//===- GpuEmuBackendTest.cpp - NVPTX kernels, emulated, against the CPU ---===//
//
// The NVPTX backend's kernels run on every machine through the GPU emulator
// (compiler/backend/gpuemu): every bundled template and 40 seeded random
// specs (E from 2 to 8192, k up to 64, every scoring, selection, dtype and
// option) on T = 1 and token counts that are not a multiple of the tokens
// per block, against the CPU backend under the rule of GpuBackendTest: ids
// equal except at fp32 near-ties, weights within 1e-5 relative, capture and
// dispatch metadata equal whenever the ids are. Invalid inputs the kernels
// validate give the CPU's message. And the tests can fail: a broken lane
// mapping, dropped warp syncs and shifted shared-memory rows, injected by
// the lowering's test-only option, must each be caught.
//
//===----------------------------------------------------------------------===//

#include "compiler/backend/cpu/CpuHostRouter.h"
#include "compiler/backend/gpuemu/EmuCudaDriver.h"
#include "compiler/backend/gpuemu/GpuEmuRouter.h"
#include "compiler/spec/SpecParser.h"
#include "runtime/Error.h"
#include "tests/unit/RoutingTestInputs.h"
#include "tests/unit/TestRouters.h"
#include "tests/unit/TestSpecs.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <tuple>

namespace {

using namespace moegen;

using routingtest::Inputs;
using routingtest::makeInputs;

struct Outputs {
  std::vector<int32_t> ids;
  std::vector<float> weights;
  std::vector<uint8_t> capture;
  std::vector<int32_t> counts, offsets, slots, positions;
  std::vector<float> sharedGate;
  std::string error;
};

/// One call through the backend-neutral interface both backends share.
Outputs run(rt::HostRouter &router, const RoutingSpec &spec, const Inputs &in,
            bool replay) {
  const int64_t t = in.tokens, e = spec.numExperts, k = spec.topK;
  Outputs out;
  out.ids.resize(std::max<int64_t>(1, t * k));
  out.weights.resize(std::max<int64_t>(1, t * k));
  rt::HostRouteCall call;
  call.numTokens = t;
  call.logits = in.logits.data();
  call.topkIds = out.ids.data();
  call.topkWeights = out.weights.data();
  if (replay) {
    call.forcedIds = in.forcedIds.empty() ? out.ids.data() : in.forcedIds.data();
  } else if (spec.selection == Selection::Hash) {
    call.tokenIds = in.tokenIds.empty() ? out.ids.data() : in.tokenIds.data();
    call.hashTable = in.hashTable.data();
    call.hashVocab = in.vocab;
  } else if (spec.scoreBias) {
    call.bias = in.bias.data();
  }
  if (router.facts().sharedGate) {
    out.sharedGate.resize(std::max<int64_t>(1, t));
    call.sharedGateLogits = in.sharedGateLogits.data();
    call.sharedGate = out.sharedGate.data();
  }
  if (!replay && spec.capture) {
    out.capture.assign(std::max<int64_t>(1, 2 * t * k) *
                           router.facts().captureElementBytes(),
                       0);
    call.captureBuffer = out.capture.data();
    call.captureLayers = 2;
    call.captureLayer = 1;
  }
  if (spec.dispatch) {
    out.counts.resize(e);
    out.offsets.resize(e + 1);
    out.slots.resize(std::max<int64_t>(1, t * k));
    out.positions.resize(std::max<int64_t>(1, t * k));
    call.expertCounts = out.counts.data();
    call.expertOffsets = out.offsets.data();
    call.sortedSlots = out.slots.data();
    call.slotPositions = out.positions.data();
  }
  out.error = router.run(call);
  out.ids.resize(t * k);
  out.weights.resize(t * k);
  if (!out.sharedGate.empty())
    out.sharedGate.resize(t);
  if (spec.dispatch) {
    out.slots.resize(t * k);
    out.positions.resize(t * k);
  }
  return out;
}

/// "" when the emulated outputs match the CPU's under the rule above, else
/// what differs.
std::string difference(const RoutingSpec &spec, const Outputs &emu,
                       const Outputs &cpu) {
  if (emu.error != cpu.error)
    return "error '" + emu.error + "' where the CPU says '" + cpu.error + "'";
  if (!cpu.error.empty())
    return "";
  size_t differing = 0;
  for (size_t i = 0; i < cpu.ids.size(); ++i) {
    // Where the ids differ, the picks must be a near-tie: their weights (the
    // same scores, normalized alike) agree within the tolerance.
    differing += emu.ids[i] != cpu.ids[i];
    float tolerance = 1e-5f * std::max(1.0f, std::fabs(cpu.weights[i]));
    if (!(std::fabs(emu.weights[i] - cpu.weights[i]) <= tolerance))
      return "slot " + std::to_string(i) + ": id " +
             std::to_string(emu.ids[i]) + " weight " +
             std::to_string(emu.weights[i]) + " vs id " +
             std::to_string(cpu.ids[i]) + " weight " +
             std::to_string(cpu.weights[i]);
  }
  // The shared expert's gate: the same sigmoid, approximate on the GPU.
  if (emu.sharedGate.size() != cpu.sharedGate.size())
    return "shared gate of " + std::to_string(emu.sharedGate.size()) +
           " tokens where the CPU has " + std::to_string(cpu.sharedGate.size());
  for (size_t t = 0; t < cpu.sharedGate.size(); ++t)
    if (!(std::fabs(emu.sharedGate[t] - cpu.sharedGate[t]) <=
          1e-5f * std::fabs(cpu.sharedGate[t]) + 1e-30f))
      return "token " + std::to_string(t) + ": shared gate " +
             std::to_string(emu.sharedGate[t]) + " vs " +
             std::to_string(cpu.sharedGate[t]);
  // Ids may differ only at fp32 near-ties of the keys: a few slots at most.
  if (differing > cpu.ids.size() / 1000 + 1)
    return std::to_string(differing) + " of " +
           std::to_string(cpu.ids.size()) + " ids differ";
  if (differing == 0) {
    if (emu.capture != cpu.capture)
      return "capture buffers differ";
    if (emu.counts != cpu.counts || emu.offsets != cpu.offsets ||
        emu.slots != cpu.slots || emu.positions != cpu.positions)
      return "dispatch metadata differs";
  }
  (void)spec;
  return "";
}

std::unique_ptr<rt::HostRouter> emulated(const RoutingSpec &spec,
                                         const std::string &fault = "",
                                         int64_t lanesPerToken = 0,
                                         const std::string &topk = "") {
  gpuemu::GpuEmuOptions options;
  options.injectFault = fault;
  options.nvptx.lanesPerToken = lanesPerToken;
  options.nvptx.topk = topk;
  return routingtest::compileEmulated(spec, options);
}


/// Both backends on T tokens, route (and replay when the spec has it), the
/// GPU kernels with `lanesPerToken` lanes per token (0: the heuristic's).
void check(const RoutingSpec &spec, std::initializer_list<int64_t> tokenCounts,
           uint32_t seed, int64_t lanesPerToken = 0,
           const std::string &topk = "") {
  auto emu = emulated(spec, "", lanesPerToken, topk);
  auto cpu = routingtest::compileOnCpu(spec);
  ASSERT_TRUE(emu && cpu);
  for (int64_t tokens : tokenCounts) {
    SCOPED_TRACE("T = " + std::to_string(tokens));
    Inputs in = makeInputs(spec, tokens, seed + uint32_t(tokens));
    EXPECT_EQ(difference(spec, run(*emu, spec, in, false),
                         run(*cpu, spec, in, false)),
              "");
    if (spec.replay) {
      EXPECT_EQ(difference(spec, run(*emu, spec, in, true),
                           run(*cpu, spec, in, true)),
                "");
    }
  }
}

RoutingSpec templateSpec(const std::string &name) {
  std::string error;
  auto spec = parseRoutingSpecFile(
      std::string(MOEGEN_SOURCE_DIR) + "/templates/" + name + ".yaml", error);
  EXPECT_TRUE(spec) << error;
  return spec ? *spec : RoutingSpec{};
}

TEST(GpuEmuBackendTest, EveryTemplateMatchesTheCpuBackend) {
  for (const auto &file : std::filesystem::directory_iterator(
           std::string(MOEGEN_SOURCE_DIR) + "/templates")) {
    std::string error;
    auto spec = parseRoutingSpecFile(file.path().string(), error);
    ASSERT_TRUE(spec) << error;
    SCOPED_TRACE(spec->name);
    check(*spec, {1, 37, 130}, 1);
  }
}

TEST(GpuEmuBackendTest, RandomSpecsMatchTheCpuBackend) {
  std::mt19937 rng(20261201);
  const int64_t experts[] = {2,   3,   8,   12,  60,   64,   128, 160,
                             256, 384, 512, 1000, 2048, 4096, 8192};
  // Each emulated compile costs seconds under the sanitizers: the first 16
  // specs there (the same sequence), all 40 in the main build.
  const char *sanitized = std::getenv("MOEGEN_SANITIZED");
  const int count = sanitized && *sanitized == '1' ? 16 : 40;
  for (int i = 0; i < count; ++i) {
    int64_t e = experts[rng() % std::size(experts)];
    int64_t k = 1 + rng() % std::min<int64_t>(e, 64);
    std::string text =
        "name: random_" + std::to_string(i) +
        "\nnum_experts: " + std::to_string(e) +
        "\ntop_k: " + std::to_string(k) + "\nscoring: " +
        std::vector<std::string>{"softmax", "sigmoid", "sqrtsoftplus"}[rng() % 3] +
        "\nlogits_dtype: " +
        std::vector<std::string>{"f32", "bf16", "f16"}[rng() % 3] +
        "\nreplay: true\ndispatch: true\n";
    if (rng() % 4 == 0)
      text += "selection: hash\n";
    else if (rng() % 2)
      text += "score_bias: true\n";
    if (rng() % 2)
      text += "normalize: true\n";
    if (rng() % 3 == 0)
      text += "capture: true\n";
    std::string error;
    auto spec = parseRoutingSpec(text, "random", error);
    ASSERT_TRUE(spec) << error << "\n" << text;
    SCOPED_TRACE(text);
    // Few tokens for wide rows: the emulator runs every lane as a fiber.
    int64_t tokens = e >= 2048 ? 3 : 1 + int64_t(rng() % 45);
    check(*spec, {1, tokens}, 100 + i);
  }
}

TEST(GpuEmuBackendTest, NormalizeEpsilonMatchesTheCpuBackend) {
  // The GPU normalizes with one reciprocal of (sum + epsilon): epsilons of
  // 0 (LFM2 without one), 1e-6 and one that changes every weight. (One
  // template: each emulated compile costs seconds under the sanitizers.)
  for (const char *name : {"deepseek-v3"})
    for (double epsilon : {0.0, 1e-6, 0.25}) {
      RoutingSpec spec = templateSpec(name);
      spec.normalizeEpsilon = epsilon;
      SCOPED_TRACE(std::string(name) + ", epsilon " + std::to_string(epsilon));
      check(spec, {1, 37}, 5);
    }
}

TEST(GpuEmuBackendTest, TemperatureAndSoftcapMatchTheCpuBackend) {
  // Softmax, where both change every score.
  for (const char *name : {"qwen3-30b-a3b"})
    for (auto [temperature, softcap] :
         {std::pair{0.5, 0.0}, {1.0, 5.0}, {2.0, 1.0}}) {
      RoutingSpec spec = templateSpec(name);
      spec.temperature = temperature;
      spec.logitSoftcap = softcap;
      SCOPED_TRACE(std::string(name) + ", temperature " +
                   std::to_string(temperature) + ", softcap " +
                   std::to_string(softcap));
      check(spec, {1, 37}, 9);
    }
}

TEST(GpuEmuBackendTest, GatingProgramMatchesTheCpuBackend) {
  // What the keys cannot write, in one program (one emulated compile):
  // two scorings in one kernel, a group mask by max over capped sigmoid
  // keys, and weights scaled before they are normalized.
  std::string error;
  auto spec = parseRoutingSpec(R"(name: emulated_program
num_experts: 96
logits_dtype: bf16
program: |
  route(logits, bias) -> (ids, weights):
    c = group_mask(sigmoid(logits, softcap: 30) + bias, groups: 12, keep: 3, by: max)
    ids = topk(c, 6)
    p = softmax(logits, temperature: 2)
    weights = normalize(scale(gather(p, ids), 0.5), epsilon: 0.25)
  replay(logits, forced_ids) -> (ids, weights):
    ids = forced(forced_ids)
    weights = normalize(gather(sqrtsoftplus(logits), ids))
)",
                               "program", error);
  ASSERT_TRUE(spec) << error;
  check(*spec, {1, 37}, 13);
}

TEST(GpuEmuBackendTest, EveryLanesPerTokenMatchesTheCpuBackend) {
  // Each schedule family, from a token per lane to a token per warp; T = 37
  // leaves segments of the last warp past the last token.
  for (const char *name : {"mixtral-8x7b", "qwen3-30b-a3b", "deepseek-v3",
                           "deepseek-v4-flash-hash"}) {
    RoutingSpec spec = templateSpec(name);
    for (int64_t lanes : {1, 2, 4, 8, 16, 32}) {
      // The heuristic's top-k method (lane lists where a lane holds at
      // most 16 elements, else arg-max passes), and insertion.
      for (const char *topk : {"", "insertion"}) {
        SCOPED_TRACE(std::string(name) + ", " + std::to_string(lanes) +
                     " lanes per token, top-k " + topk);
        check(spec, {1, 37}, 7, lanes, topk);
      }
    }
  }
}

// A route kernel per token bucket (moegen compile --tuning-db): each call
// launches its bucket's schedule, and every schedule routes as the CPU
// does; a hash router's route_hash and a router with replay alike.
TEST(GpuEmuBackendTest, TokenBucketsMatchTheCpuBackend) {
  for (const char *name :
       {"deepseek-v3", "qwen3-30b-a3b", "deepseek-v4-flash-hash"}) {
    SCOPED_TRACE(name);
    RoutingSpec spec = templateSpec(name);
    gpuemu::GpuEmuOptions options;
    options.buckets = {{0, 1, 32, "lane_lists", "bucket 0"},
                       {5, 4, 16, "argmax_passes", "bucket 5"},
                       {30, 32, 2, "insertion", "bucket 30"}};
    auto emu = routingtest::compileEmulated(spec, options);
    auto cpu = routingtest::compileOnCpu(spec);
    ASSERT_TRUE(emu && cpu);
    const rt::CudaRouter *device = gpuemu::emulatedDevice(*emu);
    ASSERT_NE(device, nullptr);
    const rt::EntryKind entry = spec.selection == Selection::Hash
                                    ? rt::EntryKind::RouteHash
                                    : rt::EntryKind::Route;
    const std::string base = device->manifest().find(entry)->symbol;
    for (auto [tokens, symbol, lanes] :
         {std::tuple<int64_t, std::string, int64_t>{1, base, 1},
          {4, base, 1},
          {5, base + "_t5", 4},
          {29, base + "_t5", 4},
          {30, base + "_t30", 32},
          {67, base + "_t30", 32}}) {
      SCOPED_TRACE("T = " + std::to_string(tokens));
      const rt::Kernel *kernel = device->manifest().findFor(entry, tokens);
      ASSERT_NE(kernel, nullptr);
      EXPECT_EQ(kernel->symbol, symbol);
      EXPECT_EQ(kernel->launch.lanesPerToken, lanes);
      Inputs in = makeInputs(spec, tokens, 91 + uint32_t(tokens));
      EXPECT_EQ(difference(spec, run(*emu, spec, in, false),
                           run(*cpu, spec, in, false)),
                "");
      if (spec.replay)
        EXPECT_EQ(difference(spec, run(*emu, spec, in, true),
                             run(*cpu, spec, in, true)),
                  "");
    }
  }
}

TEST(GpuEmuBackendTest, WideRowsMatchTheCpuBackend) {
  // E >= 1024: a warp per token, lane lists streamed above a bound from the
  // lanes' maxima (more than 16 chunks a lane); 16 lanes per token give 64
  // to 256 chunks a lane, and 4 lanes (fewer than k) take the passes.
  const std::vector<std::string> specs = {
      "name: wide_softmax\nnum_experts: 1024\ntop_k: 8\nscoring: softmax\n"
      "normalize: true\ndispatch: true\n",
      "name: wide_groups\nnum_experts: 4096\ntop_k: 8\nscoring: sigmoid\n"
      "score_bias: true\ngroups: 8\ntopk_groups: 3\nnormalize: true\n",
      // Groups of 4 experts: on some tokens fewer than k lanes hold a
      // finite key, and the passes take over.
      "name: wide_narrow_groups\nnum_experts: 1024\ntop_k: 8\n"
      "scoring: sigmoid\ngroups: 256\ntopk_groups: 2\n"};
  for (const std::string &text : specs) {
    std::string error;
    auto spec = parseRoutingSpec(text, "wide", error);
    ASSERT_TRUE(spec) << error;
    // (At 4 lanes, 8 tokens' rows of 4096 experts would pass the shared
    // memory a block may have.)
    for (int64_t lanes : {0, 16, spec->numExperts <= 1024 ? 4 : 0}) {
      SCOPED_TRACE(spec->name + ", " + std::to_string(lanes) +
                   " lanes per token (0: heuristic)");
      check(*spec, {1, 37}, 19, lanes);
    }
  }
}

TEST(GpuEmuBackendTest, WideRowsOfMaskedLogitsMatchTheCpuBackend) {
  // Raw logits as keys keep -inf: rows with fewer finite logits than k
  // have no bound and pick -inf experts by the lower id, on the passes.
  std::string error;
  auto spec = parseRoutingSpec(R"(name: wide_masked
num_experts: 1024
program: |
  route(logits) -> (ids, weights):
    l = identity(logits)
    ids = topk(l, 8)
    weights = gather(softmax(logits), ids)
)",
                               "program", error);
  ASSERT_TRUE(spec) << error;
  auto emu = emulated(*spec);
  auto cpu = routingtest::compileOnCpu(*spec);
  ASSERT_TRUE(emu && cpu);
  Inputs in = makeInputs(*spec, 37, 23);
  std::mt19937 rng(29);
  const float minusInf = -std::numeric_limits<float>::infinity();
  for (int64_t t = 0; t < in.tokens; ++t) {
    const uint32_t finite = t % 10 == 9 ? 1024 : rng() % 16;
    for (int64_t e = 0; e < 1024; ++e)
      if (rng() % 1024 >= finite)
        std::memcpy(&in.logits[(t * 1024 + e) * 4], &minusInf, 4);
  }
  Outputs gpu = run(*emu, *spec, in, false);
  Outputs host = run(*cpu, *spec, in, false);
  EXPECT_EQ(gpu.error, "");
  EXPECT_EQ(gpu.ids, host.ids);
  EXPECT_EQ(difference(*spec, gpu, host), "");
}

TEST(GpuEmuBackendTest, ThousandsOfTokensMatchTheCpuBackend) {
  // Many blocks on several workers, the last one partial (2049 = 512 * 4 + 1).
  check(templateSpec("deepseek-v3"), {2049}, 3);
  check(templateSpec("qwen3-30b-a3b"), {1027}, 4);
}

TEST(GpuEmuBackendTest, InvalidInputsAreReportedLikeTheCpu) {
  RoutingSpec spec = templateSpec("deepseek-v3");
  auto emu = emulated(spec);
  auto cpu = routingtest::compileOnCpu(spec);
  ASSERT_TRUE(emu && cpu);
  Inputs in = makeInputs(spec, 40, 7);
  in.forcedIds[30 * spec.topK + 3] = 999;
  in.forcedIds[17 * spec.topK + 1] = in.forcedIds[17 * spec.topK];
  Outputs expected = run(*cpu, spec, in, true);
  EXPECT_NE(expected.error, "");
  EXPECT_EQ(run(*emu, spec, in, true).error, expected.error);

  Inputs nan = makeInputs(spec, 40, 8);
  float bad = std::nanf("");
  std::memcpy(&nan.logits[(21 * spec.numExperts + 5) * 4], &bad, 4);
  expected = run(*cpu, spec, nan, false);
  EXPECT_NE(expected.error, "");
  EXPECT_EQ(run(*emu, spec, nan, false).error, expected.error);

  RoutingSpec hash = templateSpec("deepseek-v4-flash-hash");
  auto emuHash = emulated(hash);
  auto cpuHash = routingtest::compileOnCpu(hash);
  ASSERT_TRUE(emuHash && cpuHash);
  Inputs ids = makeInputs(hash, 40, 9);
  ids.tokenIds[12] = 500;
  ids.hashTable[3 * hash.topK + 1] = ids.hashTable[3 * hash.topK];
  expected = run(*cpuHash, hash, ids, false);
  EXPECT_NE(expected.error, "");
  EXPECT_EQ(run(*emuHash, hash, ids, false).error, expected.error);

  // The shared expert's gate logits (bf16 bits): NaN and +inf reported at
  // the lowest token, in route and replay alike.
  RoutingSpec qwen2 = templateSpec("qwen2-57b-a14b");
  auto emuGate = emulated(qwen2);
  auto cpuGate = routingtest::compileOnCpu(qwen2);
  ASSERT_TRUE(emuGate && cpuGate);
  Inputs gate = makeInputs(qwen2, 40, 10);
  const uint16_t nanBits = 0x7fc0, infBits = 0x7f80;
  std::memcpy(&gate.sharedGateLogits[33 * 2], &infBits, 2);
  std::memcpy(&gate.sharedGateLogits[19 * 2], &nanBits, 2);
  for (bool replay : {false, true}) {
    expected = run(*cpuGate, qwen2, gate, replay);
    EXPECT_EQ(expected.error, "shared_gate_logits[19][0] is nan: shared gate "
                              "logits must be finite or -inf");
    EXPECT_EQ(run(*emuGate, qwen2, gate, replay).error, expected.error);
  }
}

TEST(GpuEmuBackendTest, ResultsDoNotDependOnTheSchedule) {
  RoutingSpec spec = templateSpec("kimi-k2");
  auto cpu = routingtest::compileOnCpu(spec);
  ASSERT_TRUE(cpu);
  Inputs in = makeInputs(spec, 21, 3);
  Outputs expected = run(*cpu, spec, in, false);
  // Restores the emulator's options however the test ends.
  struct OptionsGuard {
    gpuemu::EmuOptions saved = gpuemu::emuOptions();
    ~OptionsGuard() { gpuemu::setEmuOptions(saved); }
  } guard;
  const gpuemu::EmuOptions &saved = guard.saved;
  for (uint64_t seed : {2u, 3u, 99u}) {
    gpuemu::EmuOptions options = saved;
    options.seed = seed;
    options.workerThreads = 2;
    gpuemu::setEmuOptions(options);
    auto emu = emulated(spec);
    ASSERT_TRUE(emu);
    EXPECT_EQ(difference(spec, run(*emu, spec, in, false), expected), "")
        << "seed " << seed;
  }
}

/// A broken kernel must not pass: its outputs differ from the CPU's, or the
/// emulator stops it with a fault.
std::string verdictOnFault(const std::string &fault) {
  RoutingSpec spec = templateSpec("deepseek-v3");
  auto emu = emulated(spec, fault);
  auto cpu = routingtest::compileOnCpu(spec);
  if (!emu || !cpu)
    return "did not compile";
  Inputs in = makeInputs(spec, 37, 5);
  try {
    std::string diff =
        difference(spec, run(*emu, spec, in, false), run(*cpu, spec, in, false));
    return diff.empty() ? "" : "wrong results: " + diff;
  } catch (const rt::Error &e) {
    return std::string("fault: ") + e.what();
  }
}

TEST(GpuEmuBackendTest, BrokenLaneMappingIsCaught) {
  std::string verdict = verdictOnFault("lane-mapping");
  EXPECT_NE(verdict, "") << "a broken lane mapping went unnoticed";
  std::printf("lane-mapping: %s\n", verdict.c_str());
}

TEST(GpuEmuBackendTest, MissingWarpSyncIsCaughtAsARace) {
  std::string verdict = verdictOnFault("no-warp-sync");
  EXPECT_NE(verdict.find("race"), std::string::npos) << verdict;
}

TEST(GpuEmuBackendTest, ShiftedSharedRowIsCaught) {
  std::string verdict = verdictOnFault("shared-row-offset");
  EXPECT_NE(verdict, "") << "an off-by-one shared-memory row went unnoticed";
  std::printf("shared-row-offset: %s\n", verdict.c_str());
}

} // namespace

//===----------------------------------------------------------------------===//
// The parallel dispatch alone, on ids chosen to stress it
//===----------------------------------------------------------------------===//

struct DispatchResult {
  std::vector<int32_t> counts, offsets, slots, positions;
  std::string error;
  bool operator==(const DispatchResult &) const = default;
};

/// The ABI's order by its definition: a stable counting sort of the slots
/// by expert; out-of-range ids take part in nothing.
DispatchResult referenceDispatch(const std::vector<int32_t> &ids,
                                 int64_t numExperts) {
  DispatchResult r;
  r.counts.assign(numExperts, 0);
  r.offsets.assign(numExperts + 1, 0);
  r.positions.assign(ids.size(), -7);
  for (int32_t id : ids)
    if (id >= 0 && id < numExperts)
      ++r.counts[id];
  for (int64_t e = 0; e < numExperts; ++e)
    r.offsets[e + 1] = r.offsets[e] + r.counts[e];
  r.slots.assign(r.offsets[numExperts], -7);
  std::vector<int32_t> fill(r.offsets.begin(), r.offsets.end() - 1);
  for (size_t s = 0; s < ids.size(); ++s)
    if (ids[s] >= 0 && ids[s] < numExperts) {
      r.slots[fill[ids[s]]] = int32_t(s);
      r.positions[s] = fill[ids[s]]++;
    }
  return r;
}

/// rt::CudaRouter::dispatch on the emulated GPU. Unwritten entries read -7.
DispatchResult emulatedDispatch(const rt::HostRouter &router,
                                const std::vector<int32_t> &ids,
                                int64_t numExperts, int64_t k) {
  const rt::CudaRouter *device = gpuemu::emulatedDevice(router);
  EXPECT_TRUE(device);
  const rt::CudaDriver &driver = device->driver();
  auto buffer = [&](size_t elements) {
    return rt::DeviceBuffer(driver, device->context(),
                            std::max<size_t>(1, elements) * 4);
  };
  const size_t slots = ids.size();
  rt::DeviceBuffer idsBuffer = buffer(slots), counts = buffer(numExperts),
                   offsets = buffer(numExperts + 1), sorted = buffer(slots),
                   positions = buffer(slots);
  std::vector<int32_t> poison(std::max<size_t>(slots, numExperts + 1), -7);
  if (slots)
    idsBuffer.upload(ids.data(), slots * 4, nullptr);
  for (rt::DeviceBuffer *b : {&counts, &offsets, &sorted, &positions})
    b->upload(poison.data(), b->size(), nullptr);
  rt::RouteOutputs out;
  out.expertCounts = counts.get();
  out.expertOffsets = offsets.get();
  out.sortedSlots = sorted.get();
  out.slotPositions = positions.get();
  device->dispatch(idsBuffer.get(), int64_t(slots) / k, out, nullptr);
  DispatchResult r;
  r.error = device->readError(nullptr);
  r.counts.resize(numExperts);
  r.offsets.resize(numExperts + 1);
  r.slots.resize(slots);
  r.positions.resize(slots);
  counts.download(r.counts.data(), numExperts * 4, nullptr);
  offsets.download(r.offsets.data(), (numExperts + 1) * 4, nullptr);
  if (slots) {
    sorted.download(r.slots.data(), slots * 4, nullptr);
    positions.download(r.positions.data(), slots * 4, nullptr);
  }
  // What the reference leaves unwritten, the kernel may too.
  r.slots.resize(std::min<size_t>(slots, size_t(r.offsets.back())));
  return r;
}

RoutingSpec dispatchSpec(int64_t numExperts, int64_t k) {
  std::string error;
  auto spec = parseRoutingSpec(
      "name: dispatch_" + std::to_string(numExperts) +
          "\nnum_experts: " + std::to_string(numExperts) +
          "\ntop_k: " + std::to_string(k) + "\nscoring: softmax\ndispatch: true\n",
      "dispatch", error);
  EXPECT_TRUE(spec) << error;
  return spec ? *spec : RoutingSpec{};
}

TEST(GpuEmuBackendTest, ParallelDispatchIsTheStableCountingSort) {
  struct Case {
    std::string what;
    int64_t experts, k, tokens;
    std::function<int32_t(int64_t slot, std::mt19937 &)> id;
  };
  auto uniform = [](int64_t e) {
    return [e](int64_t, std::mt19937 &rng) { return int32_t(rng() % e); };
  };
  const std::vector<Case> cases = {
      {"no tokens", 256, 8, 0, uniform(256)},
      {"one token", 256, 8, 1, uniform(256)},
      {"T not a multiple of a round", 256, 8, 37, uniform(256)},
      // 16,392 slots: 9 blocks wanted, 4 (the emulated SMs) launched, so
      // each warp walks several rounds.
      {"several blocks and rounds", 256, 8, 2049, uniform(256)},
      {"every slot to one expert", 256, 8, 700,
       [](int64_t, std::mt19937 &) { return 77; }},
      {"odd experts empty", 64, 4, 513,
       [](int64_t, std::mt19937 &rng) { return int32_t(2 * (rng() % 32)); }},
      {"the last expert only", 16, 2, 300,
       [](int64_t, std::mt19937 &) { return 15; }},
      {"E = 8192, T = 1", 8192, 8, 1, uniform(8192)},
      {"E = 8192, many tokens", 8192, 8, 1100, uniform(8192)},
      {"two experts, k = 2", 2, 2, 50, uniform(2)},
  };
  for (const Case &c : cases) {
    SCOPED_TRACE(c.what);
    RoutingSpec spec = dispatchSpec(c.experts, c.k);
    auto emu = emulated(spec);
    ASSERT_TRUE(emu);
    std::mt19937 rng(uint32_t(c.tokens * 31 + c.experts));
    std::vector<int32_t> ids(size_t(c.tokens * c.k));
    for (size_t s = 0; s < ids.size(); ++s)
      ids[s] = c.id(int64_t(s), rng);
    DispatchResult expected = referenceDispatch(ids, c.experts);
    EXPECT_EQ(emulatedDispatch(*emu, ids, c.experts, c.k), expected);
    // A second call reuses the scratch (its barrier and counters).
    EXPECT_EQ(emulatedDispatch(*emu, ids, c.experts, c.k), expected);
  }
}

/// A route kernel with a fused dispatch (docs/kernel-abi.md, "Fused
/// dispatch") serves every call of up to 2,048 slots that dispatches; the
/// route and the dispatch serve the rest, and both forms match the CPU.
TEST(GpuEmuBackendTest, FusedDispatchMatchesTheCpuBackend) {
  auto parse = [](const std::string &text) {
    std::string error;
    auto spec = parseRoutingSpec(text, "fused", error);
    EXPECT_TRUE(spec) << error;
    return spec ? *spec : RoutingSpec{};
  };
  struct Case {
    std::string what;
    RoutingSpec spec;
  };
  const std::vector<Case> cases = {
      {"deepseek-v3 (replay too)", templateSpec("deepseek-v3")},
      {"kimi-k2", templateSpec("kimi-k2")},
      {"deepseek-v4-flash hash route", templateSpec("deepseek-v4-flash-hash")},
      {"top-p and a capacity: unused and dropped slots",
       parse(routingtest::toppCapacitySpec("1.0"))},
      {"token lanes", parse("name: lanes\nnum_experts: 8\ntop_k: 2\n"
                            "scoring: softmax\ndispatch: true\n")},
      // A route of its own kind (a cooperative grid), beside a replay
      // with a fused dispatch in the same scratch buffer.
      {"expert choice", templateSpec("expert-choice-64")},
      {"E = 8192: counters in the scratch buffer",
       parse("name: wide\nnum_experts: 8192\ntop_k: 8\nscoring: softmax\n"
             "dispatch: true\n")},
  };
  for (const Case &c : cases) {
    SCOPED_TRACE(c.what);
    const RoutingSpec &spec = c.spec;
    ASSERT_TRUE(spec.dispatch);
    gpuemu::GpuEmuOptions unfusedOptions;
    unfusedOptions.fusedDispatch = false;
    auto fused = emulated(spec);
    auto unfused = routingtest::compileEmulated(spec, unfusedOptions);
    auto cpu = routingtest::compileOnCpu(spec);
    ASSERT_TRUE(fused && unfused && cpu);
    const rt::CudaRouter *device = gpuemu::emulatedDevice(*fused);
    ASSERT_TRUE(device);
    const rt::EntryKind entry = spec.selection == Selection::Hash
                                    ? rt::EntryKind::RouteHash
                                    : rt::EntryKind::Route;
    // An expert-choice route has none (it is a cooperative grid).
    const bool routeFuses = device->manifest().findFused(entry) != nullptr;
    EXPECT_EQ(routeFuses, c.what != "expert choice");
    const int64_t largest = 2048 / spec.topK;
    EXPECT_FALSE(gpuemu::emulatedDevice(*unfused)->fusesDispatch(entry, 1));
    for (int64_t tokens : {int64_t(1), int64_t(37), largest, largest + 1}) {
      SCOPED_TRACE("T = " + std::to_string(tokens));
      EXPECT_EQ(device->fusesDispatch(entry, tokens),
                routeFuses && tokens <= largest);
      // Two calls on different inputs: the second finds the ticket back at
      // 0 and writes every output again.
      for (uint32_t seed : {11u, 911u}) {
        Inputs in = makeInputs(spec, tokens, seed + uint32_t(tokens));
        const Outputs want = run(*cpu, spec, in, false);
        EXPECT_EQ(difference(spec, run(*fused, spec, in, false), want), "");
        EXPECT_EQ(difference(spec, run(*unfused, spec, in, false), want), "");
        if (spec.replay) {
          EXPECT_EQ(device->fusesDispatch(rt::EntryKind::Replay, tokens),
                    tokens <= largest);
          EXPECT_EQ(difference(spec, run(*fused, spec, in, true),
                               run(*cpu, spec, in, true)),
                    "");
        }
      }
    }
  }
}

/// An expert-choice route that breaks a tie by token leaves its flag set
/// in the router's one scratch buffer; a replay with a fused dispatch
/// after it still finds its ticket at 0 (they are different words).
TEST(GpuEmuBackendTest, FusedReplayAfterAnExpertChoiceTie) {
  RoutingSpec spec = templateSpec("expert-choice-64");
  auto fused = emulated(spec);
  auto cpu = routingtest::compileOnCpu(spec);
  ASSERT_TRUE(fused && cpu);
  ASSERT_TRUE(gpuemu::emulatedDevice(*fused)->fusesDispatch(
      rt::EntryKind::Replay, 37));
  Inputs ties = makeInputs(spec, 64, 3);
  std::fill(ties.logits.begin(), ties.logits.end(), 0);
  EXPECT_EQ(difference(spec, run(*fused, spec, ties, false),
                       run(*cpu, spec, ties, false)),
            "");
  for (uint32_t seed : {5u, 6u, 7u}) {
    Inputs in = makeInputs(spec, 37, seed);
    EXPECT_EQ(difference(spec, run(*fused, spec, in, true),
                         run(*cpu, spec, in, true)),
              "")
        << "seed " << seed;
  }
}

TEST(GpuEmuBackendTest, ParallelDispatchReportsTheFirstBadId) {
  RoutingSpec spec = dispatchSpec(256, 8);
  auto emu = emulated(spec);
  ASSERT_TRUE(emu);
  std::mt19937 rng(5);
  std::vector<int32_t> ids(3000 * 8);
  for (int32_t &id : ids)
    id = int32_t(rng() % 256);
  // Bad ids in different warps and blocks, and two in one token: the first
  // by (token, index) is reported, whichever thread gets there first.
  ids[2900 * 8 + 0] = -1;
  ids[1200 * 8 + 6] = 256;
  ids[1200 * 8 + 2] = 9999;
  ids[2000 * 8 + 1] = 300;
  DispatchResult result = emulatedDispatch(*emu, ids, 256, 8);
  EXPECT_EQ(result.error, "topk_ids[1200][2] = 9999: expert id outside "
                          "[0, 256)");
  // A grid of one block (up to 2,048 slots) waits at block barriers only;
  // bad ids in different warps of it.
  ids.resize(200 * 8);
  ids[150 * 8 + 5] = 512;
  ids[40 * 8 + 3] = -7;
  result = emulatedDispatch(*emu, ids, 256, 8);
  EXPECT_EQ(result.error, "topk_ids[40][3] = -7: expert id outside [0, 256)");
}

TEST(GpuEmuBackendTest, ExactTiesGoToTheLowerIndexLikeTheCpu) {
  // Logits from three values: most keys tie exactly, and every backend
  // must pick the lower expert id among equal keys, with lane lists
  // (sorted for E <= 512 on the GPU, streamed for wider rows) and groups
  // alike.
  const std::vector<std::string> specs = {
      "name: ties_softmax\nnum_experts: 128\ntop_k: 8\nscoring: softmax\n"
      "normalize: true\ndispatch: true\n",
      "name: ties_groups\nnum_experts: 256\ntop_k: 8\nscoring: sigmoid\n"
      "groups: 8\ntopk_groups: 4\nnormalize: true\n",
      "name: ties_wide\nnum_experts: 1024\ntop_k: 6\nscoring: sigmoid\n",
      // 3 groups of one warp-wide chunk: chunked, but not transposed.
      "name: ties_groups3\nnum_experts: 96\ntop_k: 8\nscoring: sigmoid\n"
      "groups: 3\ntopk_groups: 2\n",
      "name: ties_few\nnum_experts: 40\ntop_k: 40\nscoring: softmax\n"};
  for (const std::string &text : specs) {
    std::string error;
    auto spec = parseRoutingSpec(text, "ties", error);
    ASSERT_TRUE(spec) << error;
    SCOPED_TRACE(spec->name);
    auto emu = emulated(*spec);
    auto cpu = routingtest::compileOnCpu(*spec);
    ASSERT_TRUE(emu && cpu);
    Inputs in = makeInputs(*spec, 9, 11);
    std::mt19937 rng(3);
    for (size_t i = 0; i < in.logits.size() / 4; ++i) {
      float value = float(rng() % 3);
      std::memcpy(&in.logits[i * 4], &value, 4);
    }
    Outputs gpu = run(*emu, *spec, in, false);
    Outputs host = run(*cpu, *spec, in, false);
    EXPECT_EQ(gpu.error, "");
    EXPECT_EQ(gpu.ids, host.ids);
    EXPECT_EQ(difference(*spec, gpu, host), "");
  }
}

TEST(GpuEmuBackendTest, GroupedTopKFromTheKeptGroupsMatchesTheMaskedRow) {
  // DeepSeek-V3's top-8 reads only the 4 kept groups' chunks from the keys
  // instead of a row with the other groups at -inf (docs/kernel-abi.md,
  // "Schedule"; exact because every kept key is finite). Rows where most
  // logits are -inf have scores of 0 and keys equal to the bias there, so
  // kept and dropped groups hold many equal and near-equal keys: the picks
  // must still be the CPU's, from a warp per token and from the heuristic's
  // sub-warp segments alike.
  RoutingSpec spec = templateSpec("deepseek-v3");
  for (int64_t lanes : {0, 32}) {
    SCOPED_TRACE(std::to_string(lanes) + " lanes per token (0: heuristic)");
    auto emu = emulated(spec, "", lanes);
    auto cpu = routingtest::compileOnCpu(spec);
    ASSERT_TRUE(emu && cpu);
    Inputs in = makeInputs(spec, 37, 21);
    std::mt19937 rng(8);
    const float minusInf = -std::numeric_limits<float>::infinity();
    for (int64_t t = 0; t < 37; ++t) {
      // Every third token keeps its random row; the others keep only
      // t % 12 finite logits (none for some), the rest -inf.
      if (t % 3 == 0)
        continue;
      for (int64_t e = 0; e < 256; ++e)
        std::memcpy(&in.logits[(t * 256 + e) * 4], &minusInf, 4);
      for (int64_t i = 0; i < t % 12; ++i) {
        float value = float(rng() % 1000) / 100.0f - 5.0f;
        std::memcpy(&in.logits[(t * 256 + rng() % 256) * 4], &value, 4);
      }
    }
    Outputs gpu = run(*emu, spec, in, false);
    Outputs host = run(*cpu, spec, in, false);
    EXPECT_EQ(gpu.error, "");
    EXPECT_EQ(gpu.ids, host.ids);
    EXPECT_EQ(difference(spec, gpu, host), "");
  }
}
