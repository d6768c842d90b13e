//===- LoadBalanceTest.cpp - update_bias against the reference ------------===//
//
// Auxiliary-loss-free balancing (DeepSeek-V3): the update_bias entry point
// of a gating program moves each expert's selection bias by the rate
// against its load. On the CPU backend, and on the NVPTX kernel (one warp)
// on the GPU emulator where it is built: bit for bit against the golden
// reference on loads that a route + dispatch of the same router produced,
// on hand-made ties with the mean, the lowest bad expert's message, and
// the calls the host refuses. A few steps of route, dispatch and update
// make the load more even.
//
//===----------------------------------------------------------------------===//

#include "compiler/spec/SpecParser.h"
#include "tests/golden/GoldenRouter.h"
#include "tests/unit/TestRouters.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

namespace {

using namespace moegen;
using routingtest::compileOnCpu;

// DeepSeek-V3's router with its balancing step.
constexpr const char *kBalanced = R"(name: balanced
num_experts: 256
program: |
  route(logits, bias) -> (ids, weights):
    s = sigmoid(logits)
    c = group_mask(s + bias, groups: 8, keep: 4, by: top2_sum)
    ids = topk(c, 8)
    weights = scale(normalize(gather(s, ids)), 2.5)
  dispatch(topk_ids) -> (counts, offsets, sorted_slots, slot_positions):
    counts, offsets, sorted_slots, slot_positions = dispatch(topk_ids)
  update_bias(bias, expert_counts) -> updated_bias:
    updated_bias = update_bias(bias, expert_counts, rate: 0.001)
)";

RoutingSpec parse(const char *text) {
  std::string error;
  std::optional<RoutingSpec> spec = parseRoutingSpec(text, "balanced", error);
  EXPECT_TRUE(spec) << error;
  return spec.value_or(RoutingSpec{});
}

std::string update(rt::HostRouter &router, const std::vector<float> &bias,
                   const std::vector<int32_t> &counts,
                   std::vector<float> &updated) {
  updated.assign(bias.size(), std::nanf(""));
  rt::HostUpdateBiasCall call;
  call.bias = bias.data();
  call.expertCounts = counts.data();
  call.updatedBias = updated.data();
  return router.updateBias(call);
}

/// Routes T skewed tokens and returns dispatch's counts.
std::vector<int32_t> loadsOf(rt::HostRouter &router, const RoutingSpec &spec,
                             const std::vector<float> &bias, int64_t tokens,
                             uint32_t seed) {
  const int64_t e = spec.numExperts, k = spec.topK;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> logits(size_t(tokens * e));
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t x = 0; x < e; ++x)
      // Experts with low ids are favoured: a skewed load to balance.
      logits[t * e + x] = normal(rng) + 1.5f * float(x < 32);
  std::vector<int32_t> ids(tokens * k), counts(e), offsets(e + 1),
      sorted(tokens * k), positions(tokens * k);
  std::vector<float> weights(tokens * k);
  rt::HostRouteCall call;
  call.numTokens = tokens;
  call.logits = logits.data();
  call.bias = bias.data();
  call.topkIds = ids.data();
  call.topkWeights = weights.data();
  call.expertCounts = counts.data();
  call.expertOffsets = offsets.data();
  call.sortedSlots = sorted.data();
  call.slotPositions = positions.data();
  EXPECT_EQ(router.run(call), "");
  return counts;
}

