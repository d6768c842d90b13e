//===- UnusedSlotsTest.cpp - top-p routing and capacity end to end --------===//
//
// Slots without an expert row: the unused slots of top-p routing and the
// slots a dispatch capacity drops.
//
// Gating programs that select with topp(x, k, p: P): a token keeps its
// best experts up to the first whose running sum of keys exceeds p, and
// its other slots hold -1. Checked on the CPU backend, and on the NVPTX
// backend's kernels on the GPU emulator where it is built, against the
// golden reference's program interpreter: route, replay of the route's own
// ids (the -1 slots included), dispatch, permute and combine, and the bad
// forced ids and dispatch ids the sentinel must not hide.
//
// The logits are built so that the reference's order is unambiguous (each
// token's logits are a permutation of well-spaced values) and the spacing
// varies per token, so that tokens keep anywhere from 1 to k experts. A
// token whose running sum lands within rounding of p may be cut one slot
// apart on a backend that sums in f32; such tokens are counted, and there
// must be almost none.
//
// Dispatch with a capacity (Switch): each expert keeps its first
// ceil(f * T * k / E) slots in slot order; the dropped ones get position
// -1, which permute and combine skip. Checked on skewed routings (most
// tokens to a few experts) against the reference's counting sort, with
// enough slots for several blocks of the GPU's parallel dispatch.
//
//===----------------------------------------------------------------------===//

#include "compiler/backend/cpu/CpuRouter.h"
#include "compiler/spec/SpecParser.h"
#include "runtime/npy/HalfFloat.h"
#include "tests/golden/GoldenRouter.h"
#include "tests/unit/TestRouters.h"
#include "tests/unit/TestSpecs.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

namespace {

using namespace moegen;
using routingtest::compileOnCpu;
#ifdef MOEGEN_TEST_GPU_EMULATOR
using routingtest::compileEmulated;
#endif

// Softmax scores as keys; top-p over E = 64 with at most 8 experts, and
// every entry point that meets the -1 slots.
constexpr const char *kSoftmaxTopP = R"(name: softmax_topp
num_experts: 64
hidden_dtype: bf16
program: |
  route(logits) -> (ids, weights):
    s = softmax(logits)
    ids = topp(s, 8, p: 0.6)
    weights = normalize(gather(s, ids))
  replay(logits, forced_ids) -> (ids, weights):
    s = softmax(logits)
    ids = forced(forced_ids)
    weights = normalize(gather(s, ids))
  dispatch(topk_ids) -> (counts, offsets, sorted_slots, slot_positions):
    counts, offsets, sorted_slots, slot_positions = dispatch(topk_ids)
  permute(hidden, sorted_slots) -> permuted:
    permuted = permute(hidden, sorted_slots)
  combine(topk_weights, slot_positions, expert_output) -> combined:
    combined = combine(expert_output, slot_positions, topk_weights)
)";

// Grouped, biased sigmoid keys in bf16 (DeepSeek-V3's shape), the cut on
// the masked keys, the weights from the unbiased scores.
constexpr const char *kGroupedTopP = R"(name: grouped_topp
num_experts: 256
logits_dtype: bf16
program: |
  route(logits, bias) -> (ids, weights):
    s = sigmoid(logits)
    c = group_mask(s + bias, groups: 8, keep: 4, by: top2_sum)
    ids = topp(c, 8, p: 0.9)
    weights = scale(normalize(gather(s, ids)), 2.5)
  replay(logits, forced_ids) -> (ids, weights):
    s = sigmoid(logits)
    ids = forced(forced_ids)
    weights = scale(normalize(gather(s, ids)), 2.5)
  dispatch(topk_ids) -> (counts, offsets, sorted_slots, slot_positions):
    counts, offsets, sorted_slots, slot_positions = dispatch(topk_ids)
)";

RoutingSpec parse(const char *text) {
  std::string error;
  std::optional<RoutingSpec> spec = parseRoutingSpec(text, "topp", error);
  EXPECT_TRUE(spec) << error;
  return spec.value_or(RoutingSpec{});
}

