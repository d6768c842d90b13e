//===- PermuteCombineTest.cpp - permute and combine against the reference -===//
//
// The permute and combine kernels of the CPU backend, and of the NVPTX
// backend on the GPU emulator where it is built, against the golden
// reference, bit for bit: permute copies rows, and combine's f32
// fused-multiply-add chain in slot order is the contract (semantics.md).
// Rows of f32, bf16 and f16; hidden sizes that leave a tail chunk or none;
// token counts from 0 up, with the routing and dispatch of the same backend
// feeding them. Bad indices give the reference's message; bad calls one
// line each; and an identity expert gives each token times the sum of its
// weights.
//
//===----------------------------------------------------------------------===//

#include "compiler/spec/SpecParser.h"
#include "tests/golden/GoldenRouter.h"
#include "tests/unit/RoutingTestInputs.h"
#include "tests/unit/TestRouters.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <random>

namespace {

using namespace moegen;

/// Rows as bytes of the spec's hidden type.
std::vector<uint8_t> encode(const std::vector<float> &values,
                            LogitsDType dtype) {
  const size_t bytes = dtype == LogitsDType::F32 ? 4 : 2;
  std::vector<uint8_t> out(std::max<size_t>(1, values.size() * bytes));
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == LogitsDType::F32) {
      std::memcpy(&out[i * 4], &values[i], 4);
      continue;
    }
    uint16_t bits = dtype == LogitsDType::BF16 ? npy::floatToBf16(values[i])
                                               : npy::floatToHalf(values[i]);
    std::memcpy(&out[i * 2], &bits, 2);
  }
  return out;
}

std::vector<float> decode(const std::vector<uint8_t> &bytes, size_t count,
                          LogitsDType dtype) {
  std::vector<float> out(count);
  for (size_t i = 0; i < count; ++i) {
    if (dtype == LogitsDType::F32) {
      std::memcpy(&out[i], &bytes[i * 4], 4);
      continue;
    }
    uint16_t bits;
    std::memcpy(&bits, &bytes[i * 2], 2);
    out[i] = dtype == LogitsDType::BF16 ? npy::bf16ToFloat(bits)
                                        : npy::halfToFloat(bits);
  }
  return out;
}

/// Random values that the hidden type holds exactly.
std::vector<float> randomRows(size_t count, LogitsDType dtype,
                              std::mt19937 &rng) {
  std::normal_distribution<float> normal(0.0f, 1.5f);
  std::vector<float> values(count);
  for (float &v : values)
    v = normal(rng);
  return decode(encode(values, dtype), count, dtype);
}

RoutingSpec withPermute(const std::string &templateName, LogitsDType hidden) {
  std::string error;
  auto spec = parseRoutingSpecFile(std::string(MOEGEN_SOURCE_DIR) +
                                       "/templates/" + templateName + ".yaml",
                                   error);
  EXPECT_TRUE(spec) << error;
  RoutingSpec out = spec ? *spec : RoutingSpec{};
  out.dispatch = true;
  out.permute = true;
  out.hiddenDType = hidden;
  return out;
}

/// Routing and dispatch of T tokens on `router`: weights, sorted slots and
/// slot positions.
struct Routed {
  std::vector<int32_t> ids, counts, offsets, sortedSlots, slotPositions;
  std::vector<float> weights;
};

Routed routeTokens(rt::HostRouter &router, const RoutingSpec &spec,
                   int64_t tokens, uint32_t seed) {
  const int64_t e = spec.numExperts, slots = tokens * spec.topK;
  routingtest::Inputs in = routingtest::makeInputs(spec, tokens, seed);
  Routed out;
  out.ids.resize(std::max<int64_t>(1, slots));
  out.weights.resize(std::max<int64_t>(1, slots));
  out.counts.resize(e);
  out.offsets.resize(e + 1);
  out.sortedSlots.resize(std::max<int64_t>(1, slots));
  out.slotPositions.resize(std::max<int64_t>(1, slots));
  rt::HostRouteCall call;
  call.numTokens = tokens;
  call.logits = in.logits.data();
  if (spec.selection == Selection::Hash) {
    call.tokenIds = in.tokenIds.empty() ? out.ids.data() : in.tokenIds.data();
    call.hashTable = in.hashTable.data();
    call.hashVocab = in.vocab;
  } else if (spec.scoreBias) {
    call.bias = in.bias.data();
  }
  std::vector<uint8_t> capture;
  if (spec.capture) {
    capture.assign(std::max<int64_t>(1, slots) * 4, 0);
    call.captureBuffer = capture.data();
    call.captureLayers = 1;
  }
  call.topkIds = out.ids.data();
  call.topkWeights = out.weights.data();
  call.expertCounts = out.counts.data();
  call.expertOffsets = out.offsets.data();
  call.sortedSlots = out.sortedSlots.data();
  call.slotPositions = out.slotPositions.data();
  EXPECT_EQ(router.run(call), "");
  return out;
}

