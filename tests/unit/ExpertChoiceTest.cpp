//===- ExpertChoiceTest.cpp - expert-choice selection end to end ----------===//
//
// Gating programs that select with expert_choice(x, k, capacity_factor: f):
// each expert takes the c = ceil(f * T / E) tokens with the largest keys
// (ties to the lower token), and each token lists the experts that took it
// by descending key (ties to the lower expert), at most k, then -1.
// Checked on the CPU backend, and on the NVPTX backend's kernels on the
// GPU emulator where it is built, against the golden reference: route,
// dispatch of the ids (every expert holds c tokens unless a token had more
// than k takers), and the replay of the ids.
//
// Most programs select on identity(logits), so that the kernels and the
// reference compare the very same f32 keys: ties are then exact and
// deliberate (quantized logits, -0 beside +0, -inf), and the radix select
// meets keys that differ only in their low bits. One program selects on
// softmax scores, as the expert-choice paper does.
//
//===----------------------------------------------------------------------===//

#include "compiler/spec/SpecParser.h"
#include "tests/golden/GoldenRouter.h"
#include "tests/unit/TestRouters.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

namespace {

using namespace moegen;

std::string program(const std::string &keys, int64_t experts, int64_t k,
                    const std::string &factor) {
  return "name: expert_choice_test\nnum_experts: " + std::to_string(experts) +
         "\nprogram: |\n"
         "  route(logits) -> (ids, weights):\n"
         "    s = softmax(logits)\n" +
         (keys == "s" ? std::string() : "    c = " + keys + "\n") +
         "    ids = expert_choice(" + (keys == "s" ? "s" : "c") + ", " +
         std::to_string(k) +
         ", capacity_factor: " + factor + ")\n"
         "    weights = gather(s, ids)\n"
         "  replay(logits, forced_ids) -> (ids, weights):\n"
         "    s = softmax(logits)\n"
         "    ids = forced(forced_ids)\n"
         "    weights = gather(s, ids)\n"
         "  dispatch(topk_ids) -> (counts, offsets, sorted_slots, "
         "slot_positions):\n"
         "    counts, offsets, sorted_slots, slot_positions = "
         "dispatch(topk_ids)\n";
}

RoutingSpec parse(const std::string &text) {
  std::string error;
  std::optional<RoutingSpec> spec =
      parseRoutingSpec(text, "expert_choice", error);
  EXPECT_TRUE(spec) << error;
  return spec.value_or(RoutingSpec{});
}

struct Routed {
  std::string error;
  std::vector<int32_t> ids, counts, offsets, sortedSlots, slotPositions;
  std::vector<float> weights;
};

Routed run(rt::HostRouter &router, const RoutingSpec &spec, int64_t tokens,
           const std::vector<float> &logits,
           const std::vector<int32_t> *forced = nullptr) {
  const size_t slots = std::max<size_t>(1, size_t(tokens * spec.topK));
  Routed out;
  out.ids.assign(slots, 12345);
  out.weights.assign(slots, std::nanf(""));
  out.counts.assign(spec.numExperts, 12345);
  out.offsets.assign(spec.numExperts + 1, 12345);
  out.sortedSlots.assign(slots, 12345);
  out.slotPositions.assign(slots, 12345);
  rt::HostRouteCall call;
  call.numTokens = tokens;
  call.logits = logits.empty() ? nullptr : logits.data();
  call.forcedIds = forced ? forced->data() : nullptr;
  call.topkIds = out.ids.data();
  call.topkWeights = out.weights.data();
  call.expertCounts = out.counts.data();
  call.expertOffsets = out.offsets.data();
  call.sortedSlots = out.sortedSlots.data();
  call.slotPositions = out.slotPositions.data();
  out.error = router.run(call);
  const size_t used = size_t(tokens * spec.topK);
  out.ids.resize(used);
  out.weights.resize(used);
  out.sortedSlots.resize(used);
  out.slotPositions.resize(used);
  return out;
}

/// Route, dispatch and replay on `router` against the reference.
void check(rt::HostRouter &router, const RoutingSpec &spec, double factor,
           int64_t tokens, const std::vector<float> &logits,
           const std::string &what) {
  SCOPED_TRACE(what + ", T = " + std::to_string(tokens));
  const int64_t e = spec.numExperts, k = spec.topK;
  Routed routed = run(router, spec, tokens, logits);
  ASSERT_EQ(routed.error, "");
  golden::RouterInputs gin;
  gin.numTokens = tokens;
  gin.logits = logits.data();
  golden::RouterResult gold = golden::route(spec, gin);
  ASSERT_TRUE(gold.ok()) << gold.error;
  ASSERT_EQ(routed.ids, gold.outputs.topkIds);
  for (size_t i = 0; i < routed.weights.size(); ++i)
    ASSERT_NEAR(routed.weights[i], gold.outputs.topkWeights[i],
                1e-6 + 1e-5 * std::fabs(gold.outputs.topkWeights[i]))
        << "slot " << i;

  // Dispatch: the reference's counting sort of the ids; no expert holds
  // more than c tokens.
  golden::RouterOutputs meta;
  ASSERT_EQ(golden::computeDispatch(e, tokens, k, routed.ids, meta,
                                    /*unusedSlots=*/true),
            "");
  EXPECT_EQ(routed.counts, meta.expertCounts);
  EXPECT_EQ(routed.offsets, meta.expertOffsets);
  EXPECT_EQ(routed.sortedSlots, meta.sortedSlots);
  EXPECT_EQ(routed.slotPositions, meta.slotPositions);
  const int64_t c = golden::expertChoiceCapacity(factor, tokens, e);
  for (int32_t count : routed.counts)
    EXPECT_LE(count, c);

  // Replay of the route's own ids (the -1 slots included) gives them back.
  Routed replayed = run(router, spec, tokens, logits, &routed.ids);
  ASSERT_EQ(replayed.error, "");
  EXPECT_EQ(replayed.ids, routed.ids);
  EXPECT_EQ(replayed.weights, routed.weights);
}

/// Logits drawn from `values` (so that keys tie often).
std::vector<float> drawn(int64_t tokens, int64_t experts,
                         const std::vector<float> &values, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<size_t> pick(0, values.size() - 1);
  std::vector<float> logits(size_t(tokens * experts));
  for (float &x : logits)
    x = values[pick(rng)];
  return logits;
}

std::vector<float> quantized() {
  std::vector<float> values;
  for (int i = -8; i <= 8; ++i)
    values.push_back(0.25f * float(i));
  return values;
}

class ExpertChoice : public testing::TestWithParam<bool> {
protected:
  /// The spec's router on the CPU, or on the emulated GPU.
  std::unique_ptr<rt::HostRouter> compile(const RoutingSpec &spec) {
#ifdef MOEGEN_TEST_GPU_EMULATOR
    if (GetParam())
      return routingtest::compileEmulated(spec);
#endif
    return routingtest::compileOnCpu(spec);
  }
};

TEST_P(ExpertChoice, TiedKeysGoToTheLowerTokenThenTheLowerExpert) {
  RoutingSpec spec = parse(program("identity(logits)", 16, 4, "2"));
  auto router = compile(spec);
  ASSERT_TRUE(router);
  for (int64_t tokens : {0, 1, 2, 7, 64, 333})
    check(*router, spec, 2.0, tokens,
          drawn(tokens, 16, quantized(), 7 + uint32_t(tokens)),
          "quantized logits");
}

TEST_P(ExpertChoice, OrdersNegativeZeroInfiniteAndTinyKeys) {
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> values = {-inf,  -3.5f, -1e-30f, -0.0f, 0.0f,
                                     1e-30f, 1e-38f, 2.0f,  -2.0f, 3e38f};
  RoutingSpec spec = parse(program("identity(logits)", 8, 3, "1.5"));
  auto router = compile(spec);
  ASSERT_TRUE(router);
  for (int64_t tokens : {5, 100})
    check(*router, spec, 1.5, tokens, drawn(tokens, 8, values, 3),
          "special keys");
}

TEST_P(ExpertChoice, RadixSelectsKeysThatDifferInTheirLowBits) {
  // Keys 1 + i * ulp: the experts' c-th largest keys differ only in the
  // last digits of the select, and many tokens share the high ones.
  std::vector<float> values;
  for (int i = 0; i < 700; ++i)
    values.push_back(std::nextafter(1.0f, 2.0f) + float(i) * 1.1920929e-7f);
  RoutingSpec spec = parse(program("identity(logits)", 8, 2, "1"));
  auto router = compile(spec);
  ASSERT_TRUE(router);
  check(*router, spec, 1.0, 2000, drawn(2000, 8, values, 11), "near keys");
}

TEST_P(ExpertChoice, CapacityFromOneTokenToTheWholeBatch) {
  // f = 0.01: each expert takes one token; f = E: every expert takes every
  // token, which is top-k of each row.
  for (const char *factor : {"0.01", "0.5", "3", "16"}) {
    RoutingSpec spec = parse(program("identity(logits)", 16, 4, factor));
    auto router = compile(spec);
    ASSERT_TRUE(router);
    check(*router, spec, std::stod(factor), 50, drawn(50, 16, quantized(), 5),
          std::string("capacity_factor ") + factor);
  }
}

TEST_P(ExpertChoice, SoftmaxScoresAsKeys) {
  RoutingSpec spec = parse(program("s", 32, 4, "2"));
  auto router = compile(spec);
  ASSERT_TRUE(router);
  std::mt19937 rng(21);
  std::normal_distribution<float> normal(0.0f, 1.5f);
  std::vector<float> logits(size_t(300 * 32));
  for (float &x : logits)
    x = normal(rng);
  check(*router, spec, 2.0, 300, logits, "softmax keys");
}

TEST_P(ExpertChoice, EachExpertHoldsItsCapacityUnlessATokenOverflows) {
  // With k = E no token overflows: every expert holds exactly c tokens.
  RoutingSpec spec = parse(program("identity(logits)", 8, 8, "2.5"));
  auto router = compile(spec);
  ASSERT_TRUE(router);
  const int64_t tokens = 77;
  Routed routed =
      run(*router, spec, tokens, drawn(tokens, 8, quantized(), 9));
  ASSERT_EQ(routed.error, "");
  const int64_t c = golden::expertChoiceCapacity(2.5, tokens, 8);
  EXPECT_EQ(c, 25);
  for (int32_t count : routed.counts)
    EXPECT_EQ(count, c);
}

TEST_P(ExpertChoice, NonFiniteLogitsAreReported) {
  RoutingSpec spec = parse(program("identity(logits)", 8, 2, "1"));
  auto router = compile(spec);
  ASSERT_TRUE(router);
  std::vector<float> logits = drawn(6, 8, quantized(), 1);
  logits[3 * 8 + 5] = std::nanf("");
  Routed routed = run(*router, spec, 6, logits);
  EXPECT_NE(routed.error.find("logits[3][5]"), std::string::npos)
      << routed.error;
}

INSTANTIATE_TEST_SUITE_P(Backends, ExpertChoice,
#ifdef MOEGEN_TEST_GPU_EMULATOR
                         testing::Values(false, true),
#else
                         testing::Values(false),
#endif
                         [](const testing::TestParamInfo<bool> &info) {
                           return info.param ? "GpuEmulator" : "Cpu";
                         });

} // namespace