/// One call's inputs: logits as floats (already rounded to the logits
/// type) and as the bytes the router reads, and the bias.
struct Inputs {
  int64_t tokens = 0;
  std::vector<float> logits;
  std::vector<uint8_t> logitBytes;
  std::vector<float> bias;
};

/// Each token's logits: a random permutation of offset + spacing * i, the
/// spacing drawn per token (log-uniform), so keys are far apart and the
/// number of experts kept varies. Sigmoid keys get a small spacing to stay
/// off saturation.
Inputs makeInputs(const RoutingSpec &spec, int64_t tokens, uint32_t seed,
                  double minSpacing, double maxSpacing, double minOffset = -1,
                  double maxOffset = 1) {
  const int64_t e = spec.numExperts;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  Inputs in;
  in.tokens = tokens;
  in.logits.resize(size_t(tokens * e));
  std::vector<int> order(e);
  for (int64_t t = 0; t < tokens; ++t) {
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    const double spacing =
        minSpacing * std::pow(maxSpacing / minSpacing, unit(rng));
    const double offset = minOffset + unit(rng) * (maxOffset - minOffset);
    for (int64_t x = 0; x < e; ++x)
      in.logits[t * e + x] =
          float(offset + spacing * (order[x] - 0.5 * double(e)));
  }
  const bool bf16 = spec.logitsDType == LogitsDType::BF16;
  in.logitBytes.resize(std::max<size_t>(1, in.logits.size() * (bf16 ? 2 : 4)));
  for (size_t i = 0; i < in.logits.size(); ++i) {
    if (!bf16) {
      std::memcpy(&in.logitBytes[i * 4], &in.logits[i], 4);
      continue;
    }
    uint16_t bits = npy::floatToBf16(in.logits[i]);
    std::memcpy(&in.logitBytes[i * 2], &bits, 2);
    in.logits[i] = npy::bf16ToFloat(bits);
  }
  for (int64_t x = 0; x < e; ++x)
    in.bias.push_back(0.002f * float((x * 37) % 11));
  return in;
}

struct Routed {
  std::string error;
  std::vector<int32_t> ids, counts, offsets, sortedSlots, slotPositions;
  std::vector<float> weights;
};

/// Route (or replay with `forced`) and dispatch on `router`.
Routed run(rt::HostRouter &router, const RoutingSpec &spec, const Inputs &in,
           const std::vector<int32_t> *forced = nullptr) {
  const int64_t e = spec.numExperts;
  const size_t slots = std::max<size_t>(1, size_t(in.tokens * spec.topK));
  Routed out;
  out.ids.assign(slots, 12345);
  out.weights.assign(slots, std::nanf(""));
  out.counts.assign(e, 12345);
  out.offsets.assign(e + 1, 12345);
  out.sortedSlots.assign(slots, 12345);
  out.slotPositions.assign(slots, 12345);
  rt::HostRouteCall call;
  call.numTokens = in.tokens;
  call.logits = in.logitBytes.data();
  if (forced)
    call.forcedIds = forced->data();
  else if (spec.scoreBias)
    call.bias = in.bias.data();
  call.topkIds = out.ids.data();
  call.topkWeights = out.weights.data();
  call.expertCounts = out.counts.data();
  call.expertOffsets = out.offsets.data();
  call.sortedSlots = out.sortedSlots.data();
  call.slotPositions = out.slotPositions.data();
  out.error = router.run(call);
  out.ids.resize(size_t(in.tokens * spec.topK));
  out.weights.resize(out.ids.size());
  out.sortedSlots.resize(out.ids.size());
  out.slotPositions.resize(out.ids.size());
  return out;
}

golden::RouterResult runGolden(const RoutingSpec &spec, const Inputs &in,
                               const std::vector<int64_t> *forced = nullptr) {
  golden::RouterInputs gin;
  gin.numTokens = in.tokens;
  gin.logits = in.logits.data();
  if (forced)
    gin.forcedIds = forced->data();
  else if (spec.scoreBias)
    gin.bias = in.bias.data();
  return golden::route(spec, gin);
}