std::string callPermute(rt::HostRouter &router, int64_t tokens, int64_t hidden,
                        const std::vector<uint8_t> &rows,
                        const std::vector<int32_t> &sortedSlots,
                        std::vector<uint8_t> &permuted) {
  rt::HostPermuteCall call;
  call.numTokens = tokens;
  call.hiddenSize = hidden;
  call.hidden = rows.data();
  call.sortedSlots = sortedSlots.data();
  call.permuted = permuted.data();
  return router.permute(call);
}

std::string callCombine(rt::HostRouter &router, int64_t tokens, int64_t hidden,
                        const std::vector<float> &weights,
                        const std::vector<int32_t> &slotPositions,
                        const std::vector<uint8_t> &expertOutput,
                        std::vector<uint8_t> &combined) {
  rt::HostCombineCall call;
  call.numTokens = tokens;
  call.hiddenSize = hidden;
  call.topkWeights = weights.data();
  call.slotPositions = slotPositions.data();
  call.expertOutput = expertOutput.data();
  call.combined = combined.data();
  return router.combine(call);
}

/// Permute and combine on `router` for each (T, H), against the reference.
void checkAgainstReference(rt::HostRouter &router, const RoutingSpec &spec,
                           std::initializer_list<int64_t> tokenCounts,
                           std::initializer_list<int64_t> hiddenSizes) {
  const LogitsDType dtype = spec.hiddenDType;
  const size_t bytes = dtype == LogitsDType::F32 ? 4 : 2;
  const int64_t k = spec.topK;
  std::mt19937 rng(7);
  for (int64_t tokens : tokenCounts) {
    Routed routed = routeTokens(router, spec, tokens, uint32_t(tokens) + 3);
    for (int64_t hidden : hiddenSizes) {
      SCOPED_TRACE("T = " + std::to_string(tokens) +
                   ", H = " + std::to_string(hidden));
      const size_t slotElems = size_t(tokens * k * hidden);
      const size_t tokenElems = size_t(tokens * hidden);

      // Permute: a bit-exact copy.
      std::vector<float> rows = randomRows(tokenElems, dtype, rng);
      std::vector<float> wantPermuted;
      ASSERT_EQ(golden::permute(tokens, k, hidden, rows, routed.sortedSlots,
                                wantPermuted),
                "");
      std::vector<uint8_t> permuted(std::max<size_t>(1, slotElems * bytes));
      ASSERT_EQ(callPermute(router, tokens, hidden, encode(rows, dtype),
                            routed.sortedSlots, permuted),
                "");
      EXPECT_EQ(permuted, encode(wantPermuted, dtype));

      // Combine of arbitrary expert outputs: the reference's f32 bits,
      // rounded once.
      std::vector<float> outputs = randomRows(slotElems, dtype, rng);
      std::vector<float> wantCombined;
      ASSERT_EQ(golden::combine(tokens, k, hidden, routed.weights,
                                routed.slotPositions, outputs, wantCombined),
                "");
      std::vector<uint8_t> combined(std::max<size_t>(1, tokenElems * bytes));
      ASSERT_EQ(callCombine(router, tokens, hidden, routed.weights,
                            routed.slotPositions, encode(outputs, dtype),
                            combined),
                "");
      EXPECT_EQ(combined, encode(wantCombined, dtype));

      // Identity experts: permute then combine gives each token times the
      // sum of its weights (within the row type's rounding).
      std::vector<uint8_t> roundTrip(std::max<size_t>(1, tokenElems * bytes));
      ASSERT_EQ(callCombine(router, tokens, hidden, routed.weights,
                            routed.slotPositions, permuted, roundTrip),
                "");
      std::vector<float> back = decode(roundTrip, tokenElems, dtype);
      const double unit = dtype == LogitsDType::F32    ? 1e-6
                          : dtype == LogitsDType::BF16 ? 1.0 / 128
                                                       : 1.0 / 1024;
      for (int64_t t = 0; t < tokens; ++t) {
        double sum = 0;
        for (int64_t j = 0; j < k; ++j)
          sum += routed.weights[t * k + j];
        for (int64_t h = 0; h < hidden; ++h) {
          const double want = double(rows[t * hidden + h]) * sum;
          ASSERT_NEAR(back[t * hidden + h], want,
                      unit * std::abs(want) + 1e-6)
              << "token " << t << ", element " << h;
        }
      }
    }
  }
}