void checkAgainstReference(rt::HostRouter &router, const RoutingSpec &spec) {
  ASSERT_TRUE(router.facts().updateBias);
  const int64_t e = spec.numExperts;
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 0.01f);
  std::vector<float> bias(e);
  for (float &b : bias)
    b = normal(rng);
  std::vector<int32_t> counts = loadsOf(router, spec, bias, 300, 5);
  std::vector<float> got, want;
  ASSERT_EQ(golden::updateBias(bias, counts, 0.001, want), "");
  ASSERT_EQ(update(router, bias, counts, got), "");
  for (int64_t x = 0; x < e; ++x)
    ASSERT_EQ(std::memcmp(&got[x], &want[x], 4), 0)
        << "expert " << x << ": " << got[x] << " vs " << want[x];

  // The mean is 300 * 8 / 256 = 9.375: no expert sits on it. With loads
  // whose mean is an integer, one that equals it keeps its bias.
  std::vector<int32_t> even(e, 4);
  even[0] = 8;
  even[1] = 0; // mean still 4
  ASSERT_EQ(update(router, bias, even, got), "");
  EXPECT_EQ(got[0], bias[0] - 0.001f);
  EXPECT_EQ(got[1], bias[1] + 0.001f);
  EXPECT_EQ(got[2], bias[2]);
  // No load at all: nothing moves.
  ASSERT_EQ(update(router, bias, std::vector<int32_t>(e, 0), got), "");
  EXPECT_EQ(got, bias);
  // In place: updated may be the bias itself.
  std::vector<float> inPlace = bias;
  rt::HostUpdateBiasCall call;
  call.bias = inPlace.data();
  call.expertCounts = even.data();
  call.updatedBias = inPlace.data();
  ASSERT_EQ(router.updateBias(call), "");
  EXPECT_EQ(inPlace[0], bias[0] - 0.001f);

  // Bad input: the lowest expert, its bias before its load.
  std::vector<int32_t> negative = counts;
  negative[200] = -4;
  negative[17] = -1;
  std::vector<float> nan = bias;
  nan[17] = std::nanf("");
  nan[90] = INFINITY;
  for (auto [b, c] : {std::pair{&bias, &negative}, {&nan, &counts},
                      {&nan, &negative}}) {
    std::string expected = golden::updateBias(*b, *c, 0.001, want);
    EXPECT_NE(expected, "");
    EXPECT_EQ(update(router, *b, *c, got), expected);
  }
  EXPECT_EQ(update(router, bias, negative, got),
            "expert_counts[17] = -1: a load must not be negative");
  EXPECT_EQ(update(router, nan, counts, got), "bias[17] = nan: must be finite");
  call.expertCounts = nullptr;
  EXPECT_EQ(router.updateBias(call),
            "bias, expert_counts, updated_bias: every buffer is required");
}


TEST(LoadBalance, CpuMatchesTheReference) {
  RoutingSpec spec = parse(kBalanced);
  EXPECT_TRUE(spec.updateBias);
  auto router = compileOnCpu(spec);
  ASSERT_TRUE(router);
  checkAgainstReference(*router, spec);
}

TEST(LoadBalance, StepsEvenTheLoad) {
  // A hundred steps of route, dispatch and update at rate 0.001 bring the
  // favoured experts' load down towards the mean.
  RoutingSpec spec = parse(kBalanced);
  auto router = compileOnCpu(spec);
  ASSERT_TRUE(router);
  std::vector<float> bias(spec.numExperts, 0.0f), next;
  auto spread = [&](const std::vector<int32_t> &counts) {
    auto [lo, hi] = std::minmax_element(counts.begin(), counts.end());
    return *hi - *lo;
  };
  const int32_t before = spread(loadsOf(*router, spec, bias, 512, 1));
  for (int step = 0; step < 100; ++step) {
    std::vector<int32_t> counts =
        loadsOf(*router, spec, bias, 512, uint32_t(step) + 2);
    ASSERT_EQ(update(*router, bias, counts, next), "");
    bias = next;
  }
  const int32_t after = spread(loadsOf(*router, spec, bias, 512, 1));
  EXPECT_LT(after * 2, before) << "spread " << before << " -> " << after;
}

TEST(LoadBalance, RoutersWithoutTheEntryRefuseTheCall) {
  std::string error;
  auto spec = parseRoutingSpecFile(
      std::string(MOEGEN_SOURCE_DIR) + "/templates/deepseek-v3.yaml", error);
  ASSERT_TRUE(spec) << error;
  auto router = compileOnCpu(*spec);
  ASSERT_TRUE(router);
  std::vector<float> bias(256), updated(256);
  std::vector<int32_t> counts(256);
  rt::HostUpdateBiasCall call{bias.data(), counts.data(), updated.data()};
  EXPECT_EQ(router->updateBias(call),
            "bias: the router has no update_bias entry point (a gating "
            "program's update_bias(bias, expert_counts))");
}

#ifdef MOEGEN_TEST_GPU_EMULATOR
TEST(LoadBalance, EmulatedGpuMatchesTheReference) {
  RoutingSpec spec = parse(kBalanced);
  auto router = routingtest::compileEmulated(spec);
  ASSERT_TRUE(router);
  checkAgainstReference(*router, spec);
}
#endif

} // namespace