/// The reference's keys of token t for the two programs above.
std::vector<double> keysOf(const RoutingSpec &spec, const Inputs &in,
                           int64_t t) {
  RoutingSpec scoring;
  scoring.numExperts = spec.numExperts;
  scoring.scoring = spec.scoreBias ? Scoring::Sigmoid : Scoring::Softmax;
  std::vector<double> keys =
      golden::scoreToken(scoring, in.logits.data() + t * spec.numExperts);
  if (spec.scoreBias)
    for (size_t x = 0; x < keys.size(); ++x)
      keys[x] += in.bias[x];
  return keys;
}

int64_t usedSlots(const int32_t *ids, int64_t k) {
  return std::count_if(ids, ids + k, [](int32_t id) { return id != -1; });
}

/// Route and replay on `router` against the reference; returns the routed
/// outputs for the row-movement checks.
Routed checkRouteAndReplay(rt::HostRouter &router, const RoutingSpec &spec,
                           const Inputs &in, double p) {
  const int64_t k = spec.topK;
  Routed routed = run(router, spec, in);
  EXPECT_EQ(routed.error, "");
  golden::RouterResult gold = runGolden(spec, in);
  EXPECT_TRUE(gold.ok()) << gold.error;
  if (!gold.ok() || !routed.error.empty())
    return routed;

  // Ids: the reference's, except where a running sum is within rounding
  // of p (then the cut may move by one slot) or two keys are (bf16 logits
  // plus a bias may bring two keys within f32 rounding of each other).
  int64_t atTheBoundary = 0, nearTies = 0, mismatches = 0;
  std::vector<int> keptHistogram(k + 1, 0);
  for (int64_t t = 0; t < in.tokens; ++t) {
    const int32_t *got = &routed.ids[t * k];
    const int32_t *want = &gold.outputs.topkIds[t * k];
    ++keptHistogram[usedSlots(got, k)];
    if (std::equal(got, got + k, want)) {
      for (int64_t j = 0; j < k; ++j) {
        const double tolerance =
            1e-5 * std::fabs(gold.outputs.topkWeights[t * k + j]) + 1e-7;
        EXPECT_NEAR(routed.weights[t * k + j],
                    gold.outputs.topkWeights[t * k + j], tolerance)
            << "token " << t << ", slot " << j;
      }
      continue;
    }
    const std::vector<double> keys = keysOf(spec, in, t);
    bool nearP = false;
    double sum = 0;
    for (int64_t j = 0; j < k && want[j] != -1; ++j) {
      sum += keys[want[j]];
      nearP |= std::fabs(sum - p) <= 1e-5 * p;
    }
    const int64_t shorter = std::min(usedSlots(got, k), usedSlots(want, k));
    if (nearP && std::equal(got, got + shorter, want)) {
      ++atTheBoundary;
      continue;
    }
    bool tied = usedSlots(got, k) == usedSlots(want, k);
    for (int64_t j = 0; j < k && tied; ++j)
      tied = got[j] == want[j] ||
             (got[j] != -1 && want[j] != -1 &&
              std::fabs(keys[got[j]] - keys[want[j]]) <=
                  2e-6 * std::fabs(keys[want[j]]));
    if (tied) {
      ++nearTies;
      continue;
    }
    if (++mismatches <= 3)
      ADD_FAILURE() << "token " << t << ": ids differ from the reference "
                    << "(first " << got[0] << " vs " << want[0] << ", "
                    << usedSlots(got, k) << " vs " << usedSlots(want, k)
                    << " used)";
  }
  EXPECT_EQ(mismatches, 0);
  EXPECT_LE(atTheBoundary, 2) << "suspiciously many cuts at the boundary";
  EXPECT_LE(nearTies, std::max<int64_t>(2, in.tokens / 20))
      << "suspiciously many near-ties";
  // The inputs reach every cut: one expert, all k, and some in between.
  EXPECT_GT(keptHistogram[1], 0);
  EXPECT_GT(keptHistogram[k], 0);
  int between = 0;
  for (int64_t n = 2; n < k; ++n)
    between += keptHistogram[n] > 0;
  EXPECT_GE(between, 3);
  EXPECT_EQ(keptHistogram[0], 0) << "a token always keeps its best expert";

  // Dispatch: the reference's metadata of the router's own ids, -1 slots
  // counted nowhere.
  golden::RouterOutputs meta;
  EXPECT_EQ(golden::computeDispatch(spec.numExperts, in.tokens, k, routed.ids,
                                    meta, /*unusedSlots=*/true),
            "");
  EXPECT_EQ(routed.counts, meta.expertCounts);
  EXPECT_EQ(routed.offsets, meta.expertOffsets);
  EXPECT_EQ(routed.sortedSlots, meta.sortedSlots);
  EXPECT_EQ(routed.slotPositions, meta.slotPositions);

  // Replay of the route's own ids, -1 slots included, gives them back with
  // the same weights and metadata.
  std::vector<int64_t> forced64(routed.ids.begin(), routed.ids.end());
  Routed replayed = run(router, spec, in, &routed.ids);
  EXPECT_EQ(replayed.error, "");
  EXPECT_EQ(replayed.ids, routed.ids);
  for (size_t i = 0; i < routed.weights.size(); ++i)
    EXPECT_NEAR(replayed.weights[i], routed.weights[i],
                1e-6 * std::fabs(routed.weights[i]))
        << "slot " << i;
  EXPECT_EQ(replayed.sortedSlots, routed.sortedSlots);
  golden::RouterResult goldReplay = runGolden(spec, in, &forced64);
  EXPECT_TRUE(goldReplay.ok()) << goldReplay.error;
  return routed;
}