/// Bad indices and calls on `router`: the reference's messages.
void checkBadInput(rt::HostRouter &router, const RoutingSpec &spec) {
  const int64_t tokens = 5, hidden = 9, k = spec.topK;
  const size_t bytes = spec.hiddenDType == LogitsDType::F32 ? 4 : 2;
  Routed routed = routeTokens(router, spec, tokens, 11);
  std::vector<uint8_t> rows(size_t(tokens * hidden) * bytes, 0);
  std::vector<uint8_t> slotRows(size_t(tokens * k * hidden) * bytes, 0);
  std::vector<uint8_t> permuted(slotRows.size()), combined(rows.size());
  std::vector<float> unused;

  // Two bad entries: the lower index is reported, as the reference does.
  std::vector<int32_t> slots = routed.sortedSlots;
  slots[size_t(3 * k + 1)] = int32_t(tokens * k);
  slots[size_t(4 * k)] = -1;
  std::string want =
      golden::permute(tokens, k, hidden, std::vector<float>(tokens * hidden),
                      slots, unused);
  EXPECT_EQ(want, "sorted_slots[" + std::to_string(3 * k + 1) + "] = " +
                      std::to_string(tokens * k) + ": outside the slots [0, " +
                      std::to_string(tokens * k) + ")");
  EXPECT_EQ(callPermute(router, tokens, hidden, rows, slots, permuted), want);

  std::vector<int32_t> positions = routed.slotPositions;
  positions[size_t(2 * k)] = std::numeric_limits<int32_t>::min();
  positions[size_t(4 * k)] = int32_t(tokens * k + 7);
  want = golden::combine(tokens, k, hidden, routed.weights, positions,
                         std::vector<float>(tokens * k * hidden), unused);
  EXPECT_NE(want, "");
  EXPECT_EQ(callCombine(router, tokens, hidden, routed.weights, positions,
                        slotRows, combined),
            want);

  // Calls the host refuses before any kernel runs.
  EXPECT_EQ(callPermute(router, tokens, 0, rows, routed.sortedSlots, permuted),
            "hidden_size = 0: must be at least 1");
  EXPECT_EQ(callPermute(router, -1, hidden, rows, routed.sortedSlots, permuted),
            "num_tokens = -1: must not be negative");
  rt::HostCombineCall call;
  call.numTokens = tokens;
  call.hiddenSize = hidden;
  EXPECT_EQ(router.combine(call),
            "topk_weights, slot_positions, expert_output, combined: buffers "
            "required when num_tokens > 0");
  // T = 0 needs no buffers at all.
  call.numTokens = 0;
  EXPECT_EQ(router.combine(call), "");
}


TEST(PermuteCombineTest, CpuMatchesTheReferenceForEveryRowType) {
  for (LogitsDType dtype :
       {LogitsDType::F32, LogitsDType::BF16, LogitsDType::F16}) {
    RoutingSpec spec = withPermute("deepseek-v3", dtype);
    SCOPED_TRACE(std::string(toString(dtype)));
    auto router = routingtest::compileOnCpu(spec);
    ASSERT_TRUE(router);
    checkAgainstReference(*router, spec, {0, 1, 37, 130},
                          {1, 7, 16, 17, 100, 1024});
  }
}

TEST(PermuteCombineTest, CpuMatchesTheReferenceForOtherTemplates) {
  for (const char *name : {"mixtral-8x7b", "deepseek-v4-flash-hash"}) {
    RoutingSpec spec = withPermute(name, LogitsDType::BF16);
    SCOPED_TRACE(name);
    auto router = routingtest::compileOnCpu(spec);
    ASSERT_TRUE(router);
    checkAgainstReference(*router, spec, {1, 65}, {3, 64, 200});
  }
}

TEST(PermuteCombineTest, CpuReportsBadInput) {
  RoutingSpec spec = withPermute("qwen3-30b-a3b", LogitsDType::BF16);
  auto router = routingtest::compileOnCpu(spec);
  ASSERT_TRUE(router);
  checkBadInput(*router, spec);
}

TEST(PermuteCombineTest, SpecsWithoutPermuteRefuseTheCall) {
  RoutingSpec spec = withPermute("mixtral-8x7b", LogitsDType::BF16);
  spec.permute = false;
  auto router = routingtest::compileOnCpu(spec);
  ASSERT_TRUE(router);
  rt::HostPermuteCall call;
  EXPECT_EQ(router->permute(call),
            "permute: the spec has no permute and combine entry points (set "
            "permute: true)");
}

#ifdef MOEGEN_TEST_GPU_EMULATOR

TEST(PermuteCombineTest, EmulatedGpuMatchesTheReference) {
  for (LogitsDType dtype :
       {LogitsDType::F32, LogitsDType::BF16, LogitsDType::F16}) {
    RoutingSpec spec = withPermute("kimi-k2", dtype);
    SCOPED_TRACE(std::string(toString(dtype)));
    auto router = routingtest::compileEmulated(spec);
    ASSERT_TRUE(router);
    // Tokens past a block's four, and rows with and without a tail chunk.
    checkAgainstReference(*router, spec, {0, 1, 9}, {1, 31, 64, 70});
  }
}

TEST(PermuteCombineTest, EmulatedGpuReportsBadInput) {
  RoutingSpec spec = withPermute("qwen3-30b-a3b", LogitsDType::BF16);
  auto router = routingtest::compileEmulated(spec);
  ASSERT_TRUE(router);
  checkBadInput(*router, spec);
}
#endif

} // namespace