/// Bad forced ids: -1 is the only negative id a replay accepts, and two
/// unused slots are not a repeat.
void checkBadForcedIds(rt::HostRouter &router, const RoutingSpec &spec,
                       const Inputs &in, const Routed &routed) {
  const int64_t k = spec.topK, e = spec.numExperts;
  auto replayWith = [&](int64_t slot, int32_t id) {
    std::vector<int32_t> forced = routed.ids;
    forced[size_t(slot)] = id;
    std::vector<int64_t> forced64(forced.begin(), forced.end());
    golden::RouterResult gold = runGolden(spec, in, &forced64);
    Routed got = run(router, spec, in, &forced);
    EXPECT_EQ(got.error, gold.error) << "slot " << slot << " = " << id;
    return got.error;
  };
  EXPECT_EQ(replayWith(2 * k + 1, -2),
            "forced_ids[2][1] = -2: expert id outside [0, " +
                std::to_string(e) + ")");
  EXPECT_EQ(replayWith(k + 3, int32_t(e)),
            "forced_ids[1][3] = " + std::to_string(e) +
                ": expert id outside [0, " + std::to_string(e) + ")");
  // A valid id repeated after an unused slot is still a repeat.
  std::vector<int32_t> forced = routed.ids;
  forced[0] = 5;
  forced[1] = -1;
  forced[2] = 5;
  for (int64_t j = 3; j < k; ++j)
    forced[size_t(j)] = -1;
  Routed got = run(router, spec, in, &forced);
  EXPECT_EQ(got.error, "forced_ids[0][2] = 5: repeats an expert of the same "
                       "token");
  // Only unused slots after the first: accepted.
  forced[2] = -1;
  got = run(router, spec, in, &forced);
  EXPECT_EQ(got.error, "");
  EXPECT_EQ(got.counts[5], std::count(forced.begin(), forced.end(), 5));
}

/// Permute and combine over the routed metadata, bit for bit against the
/// reference: unused positions give rows of zeros and add no term.
void checkRowMovement(rt::HostRouter &router, const RoutingSpec &spec,
                      const Inputs &in, const Routed &routed) {
  const int64_t k = spec.topK, tokens = in.tokens, hidden = 37;
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto bf16Rows = [&](size_t count, std::vector<float> &values) {
    std::vector<uint16_t> bits(std::max<size_t>(1, count));
    values.resize(count);
    for (size_t i = 0; i < count; ++i) {
      bits[i] = npy::floatToBf16(normal(rng));
      values[i] = npy::bf16ToFloat(bits[i]);
    }
    return bits;
  };
  std::vector<float> rows, outputs, wantPermuted, wantCombined;
  std::vector<uint16_t> rowBits = bf16Rows(size_t(tokens * hidden), rows);
  std::vector<uint16_t> outputBits =
      bf16Rows(size_t(tokens * k * hidden), outputs);
  // The unused rows of the expert outputs hold what an expert never
  // wrote: NaN, which combine must not read into any sum.
  for (int64_t p = routed.offsets[spec.numExperts]; p < tokens * k; ++p)
    for (int64_t h = 0; h < hidden; ++h) {
      outputBits[size_t(p * hidden + h)] = 0x7fc0;
      outputs[size_t(p * hidden + h)] = std::nanf("");
    }

  ASSERT_EQ(golden::permute(tokens, k, hidden, rows, routed.sortedSlots,
                            wantPermuted, /*unusedSlots=*/true),
            "");
  std::vector<uint16_t> permuted(size_t(tokens * k * hidden), 0xdead);
  rt::HostPermuteCall permute;
  permute.numTokens = tokens;
  permute.hiddenSize = hidden;
  permute.hidden = rowBits.data();
  permute.sortedSlots = routed.sortedSlots.data();
  permute.permuted = permuted.data();
  ASSERT_EQ(router.permute(permute), "");
  for (size_t i = 0; i < permuted.size(); ++i)
    ASSERT_EQ(permuted[i], npy::floatToBf16(wantPermuted[i])) << "element " << i;

  ASSERT_EQ(golden::combine(tokens, k, hidden, routed.weights,
                            routed.slotPositions, outputs, wantCombined,
                            /*unusedSlots=*/true),
            "");
  std::vector<uint16_t> combined(size_t(tokens * hidden), 0xdead);
  rt::HostCombineCall combine;
  combine.numTokens = tokens;
  combine.hiddenSize = hidden;
  combine.topkWeights = routed.weights.data();
  combine.slotPositions = routed.slotPositions.data();
  combine.expertOutput = outputBits.data();
  combine.combined = combined.data();
  ASSERT_EQ(router.combine(combine), "");
  for (size_t i = 0; i < combined.size(); ++i) {
    ASSERT_FALSE(std::isnan(wantCombined[i])) << "element " << i;
    ASSERT_EQ(combined[i], npy::floatToBf16(wantCombined[i])) << "element " << i;
  }

  // A position of -2 is still out of range.
  std::vector<int32_t> positions = routed.slotPositions;
  positions[3] = -2;
  combine.slotPositions = positions.data();
  EXPECT_EQ(router.combine(combine),
            "slot_positions[3] = -2: outside the permuted rows [0, " +
                std::to_string(tokens * k) + ")");
}


TEST(TopPRouting, ProgramFactsMarkUnusedSlots) {
  EXPECT_TRUE(parse(kSoftmaxTopP).unusedSlots);
  EXPECT_TRUE(parse(kGroupedTopP).unusedSlots);
}

TEST(TopPRouting, CpuSoftmaxMatchesTheReference) {
  RoutingSpec spec = parse(kSoftmaxTopP);
  auto router = compileOnCpu(spec);
  ASSERT_TRUE(router);
  const Inputs in = makeInputs(spec, 301, 11, 0.05, 3.0);
  Routed routed = checkRouteAndReplay(*router, spec, in, 0.6);
  checkBadForcedIds(*router, spec, in, routed);
  checkRowMovement(*router, spec, in, routed);
}

TEST(TopPRouting, CpuGroupedMatchesTheReference) {
  RoutingSpec spec = parse(kGroupedTopP);
  auto router = compileOnCpu(spec);
  ASSERT_TRUE(router);
  const Inputs in = makeInputs(spec, 257, 5, 0.01, 0.2, -5.0, 1.0);
  Routed routed = checkRouteAndReplay(*router, spec, in, 0.9);
  checkBadForcedIds(*router, spec, in, routed);
}

TEST(TopPRouting, EveryTopKMethodCutsAlike) {
  RoutingSpec spec = parse(kSoftmaxTopP);
  const Inputs in = makeInputs(spec, 64, 21, 0.05, 3.0);
  std::vector<int32_t> first;
  for (const char *method :
       {"argmax_passes", "insertion", "lane_lists", "lane_tree"}) {
    SCOPED_TRACE(method);
    cpu::CpuCompileOptions options;
    options.topk = method;
    auto compiled = compileOnCpu(spec, options);
    ASSERT_TRUE(compiled);
    Routed routed = run(*compiled, spec, in);
    ASSERT_EQ(routed.error, "");
    if (first.empty())
      first = routed.ids;
    EXPECT_EQ(routed.ids, first);
  }
}

TEST(TopPRouting, DispatchAcceptsOnlyTheSentinel) {
  RoutingSpec spec = parse(kSoftmaxTopP);
  std::string error;
  auto router = cpu::CpuRouter::compile(spec, {});
  ASSERT_TRUE(bool(router)) << llvm::toString(router.takeError());
  const int64_t tokens = 3, k = spec.topK, e = spec.numExperts;
  std::vector<int32_t> ids(tokens * k, -1);
  ids[0] = 7;
  ids[k] = 7;
  ids[k + 1] = 2;
  ids[2 * k] = 63;
  std::vector<int32_t> counts(e), offsets(e + 1), sorted(tokens * k),
      positions(tokens * k);
  ASSERT_EQ((*router)->dispatch(ids.data(), tokens, counts.data(),
                                offsets.data(), sorted.data(),
                                positions.data()),
            "");
  golden::RouterOutputs want;
  ASSERT_EQ(golden::computeDispatch(e, tokens, k, ids, want, true), "");
  EXPECT_EQ(counts, want.expertCounts);
  EXPECT_EQ(offsets, want.expertOffsets);
  EXPECT_EQ(sorted, want.sortedSlots);
  EXPECT_EQ(positions, want.slotPositions);
  EXPECT_EQ(offsets[e], 4);
  EXPECT_EQ(sorted, (std::vector<int32_t>{k + 1, 0, k, 2 * k, -1, -1, -1, -1,
                                          -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                          -1, -1, -1, -1, -1, -1, -1}));
  ids[5] = -3;
  EXPECT_EQ((*router)->dispatch(ids.data(), tokens, counts.data(),
                                offsets.data(), sorted.data(),
                                positions.data()),
            "topk_ids[0][5] = -3: expert id outside [0, 64)");
}

//===----------------------------------------------------------------------===//
// Capacity
//===----------------------------------------------------------------------===//

// Switch Transformer's router: top-1 of a softmax, its probability as the
// weight, at most 1.25 * T / E tokens per expert.
constexpr const char *kSwitch = R"(name: switch_capacity
num_experts: 16
hidden_dtype: bf16
program: |
  route(logits) -> (ids, weights):
    s = softmax(logits)
    ids = topk(s, 1)
    weights = gather(s, ids)
  dispatch(topk_ids) -> (counts, offsets, sorted_slots, slot_positions):
    counts, offsets, sorted_slots, slot_positions = dispatch(topk_ids, capacity_factor: 1.25)
  permute(hidden, sorted_slots) -> permuted:
    permuted = permute(hidden, sorted_slots)
  combine(topk_weights, slot_positions, expert_output) -> combined:
    combined = combine(expert_output, slot_positions, topk_weights)
)";

// Top-p and a capacity together: unused and dropped slots in one call.
const std::string kToppCapacity = routingtest::toppCapacitySpec("0.5");

/// Logits that send most tokens to the first few experts: a skewed load,
/// so that capacities bind.
Inputs skewedInputs(const RoutingSpec &spec, int64_t tokens, uint32_t seed) {
  Inputs in = makeInputs(spec, tokens, seed, 0.05, 3.0);
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t x = 0; x < 4 && x < spec.numExperts; ++x) {
      float &l = in.logits[t * spec.numExperts + x];
      l += 3.0f + 0.37f * float(x);
      std::memcpy(&in.logitBytes[(t * spec.numExperts + x) * 4], &l, 4);
    }
  return in;
}

/// Route and dispatch on `router`: the metadata is the reference's counting
/// sort with the capacity of the router's own ids, and the capacity binds.
Routed checkCapacity(rt::HostRouter &router, const RoutingSpec &spec,
                     const Inputs &in) {
  Routed routed = run(router, spec, in);
  EXPECT_EQ(routed.error, "");
  golden::RouterOutputs want;
  EXPECT_EQ(golden::computeDispatch(spec.numExperts, in.tokens, spec.topK,
                                    routed.ids, want, spec.unusedSlots,
                                    spec.capacityFactor),
            "");
  EXPECT_EQ(routed.counts, want.expertCounts);
  EXPECT_EQ(routed.offsets, want.expertOffsets);
  EXPECT_EQ(routed.sortedSlots, want.sortedSlots);
  EXPECT_EQ(routed.slotPositions, want.slotPositions);
  const int64_t capacity = golden::dispatchCapacity(
      spec.capacityFactor, in.tokens, spec.topK, spec.numExperts);
  int64_t full = 0, dropped = 0;
  for (int64_t x = 0; x < spec.numExperts; ++x) {
    EXPECT_LE(routed.counts[x], capacity) << "expert " << x;
    full += routed.counts[x] == capacity;
  }
  for (size_t s = 0; s < routed.ids.size(); ++s)
    dropped += routed.ids[s] != -1 && routed.slotPositions[s] == -1;
  EXPECT_GT(full, 0) << "the capacity never binds";
  EXPECT_GT(dropped, 0);
  // The router's own output keeps every chosen id: dropping is dispatch's.
  golden::RouterResult gold = runGolden(spec, in);
  EXPECT_TRUE(gold.ok()) << gold.error;
  return routed;
}

TEST(CapacityDispatch, HandWorkedExample) {
  // T = 4, k = 1, E = 2, factor 1: C = ceil(4 / 2) = 2. Expert 0 keeps
  // slots 0 and 1 and drops slot 2; expert 1 keeps slot 3.
  RoutingSpec spec = parse(R"(name: tiny
num_experts: 2
program: |
  route(logits) -> (ids, weights):
    s = softmax(logits)
    ids = topk(s, 1)
    weights = gather(s, ids)
  dispatch(topk_ids) -> (counts, offsets, sorted_slots, slot_positions):
    counts, offsets, sorted_slots, slot_positions = dispatch(topk_ids, capacity_factor: 1)
)");
  EXPECT_EQ(spec.capacityFactor, 1.0);
  auto router = cpu::CpuRouter::compile(spec, {});
  ASSERT_TRUE(bool(router)) << llvm::toString(router.takeError());
  std::vector<int32_t> ids{0, 0, 0, 1}, counts(2), offsets(3), sorted(4),
      positions(4);
  ASSERT_EQ((*router)->dispatch(ids.data(), 4, counts.data(), offsets.data(),
                                sorted.data(), positions.data()),
            "");
  EXPECT_EQ(counts, (std::vector<int32_t>{2, 1}));
  EXPECT_EQ(offsets, (std::vector<int32_t>{0, 2, 3}));
  EXPECT_EQ(sorted, (std::vector<int32_t>{0, 1, 3, -1}));
  EXPECT_EQ(positions, (std::vector<int32_t>{0, 1, -1, 2}));
  // Without unused slots, -1 is still a bad id.
  ids[1] = -1;
  EXPECT_EQ((*router)->dispatch(ids.data(), 4, counts.data(), offsets.data(),
                                sorted.data(), positions.data()),
            "topk_ids[1][0] = -1: expert id outside [0, 2)");
  EXPECT_EQ(golden::dispatchCapacity(1.25, 100, 1, 16), 8);
  EXPECT_EQ(golden::dispatchCapacity(1e30, 3, 2, 4), 6);
  EXPECT_EQ(golden::dispatchCapacity(1.0, 0, 2, 4), 0);
}

TEST(CapacityDispatch, CpuSwitchMatchesTheReference) {
  RoutingSpec spec = parse(kSwitch);
  EXPECT_FALSE(spec.unusedSlots);
  auto router = compileOnCpu(spec);
  ASSERT_TRUE(router);
  for (int64_t tokens : {0, 1, 7, 300}) {
    SCOPED_TRACE("T = " + std::to_string(tokens));
    const Inputs in = skewedInputs(spec, tokens, uint32_t(tokens) + 1);
    if (tokens < 7) {
      EXPECT_EQ(run(*router, spec, in).error, "");
      continue;
    }
    Routed routed = checkCapacity(*router, spec, in);
    checkRowMovement(*router, spec, in, routed);
  }
}

TEST(CapacityDispatch, CpuTopPWithCapacity) {
  RoutingSpec spec = parse(kToppCapacity.c_str());
  auto router = compileOnCpu(spec);
  ASSERT_TRUE(router);
  checkCapacity(*router, spec, skewedInputs(spec, 200, 9));
}

#ifdef MOEGEN_TEST_GPU_EMULATOR

TEST(TopPRouting, EmulatedGpuSoftmaxMatchesTheReference) {
  RoutingSpec spec = parse(kSoftmaxTopP);
  auto router = compileEmulated(spec);
  ASSERT_TRUE(router);
  const Inputs in = makeInputs(spec, 77, 13, 0.05, 3.0);
  Routed routed = checkRouteAndReplay(*router, spec, in, 0.6);
  checkBadForcedIds(*router, spec, in, routed);
  checkRowMovement(*router, spec, in, routed);
}

TEST(TopPRouting, EmulatedGpuEverySegmentWidthCutsAlike) {
  // The cut is scalar code per token: a token per lane, per 4 lanes and
  // per warp all give the CPU's ids.
  RoutingSpec spec = parse(kSoftmaxTopP);
  auto cpuRouter = compileOnCpu(spec);
  ASSERT_TRUE(cpuRouter);
  const Inputs in = makeInputs(spec, 45, 29, 0.05, 3.0);
  const Routed want = run(*cpuRouter, spec, in);
  ASSERT_EQ(want.error, "");
  for (int64_t lanes : {1, 4, 32}) {
    SCOPED_TRACE("lanes per token " + std::to_string(lanes));
    gpuemu::GpuEmuOptions options;
    options.nvptx.lanesPerToken = lanes;
    auto router = compileEmulated(spec, options);
    ASSERT_TRUE(router);
    Routed got = run(*router, spec, in);
    ASSERT_EQ(got.error, "");
    EXPECT_EQ(got.ids, want.ids);
    EXPECT_EQ(got.sortedSlots, want.sortedSlots);
    EXPECT_EQ(got.slotPositions, want.slotPositions);
  }
}

TEST(CapacityDispatch, EmulatedGpuSwitchMatchesTheReference) {
  RoutingSpec spec = parse(kSwitch);
  auto router = compileEmulated(spec);
  ASSERT_TRUE(router);
  // 5000 slots: three blocks of the parallel dispatch.
  for (int64_t tokens : {7, 5000}) {
    SCOPED_TRACE("T = " + std::to_string(tokens));
    const Inputs in = skewedInputs(spec, tokens, uint32_t(tokens));
    Routed routed = checkCapacity(*router, spec, in);
    if (tokens < 100)
      checkRowMovement(*router, spec, in, routed);
  }
}

TEST(CapacityDispatch, EmulatedGpuTopPWithCapacity) {
  RoutingSpec spec = parse(kToppCapacity.c_str());
  auto router = compileEmulated(spec);
  ASSERT_TRUE(router);
  checkCapacity(*router, spec, skewedInputs(spec, 700, 4));
}

TEST(TopPRouting, EmulatedGpuGroupedMatchesTheReference) {
  RoutingSpec spec = parse(kGroupedTopP);
  auto router = compileEmulated(spec);
  ASSERT_TRUE(router);
  const Inputs in = makeInputs(spec, 45, 17, 0.01, 0.2, -5.0, 1.0);
  checkRouteAndReplay(*router, spec, in, 0.9);
}
#endif

} // namespace
