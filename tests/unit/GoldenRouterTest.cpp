//===- GoldenRouterTest.cpp - Hand-computed golden router cases -*- C++ -*-===//
//
// Every expected value below is worked out by hand in the comments, so the
// golden reference is checked against arithmetic, not against itself.
//
//===----------------------------------------------------------------------===//

#include "tests/golden/GoldenRouter.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

using namespace moegen;
using namespace moegen::golden;

namespace {

const float kNegInf = -std::numeric_limits<float>::infinity();
const float kPosInf = std::numeric_limits<float>::infinity();
const float kNaN = std::numeric_limits<float>::quiet_NaN();

/// Float logits are rounded, so values derived from ln(x) are exact to about
/// one float ulp.
constexpr double kFloatTolerance = 1e-6;

RoutingSpec makeSpec(int64_t numExperts, int64_t topK,
                     Scoring scoring = Scoring::Softmax) {
  RoutingSpec spec;
  spec.name = "test";
  spec.numExperts = numExperts;
  spec.topK = topK;
  spec.scoring = scoring;
  return spec;
}

float lnf(double x) { return static_cast<float>(std::log(x)); }

/// Logits whose softmax is {0.1, 0.2, 0.3, 0.4}: exp(ln i) / (1+2+3+4).
std::vector<float> tenthsLogits() { return {0.0f, lnf(2), lnf(3), lnf(4)}; }

RouterInputs inputsFor(const std::vector<float> &logits, int64_t numExperts) {
  RouterInputs in;
  in.numTokens = static_cast<int64_t>(logits.size()) / numExperts;
  in.logits = logits.data();
  return in;
}

void expectWeights(const RouterResult &result,
                   const std::vector<double> &expected,
                   double tolerance = kFloatTolerance) {
  ASSERT_TRUE(result.ok()) << result.error;
  ASSERT_EQ(result.outputs.topkWeights.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i)
    EXPECT_NEAR(result.outputs.topkWeights[i], expected[i], tolerance)
        << "weight " << i;
}

//===----------------------------------------------------------------------===//
// Scoring
//===----------------------------------------------------------------------===//

TEST(GoldenScoring, SoftmaxOfLogLinearLogits) {
  // exp(ln i) = i, so s_i = i / (1 + 2 + 3 + 4).
  std::vector<float> logits = tenthsLogits();
  std::vector<double> s = scoreToken(makeSpec(4, 1), logits.data());
  ASSERT_EQ(s.size(), 4u);
  EXPECT_NEAR(s[0], 0.1, 1e-7);
  EXPECT_NEAR(s[1], 0.2, 1e-7);
  EXPECT_NEAR(s[2], 0.3, 1e-7);
  EXPECT_NEAR(s[3], 0.4, 1e-7);
}

TEST(GoldenScoring, SoftmaxOfHugeLogitsDoesNotOverflow) {
  // exp(1000) overflows; subtracting the max gives exp(0) / (2 exp(0)).
  std::vector<float> logits = {1000.0f, 1000.0f};
  std::vector<double> s = scoreToken(makeSpec(2, 1), logits.data());
  EXPECT_DOUBLE_EQ(s[0], 0.5);
  EXPECT_DOUBLE_EQ(s[1], 0.5);
}

TEST(GoldenScoring, SoftmaxOfMinusInfLogitIsZero) {
  // exp(-inf - 0) = 0, exp(0 - 0) = 1: s = {0, 1, 0}.
  std::vector<float> logits = {kNegInf, 0.0f, kNegInf};
  std::vector<double> s = scoreToken(makeSpec(3, 1), logits.data());
  EXPECT_EQ(s[0], 0.0);
  EXPECT_EQ(s[1], 1.0);
  EXPECT_EQ(s[2], 0.0);
}

TEST(GoldenScoring, SoftmaxOfAllMinusInfIsUniform) {
  // The limit of equal logits: 1/E each, not nan.
  std::vector<float> logits(4, kNegInf);
  std::vector<double> s = scoreToken(makeSpec(4, 1), logits.data());
  for (double v : s)
    EXPECT_DOUBLE_EQ(v, 0.25);
}

TEST(GoldenScoring, SigmoidKnownValues) {
  // sigmoid(0) = 1/2; sigmoid(ln 3) = 1/(1 + 1/3) = 3/4; sigmoid(-inf) = 0;
  // sigmoid(-100) = e^-100 / (1 + e^-100) ~ 3.7200759760208356e-44.
  std::vector<float> logits = {0.0f, lnf(3), kNegInf, -100.0f, 100.0f};
  std::vector<double> s =
      scoreToken(makeSpec(5, 1, Scoring::Sigmoid), logits.data());
  EXPECT_DOUBLE_EQ(s[0], 0.5);
  EXPECT_NEAR(s[1], 0.75, 1e-7);
  EXPECT_EQ(s[2], 0.0);
  EXPECT_NEAR(s[3] / 3.7200759760208356e-44, 1.0, 1e-12);
  EXPECT_DOUBLE_EQ(s[4], 1.0);
}

TEST(GoldenScoring, SqrtSoftplusKnownValues) {
  // softplus(0) = ln 2, so s = sqrt(ln 2) = 0.8325546111576977.
  // Large x: softplus(x) = x + log1p(e^-x) ~ x, s ~ sqrt(x); a naive
  // log(1 + exp(1e6)) would be inf.
  // Very negative x: softplus(x) = log1p(e^x) ~ e^x, s ~ e^(x/2); for x = -50
  // that is e^-25 = 1.3887943864964021e-11 (a naive log(1 + e^-50) is 0).
  // x = -1000 underflows to 0, and -inf gives exactly 0: neither is nan.
  std::vector<float> logits = {0.0f, 1e6f, 100.0f, -50.0f, -1000.0f, kNegInf};
  std::vector<double> s =
      scoreToken(makeSpec(6, 1, Scoring::SqrtSoftplus), logits.data());
  EXPECT_DOUBLE_EQ(s[0], 0.8325546111576977);
  EXPECT_DOUBLE_EQ(s[1], 1000.0);
  EXPECT_NEAR(s[2], 10.0, 1e-12);
  EXPECT_NEAR(s[3] / 1.3887943864964021e-11, 1.0, 1e-9);
  EXPECT_EQ(s[4], 0.0);
  EXPECT_EQ(s[5], 0.0);
}

//===----------------------------------------------------------------------===//
// Top-k selection
//===----------------------------------------------------------------------===//

TEST(GoldenTopK, IdsInDescendingScoreOrder) {
  // Logits 3 > 2.5 > 2 > 0.1 > -1: the top 3 are experts 1, 4, 2.
  std::vector<float> logits = {0.1f, 3.0f, 2.0f, -1.0f, 2.5f};
  RouterResult result = route(makeSpec(5, 3), inputsFor(logits, 5));
  ASSERT_TRUE(result.ok()) << result.error;
  EXPECT_EQ(result.outputs.topkIds, (std::vector<int32_t>{1, 4, 2}));
}

TEST(GoldenTopK, AllEqualLogitsPickLowestIds) {
  std::vector<float> logits(8, 0.5f);
  RouterResult result = route(makeSpec(8, 3), inputsFor(logits, 8));
  ASSERT_TRUE(result.ok()) << result.error;
  EXPECT_EQ(result.outputs.topkIds, (std::vector<int32_t>{0, 1, 2}));
}

TEST(GoldenTopK, TiesGoToLowerIndex) {
  // Experts 1 and 2 tie first, experts 0 and 3 tie second: {1, 2, 0}.
  std::vector<float> logits = {1.0f, 2.0f, 2.0f, 1.0f};
  RouterResult result = route(makeSpec(4, 3), inputsFor(logits, 4));
  ASSERT_TRUE(result.ok()) << result.error;
  EXPECT_EQ(result.outputs.topkIds, (std::vector<int32_t>{1, 2, 0}));
}

TEST(GoldenTopK, MaskedExpertsRankLast) {
  // -inf logits score 0 and lose to every finite logit.
  std::vector<float> logits = {kNegInf, 0.0f, kNegInf, 1.0f};
  RouterResult result = route(makeSpec(4, 2), inputsFor(logits, 4));
  ASSERT_TRUE(result.ok()) << result.error;
  EXPECT_EQ(result.outputs.topkIds, (std::vector<int32_t>{3, 1}));
}

TEST(GoldenTopK, WeightsAreScoresOfSelectedIds) {
  // s = {0.1, 0.2, 0.3, 0.4}; top 2 = {3, 2} with weights {0.4, 0.3}.
  std::vector<float> logits = tenthsLogits();
  RouterResult result = route(makeSpec(4, 2), inputsFor(logits, 4));
  EXPECT_EQ(result.outputs.topkIds, (std::vector<int32_t>{3, 2}));
  expectWeights(result, {0.4, 0.3});
}

TEST(GoldenTopK, EachTokenRoutedIndependently) {
  // Token 0 prefers expert 2, token 1 prefers expert 0.
  std::vector<float> logits = {0.0f, 1.0f, 2.0f, //
                               5.0f, 1.0f, 2.0f};
  RouterResult result = route(makeSpec(3, 1), inputsFor(logits, 3));
  ASSERT_TRUE(result.ok()) << result.error;
  EXPECT_EQ(result.outputs.topkIds, (std::vector<int32_t>{2, 0}));
}

//===----------------------------------------------------------------------===//
// Score bias
//===----------------------------------------------------------------------===//

TEST(GoldenBias, ChangesSelectionButNotWeights) {
  // sigmoid: s = {0.5, 0.5, 0.75, 0.5}. Unbiased top 2 = {2, 0}.
  // Bias {0, 1, 0, 0}: keys {0.5, 1.5, 0.75, 0.5}, top 2 = {1, 2}, but the
  // weights stay the unbiased scores {0.5, 0.75}.
  std::vector<float> logits = {0.0f, 0.0f, lnf(3), 0.0f};
  std::vector<float> bias = {0.0f, 1.0f, 0.0f, 0.0f};
  RoutingSpec spec = makeSpec(4, 2, Scoring::Sigmoid);

  RouterResult unbiased = route(spec, inputsFor(logits, 4));
  ASSERT_TRUE(unbiased.ok()) << unbiased.error;
  EXPECT_EQ(unbiased.outputs.topkIds, (std::vector<int32_t>{2, 0}));

  spec.scoreBias = true;
  RouterInputs in = inputsFor(logits, 4);
  in.bias = bias.data();
  RouterResult biased = route(spec, in);
  EXPECT_EQ(biased.outputs.topkIds, (std::vector<int32_t>{1, 2}));
  expectWeights(biased, {0.5, 0.75});
}

TEST(GoldenBias, IgnoredWithoutScoreBias) {
  // The pointer is set but the spec does not use it: plain top-1 = expert 0.
  std::vector<float> logits = {1.0f, 0.0f};
  std::vector<float> bias = {0.0f, 100.0f};
  RouterInputs in = inputsFor(logits, 2);
  in.bias = bias.data();
  RouterResult result = route(makeSpec(2, 1, Scoring::Sigmoid), in);
  ASSERT_TRUE(result.ok()) << result.error;
  EXPECT_EQ(result.outputs.topkIds, (std::vector<int32_t>{0}));
}

TEST(GoldenBias, SelectionKeysAddPromotedBias) {
  std::vector<float> bias = {0.25f, -0.5f};
  std::vector<double> keys = selectionKeys({0.5, 0.5}, bias.data());
  EXPECT_EQ(keys, (std::vector<double>{0.75, 0.0}));
  EXPECT_EQ(selectionKeys({0.5, 0.5}, nullptr),
            (std::vector<double>{0.5, 0.5}));
}

//===----------------------------------------------------------------------===//
// Grouped top-k
//===----------------------------------------------------------------------===//

RoutingSpec groupedSpec(int64_t numExperts, int64_t topK, int64_t groups,
                        int64_t topkGroups, GroupScore groupScore) {
  RoutingSpec spec = makeSpec(numExperts, topK);
  spec.groups = groups;
  spec.topkGroups = topkGroups;
  spec.groupScore = groupScore;
  return spec;
}

TEST(GoldenGrouped, Top2SumAndMaxPickDifferentGroups) {
  // softmax of ln{5, 1, 4, 3}: s proportional to {5, 1, 4, 3} (sum 13).
  // Group 0 = {5, 1}: max 5, top2 sum 6. Group 1 = {4, 3}: max 4, sum 7.
  // Max keeps group 0 -> expert 0; Top2Sum keeps group 1 -> expert 2.
  std::vector<float> logits = {lnf(5), lnf(1), lnf(4), lnf(3)};

  RouterResult byMax =
      route(groupedSpec(4, 1, 2, 1, GroupScore::Max), inputsFor(logits, 4));
  EXPECT_EQ(byMax.outputs.topkIds, (std::vector<int32_t>{0}));
  expectWeights(byMax, {5.0 / 13.0});

  RouterResult bySum =
      route(groupedSpec(4, 1, 2, 1, GroupScore::Top2Sum), inputsFor(logits, 4));
  EXPECT_EQ(bySum.outputs.topkIds, (std::vector<int32_t>{2}));
  expectWeights(bySum, {4.0 / 13.0});
}

TEST(GoldenGrouped, GroupTieGoesToLowerGroup) {
  // Logits {1, 3 | 3, 2}: both groups have max 3, so group 0 is kept and
  // the top 2 are {1, 0}. Ungrouped, expert 2 would beat expert 0.
  std::vector<float> logits = {1.0f, 3.0f, 3.0f, 2.0f};
  RouterResult grouped =
      route(groupedSpec(4, 2, 2, 1, GroupScore::Max), inputsFor(logits, 4));
  ASSERT_TRUE(grouped.ok()) << grouped.error;
  EXPECT_EQ(grouped.outputs.topkIds, (std::vector<int32_t>{1, 0}));

  RouterResult flat = route(makeSpec(4, 2), inputsFor(logits, 4));
  EXPECT_EQ(flat.outputs.topkIds, (std::vector<int32_t>{1, 2}));
}

TEST(GoldenGrouped, DroppedGroupExpertsNeverSelected) {
  // s proportional to {95, 0 | 50, 50 | 48, 48}. Top2 sums: 95, 100, 96, so
  // groups 1 and 2 are kept and expert 0, the largest, is dropped.
  // Top 2 among {2, 3, 4, 5} = {2, 3} (tie -> lower index).
  std::vector<float> logits = {lnf(95), kNegInf, lnf(50),
                               lnf(50), lnf(48), lnf(48)};
  RouterResult grouped =
      route(groupedSpec(6, 2, 3, 2, GroupScore::Top2Sum), inputsFor(logits, 6));
  EXPECT_EQ(grouped.outputs.topkIds, (std::vector<int32_t>{2, 3}));
  expectWeights(grouped, {50.0 / 291.0, 50.0 / 291.0});

  RouterResult flat = route(makeSpec(6, 2), inputsFor(logits, 6));
  EXPECT_EQ(flat.outputs.topkIds, (std::vector<int32_t>{0, 2}));
}

TEST(GoldenGrouped, SelectableExpertsMask) {
  // Groups of 2 by max: {0.1, 0.2 | 0.9, 0.0 | 0.3, 0.3}, keep the best 2:
  // group 1 (0.9) and group 2 (0.3).
  std::vector<double> keys = {0.1, 0.2, 0.9, 0.0, 0.3, 0.3};
  EXPECT_EQ(selectableExperts(keys, 3, 2, GroupScore::Max),
            (std::vector<bool>{false, false, true, true, true, true}));
  // By top2 sum: 0.3, 0.9, 0.6 -> groups 1 and 2 again; keep 1: group 1.
  EXPECT_EQ(selectableExperts(keys, 3, 1, GroupScore::Top2Sum),
            (std::vector<bool>{false, false, true, true, false, false}));
  EXPECT_EQ(selectableExperts(keys, 1, 1, GroupScore::Max),
            std::vector<bool>(6, true));
}

TEST(GoldenGrouped, TopKExpertsHelper) {
  // Expert 1 is the largest but not selectable.
  std::vector<double> keys = {0.2, 0.9, 0.5, 0.5};
  std::vector<bool> selectable = {true, false, true, true};
  EXPECT_EQ(topKExperts(keys, selectable, 3), (std::vector<int32_t>{2, 3, 0}));
}

//===----------------------------------------------------------------------===//
// Weights: normalize and scale
//===----------------------------------------------------------------------===//

TEST(GoldenWeights, NormalizeThenScale) {
  // sigmoid: s = {0.5, 0.75, 0.25(-ln 3)}; top 2 = {1, 0}.
  // Normalized: 0.75 / 1.25 = 0.6, 0.5 / 1.25 = 0.4; times 2.5: 1.5, 1.0.
  std::vector<float> logits = {0.0f, lnf(3), -lnf(3)};
  RoutingSpec spec = makeSpec(3, 2, Scoring::Sigmoid);
  spec.normalize = true;
  spec.scalingFactor = 2.5;
  RouterResult result = route(spec, inputsFor(logits, 3));
  EXPECT_EQ(result.outputs.topkIds, (std::vector<int32_t>{1, 0}));
  expectWeights(result, {1.5, 1.0});
}

TEST(GoldenWeights, ScaleWithoutNormalize) {
  // softmax tenths, top 2 = {3, 2}: weights 3 * {0.4, 0.3}.
  std::vector<float> logits = tenthsLogits();
  RoutingSpec spec = makeSpec(4, 2);
  spec.scalingFactor = 3.0;
  expectWeights(route(spec, inputsFor(logits, 4)), {1.2, 0.9});
}

TEST(GoldenWeights, NormalizedSoftmaxTopK) {
  // Mixtral-style: {0.4, 0.3} / 0.7 = {4/7, 3/7}.
  std::vector<float> logits = tenthsLogits();
  RoutingSpec spec = makeSpec(4, 2);
  spec.normalize = true;
  expectWeights(route(spec, inputsFor(logits, 4)), {4.0 / 7.0, 3.0 / 7.0});
}

TEST(GoldenWeights, EpsilonMattersForTinyScores) {
  // sigmoid(-50) = s = 1.9287498479639178e-22 for both experts; the epsilon
  // dominates: s / (2 s + 1e-20) = 0.01857111767191467, not 0.5.
  std::vector<float> logits = {-50.0f, -50.0f};
  RoutingSpec spec = makeSpec(2, 2, Scoring::Sigmoid);
  spec.normalize = true;
  expectWeights(route(spec, inputsFor(logits, 2)),
                {0.01857111767191467, 0.01857111767191467}, 1e-12);
}

TEST(GoldenWeights, EpsilonKeepsZeroScoresFinite) {
  // sigmoid(-inf) = 0 everywhere: 0 / (0 + 1e-20) = 0, not nan.
  std::vector<float> logits = {kNegInf, kNegInf, kNegInf};
  RoutingSpec spec = makeSpec(3, 2, Scoring::Sigmoid);
  spec.normalize = true;
  RouterResult result = route(spec, inputsFor(logits, 3));
  EXPECT_EQ(result.outputs.topkIds, (std::vector<int32_t>{0, 1}));
  expectWeights(result, {0.0, 0.0}, 0.0);
}

//===----------------------------------------------------------------------===//
// Hash selection
//===----------------------------------------------------------------------===//

/// A [3, 2] table over 4 experts: rows {3, 1}, {0, 2}, {2, 3}.
const std::vector<int32_t> kHashTable = {3, 1, 0, 2, 2, 3};

RoutingSpec hashSpec() {
  RoutingSpec spec = makeSpec(4, 2);
  spec.selection = Selection::Hash;
  return spec;
}

TEST(GoldenHash, TableOrderAndScoresAtThoseIds) {
  // Both tokens score {0.1, 0.2, 0.3, 0.4}. Token 0 -> row 2 = {2, 3},
  // token 1 -> row 0 = {3, 1}, kept in table order (not by score).
  std::vector<float> logits = tenthsLogits();
  logits.insert(logits.end(), logits.begin(), logits.end());
  std::vector<int64_t> tokenIds = {2, 0};
  RouterInputs in = inputsFor(logits, 4);
  in.tokenIds = tokenIds.data();
  in.hashTable = kHashTable.data();
  in.hashVocab = 3;
  RouterResult result = route(hashSpec(), in);
  EXPECT_EQ(result.outputs.topkIds, (std::vector<int32_t>{2, 3, 3, 1}));
  expectWeights(result, {0.3, 0.4, 0.4, 0.2});
}

TEST(GoldenHash, NormalizedWeights) {
  // Row 1 = {0, 2}: {0.1, 0.3} / 0.4 = {0.25, 0.75}.
  std::vector<float> logits = tenthsLogits();
  std::vector<int64_t> tokenIds = {1};
  RouterInputs in = inputsFor(logits, 4);
  in.tokenIds = tokenIds.data();
  in.hashTable = kHashTable.data();
  in.hashVocab = 3;
  RoutingSpec spec = hashSpec();
  spec.normalize = true;
  RouterResult result = route(spec, in);
  EXPECT_EQ(result.outputs.topkIds, (std::vector<int32_t>{0, 2}));
  expectWeights(result, {0.25, 0.75});
}

//===----------------------------------------------------------------------===//
// Forced selection (router replay)
//===----------------------------------------------------------------------===//

TEST(GoldenForced, IdsInGivenOrder) {
  // Scores {0.1, 0.2, 0.3, 0.4}; forced rows {0, 1} and {3, 0}.
  std::vector<float> logits = tenthsLogits();
  logits.insert(logits.end(), logits.begin(), logits.end());
  std::vector<int64_t> forced = {0, 1, 3, 0};
  RouterInputs in = inputsFor(logits, 4);
  in.forcedIds = forced.data();
  RouterResult result = route(makeSpec(4, 2), in);
  EXPECT_EQ(result.outputs.topkIds, (std::vector<int32_t>{0, 1, 3, 0}));
  expectWeights(result, {0.1, 0.2, 0.4, 0.1});
}

TEST(GoldenForced, OverridesGroupsAndBias) {
  // A grouped, biased spec: bias is not needed, and expert 0 of the group
  // that top-k would drop is taken anyway. sigmoid(0) = 0.5, sigmoid(ln 3) =
  // 0.75: weights {0.5, 0.75}.
  std::vector<float> logits = {0.0f, 0.0f, lnf(3), lnf(3)};
  RoutingSpec spec = groupedSpec(4, 2, 2, 1, GroupScore::Top2Sum);
  spec.scoring = Scoring::Sigmoid;
  spec.scoreBias = true;
  std::vector<int64_t> forced = {0, 3};
  RouterInputs in = inputsFor(logits, 4);
  in.forcedIds = forced.data();
  RouterResult result = route(spec, in);
  EXPECT_EQ(result.outputs.topkIds, (std::vector<int32_t>{0, 3}));
  expectWeights(result, {0.5, 0.75});
}

TEST(GoldenForced, OverridesHash) {
  // No token ids nor table are needed when the ids are forced.
  std::vector<float> logits = tenthsLogits();
  std::vector<int64_t> forced = {1, 2};
  RouterInputs in = inputsFor(logits, 4);
  in.forcedIds = forced.data();
  RouterResult result = route(hashSpec(), in);
  EXPECT_EQ(result.outputs.topkIds, (std::vector<int32_t>{1, 2}));
  expectWeights(result, {0.2, 0.3});
}

//===----------------------------------------------------------------------===//
// Input errors
//===----------------------------------------------------------------------===//

void expectError(const RouterResult &result, const std::string &message) {
  EXPECT_EQ(result.error, message);
  EXPECT_FALSE(result.ok());
  // No partial outputs on error.
  EXPECT_TRUE(result.outputs.topkIds.empty());
  EXPECT_TRUE(result.outputs.topkWeights.empty());
  EXPECT_TRUE(result.outputs.expertCounts.empty());
  EXPECT_TRUE(result.outputs.expertOffsets.empty());
}

TEST(GoldenErrors, NanLogit) {
  std::vector<float> logits = {0, 0, 0, 0, 0, 0, kNaN, 0};
  expectError(route(makeSpec(4, 1), inputsFor(logits, 4)),
              "logits[1][2] is nan: logits must be finite or -inf");
}

TEST(GoldenErrors, PlusInfLogit) {
  std::vector<float> logits = {0, kPosInf, 0, kNegInf};
  expectError(route(makeSpec(4, 1), inputsFor(logits, 4)),
              "logits[0][1] is inf: logits must be finite or -inf");
}

TEST(GoldenErrors, FirstBadLogitIsLowestTokenThenIndex) {
  // Bad at [0][3], [0][2] and [1][0]: [0][2] is reported.
  std::vector<float> logits = {0, 0, kPosInf, kNaN, kNaN, 0, 0, 0};
  expectError(route(makeSpec(4, 1), inputsFor(logits, 4)),
              "logits[0][2] is inf: logits must be finite or -inf");
}

TEST(GoldenErrors, LogitsCheckedBeforeBias) {
  std::vector<float> logits = {0, kNaN};
  RoutingSpec spec = makeSpec(2, 1, Scoring::Sigmoid);
  spec.scoreBias = true;
  expectError(route(spec, inputsFor(logits, 2)),
              "logits[0][1] is nan: logits must be finite or -inf");
}

TEST(GoldenErrors, MissingBias) {
  std::vector<float> logits = {0, 0};
  RoutingSpec spec = makeSpec(2, 1, Scoring::Sigmoid);
  spec.scoreBias = true;
  expectError(route(spec, inputsFor(logits, 2)),
              "bias: required by score_bias");
}

TEST(GoldenErrors, NonFiniteBias) {
  std::vector<float> logits = {0, 0, 0};
  RoutingSpec spec = makeSpec(3, 1, Scoring::Sigmoid);
  spec.scoreBias = true;
  RouterInputs in = inputsFor(logits, 3);

  std::vector<float> nanBias = {0, kNaN, kPosInf};
  in.bias = nanBias.data();
  expectError(route(spec, in), "bias[1] = nan: must be finite");

  std::vector<float> infBias = {0, 1, kNegInf};
  in.bias = infBias.data();
  expectError(route(spec, in), "bias[2] = -inf: must be finite");
}

/// Hash inputs over kHashTable for the given token ids (1 logit row each).
struct HashCase {
  std::vector<float> logits;
  std::vector<int64_t> tokenIds;
  std::vector<int32_t> table;
  RouterInputs inputs() const {
    RouterInputs in;
    in.numTokens = static_cast<int64_t>(tokenIds.size());
    in.logits = logits.data();
    in.tokenIds = tokenIds.data();
    in.hashTable = table.data();
    in.hashVocab = static_cast<int64_t>(table.size()) / 2;
    return in;
  }
};

HashCase hashCase(std::vector<int64_t> tokenIds, std::vector<int32_t> table) {
  return {std::vector<float>(4 * tokenIds.size(), 0.0f), std::move(tokenIds),
          std::move(table)};
}

TEST(GoldenErrors, HashMissingInputs) {
  HashCase c = hashCase({0}, kHashTable);
  RouterInputs in = c.inputs();
  in.tokenIds = nullptr;
  expectError(route(hashSpec(), in), "token_ids: required by selection: hash");
  in = c.inputs();
  in.hashTable = nullptr;
  expectError(route(hashSpec(), in), "hash_table: required by selection: hash");
}

TEST(GoldenErrors, HashTokenIdOutsideVocabulary) {
  HashCase c = hashCase({0, 3}, kHashTable);
  expectError(route(hashSpec(), c.inputs()),
              "token_ids[1] = 3: outside the hash table's vocabulary [0, 3)");
  HashCase negative = hashCase({-1}, kHashTable);
  expectError(route(hashSpec(), negative.inputs()),
              "token_ids[0] = -1: outside the hash table's vocabulary [0, 3)");
}

TEST(GoldenErrors, HashTableEntryOutOfRange) {
  HashCase c = hashCase({2}, {3, 1, 0, 2, 2, 4});
  expectError(route(hashSpec(), c.inputs()),
              "hash_table[2][1] = 4: expert id outside [0, 4)");
  HashCase negative = hashCase({1}, {3, 1, -1, 2, 2, 3});
  expectError(route(hashSpec(), negative.inputs()),
              "hash_table[1][0] = -1: expert id outside [0, 4)");
}

TEST(GoldenErrors, HashTableRepeatedExpert) {
  HashCase c = hashCase({0}, {2, 2, 0, 2, 2, 3});
  expectError(route(hashSpec(), c.inputs()),
              "hash_table[0][1] = 2: repeats an expert of the same row");
}

TEST(GoldenErrors, HashUnusedRowsAreNotChecked) {
  // Row 1 is broken twice over, but only rows 0 and 2 are used.
  HashCase c = hashCase({0, 2, 0}, {3, 1, 9, 9, 2, 3});
  RouterResult result = route(hashSpec(), c.inputs());
  ASSERT_TRUE(result.ok()) << result.error;
  EXPECT_EQ(result.outputs.topkIds, (std::vector<int32_t>{3, 1, 2, 3, 3, 1}));
}

TEST(GoldenErrors, HashFirstViolationByToken) {
  // Token 0 uses the broken row 1; token 1's id is out of the vocabulary.
  // Token 0 comes first.
  HashCase c = hashCase({1, 7}, {3, 1, 0, 5, 2, 3});
  expectError(route(hashSpec(), c.inputs()),
              "hash_table[1][1] = 5: expert id outside [0, 4)");
}

TEST(GoldenErrors, ForcedIdOutOfRange) {
  std::vector<float> logits(8, 0.0f);
  std::vector<int64_t> forced = {0, 1, 4, 1};
  RouterInputs in = inputsFor(logits, 4);
  in.forcedIds = forced.data();
  expectError(route(makeSpec(4, 2), in),
              "forced_ids[1][0] = 4: expert id outside [0, 4)");
  forced = {0, -2, 0, 1};
  in.forcedIds = forced.data();
  expectError(route(makeSpec(4, 2), in),
              "forced_ids[0][1] = -2: expert id outside [0, 4)");
}

TEST(GoldenErrors, ForcedIdRepeated) {
  std::vector<float> logits(8, 0.0f);
  std::vector<int64_t> forced = {3, 3, 1, 1};
  RouterInputs in = inputsFor(logits, 4);
  in.forcedIds = forced.data();
  expectError(route(makeSpec(4, 2), in),
              "forced_ids[0][1] = 3: repeats an expert of the same token");
}

TEST(GoldenErrors, LogitsCheckedBeforeForcedIds) {
  std::vector<float> logits = {0, 0, 0, kNaN};
  std::vector<int64_t> forced = {5, 5};
  RouterInputs in = inputsFor(logits, 4);
  in.forcedIds = forced.data();
  expectError(route(makeSpec(4, 2), in),
              "logits[0][3] is nan: logits must be finite or -inf");
}

TEST(GoldenErrors, NegativeTokenCount) {
  RouterInputs in;
  in.numTokens = -1;
  expectError(route(makeSpec(4, 2), in),
              "num_tokens = -1: must not be negative");
}

TEST(GoldenErrors, NullLogits) {
  RouterInputs in;
  in.numTokens = 2;
  expectError(route(makeSpec(4, 2), in),
              "logits: required when num_tokens > 0");
}

//===----------------------------------------------------------------------===//
// Dispatch
//===----------------------------------------------------------------------===//

TEST(GoldenDispatch, SmallHandComputedExample) {
  // T = 3, k = 2, E = 4; ids per slot (t*2+j): [2, 0 | 1, 2 | 2, 3].
  // counts: e0 = 1 (slot 1), e1 = 1 (slot 2), e2 = 3 (slots 0, 3, 4),
  //         e3 = 1 (slot 5); offsets = {0, 1, 2, 5, 6}.
  // sorted by (expert, slot): {1, 2, 0, 3, 4, 5}; its inverse maps slot 0 to
  // position 2, slot 1 to 0, slot 2 to 1, and slots 3..5 to themselves.
  RouterOutputs out;
  ASSERT_EQ(computeDispatch(4, 3, 2, {2, 0, 1, 2, 2, 3}, out), "");
  EXPECT_EQ(out.expertCounts, (std::vector<int32_t>{1, 1, 3, 1}));
  EXPECT_EQ(out.expertOffsets, (std::vector<int32_t>{0, 1, 2, 5, 6}));
  EXPECT_EQ(out.sortedSlots, (std::vector<int32_t>{1, 2, 0, 3, 4, 5}));
  EXPECT_EQ(out.slotPositions, (std::vector<int32_t>{2, 0, 1, 3, 4, 5}));
}

TEST(GoldenDispatch, RouteFillsDispatchOnlyWhenAsked) {
  // The same ids as above, replayed through route().
  std::vector<float> logits(12, 0.0f);
  std::vector<int64_t> forced = {2, 0, 1, 2, 2, 3};
  RouterInputs in = inputsFor(logits, 4);
  in.forcedIds = forced.data();
  RoutingSpec spec = makeSpec(4, 2);

  RouterResult plain = route(spec, in);
  ASSERT_TRUE(plain.ok()) << plain.error;
  EXPECT_TRUE(plain.outputs.expertCounts.empty());
  EXPECT_TRUE(plain.outputs.expertOffsets.empty());
  EXPECT_TRUE(plain.outputs.sortedSlots.empty());
  EXPECT_TRUE(plain.outputs.slotPositions.empty());

  spec.dispatch = true;
  RouterResult dispatched = route(spec, in);
  ASSERT_TRUE(dispatched.ok()) << dispatched.error;
  EXPECT_EQ(dispatched.outputs.expertCounts,
            (std::vector<int32_t>{1, 1, 3, 1}));
  EXPECT_EQ(dispatched.outputs.expertOffsets,
            (std::vector<int32_t>{0, 1, 2, 5, 6}));
  EXPECT_EQ(dispatched.outputs.sortedSlots,
            (std::vector<int32_t>{1, 2, 0, 3, 4, 5}));
  EXPECT_EQ(dispatched.outputs.slotPositions,
            (std::vector<int32_t>{2, 0, 1, 3, 4, 5}));
}

TEST(GoldenDispatch, UnusedExpertsHaveEmptyRanges) {
  // All slots on expert 1 of 3: offsets {0, 0, 4, 4}, identity permutation.
  RouterOutputs out;
  ASSERT_EQ(computeDispatch(3, 2, 2, {1, 1, 1, 1}, out), "");
  EXPECT_EQ(out.expertCounts, (std::vector<int32_t>{0, 4, 0}));
  EXPECT_EQ(out.expertOffsets, (std::vector<int32_t>{0, 0, 4, 4}));
  EXPECT_EQ(out.sortedSlots, (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(out.slotPositions, (std::vector<int32_t>{0, 1, 2, 3}));
}

TEST(GoldenDispatch, ManyTokensKeepInvariants) {
  // 50000 tokens: a quadratic dispatch would be far too slow here. Checks
  // the defining properties rather than hand values.
  const int64_t numExperts = 64, numTokens = 50000, topK = 4;
  std::vector<int32_t> ids(numTokens * topK);
  uint32_t state = 12345;
  for (int32_t &id : ids) {
    state = state * 1664525u + 1013904223u; // Numerical Recipes LCG.
    id = static_cast<int32_t>((state >> 8) % numExperts);
  }
  RouterOutputs out;
  ASSERT_EQ(computeDispatch(numExperts, numTokens, topK, ids, out), "");
  ASSERT_EQ(out.expertOffsets.back(), numTokens * topK);
  for (int64_t i = 0; i < numTokens * topK; ++i) {
    const int32_t slot = out.sortedSlots[i];
    ASSERT_EQ(out.slotPositions[slot], i);
    const int32_t expert = ids[slot];
    ASSERT_GE(i, out.expertOffsets[expert]);
    ASSERT_LT(i, out.expertOffsets[expert + 1]);
    if (i > 0 && ids[out.sortedSlots[i - 1]] == expert) {
      ASSERT_LT(out.sortedSlots[i - 1], slot);
    }
  }
}

TEST(GoldenDispatch, ZeroTokens) {
  // T = 0: empty ids and weights, E zero counts and E+1 zero offsets.
  RoutingSpec spec = makeSpec(4, 2);
  spec.dispatch = true;
  RouterInputs in; // numTokens = 0, no logits needed.
  RouterResult result = route(spec, in);
  ASSERT_TRUE(result.ok()) << result.error;
  EXPECT_TRUE(result.outputs.topkIds.empty());
  EXPECT_TRUE(result.outputs.topkWeights.empty());
  EXPECT_EQ(result.outputs.expertCounts, std::vector<int32_t>(4, 0));
  EXPECT_EQ(result.outputs.expertOffsets, std::vector<int32_t>(5, 0));
  EXPECT_TRUE(result.outputs.sortedSlots.empty());
  EXPECT_TRUE(result.outputs.slotPositions.empty());
}

//===----------------------------------------------------------------------===//
// DeepSeek-V3-like end to end
//===----------------------------------------------------------------------===//

/// DeepSeek-V3's gating shape (sigmoid, bias, grouped top2_sum, normalize,
/// scale 2.5), scaled down to E = 16 in 4 groups of 4, keep 2, k = 3.
RoutingSpec deepSeekLikeSpec() {
  RoutingSpec spec = groupedSpec(16, 3, 4, 2, GroupScore::Top2Sum);
  spec.name = "deepseek_v3_small";
  spec.scoring = Scoring::Sigmoid;
  spec.scoreBias = true;
  spec.normalize = true;
  spec.scalingFactor = 2.5;
  spec.dispatch = true;
  return spec;
}

/// logit(p) = ln(p / (1 - p)), so sigmoid(logit(p)) = p.
float logitOf(double p) { return static_cast<float>(std::log(p / (1 - p))); }

TEST(GoldenDeepSeek, SmallEndToEnd) {
  // Bias: +0.5 on expert 4, +0.3 on expert 12.
  std::vector<float> bias(16, 0.0f);
  bias[4] = 0.5f;
  bias[12] = 0.3f;

  // Token 0 scores, by group:
  //   g0 {0.9, 0.1, 0.1, 0.1}   keys same          top2 1.0
  //   g1 {0.5, 0.5, 0.25, 0.25} keys {1.0, 0.5..}  top2 1.5
  //   g2 {0.75, 0.6, 0.1, 0.1}  keys same          top2 1.35
  //   g3 {0.8, 0.1, 0.1, 0.1}   keys {1.1, 0.1..}  top2 1.2
  // Kept: g1, g2. Experts 12 (key 1.1) and 0 (0.9) are dropped.
  // Top 3 of keys in e4..e11: e4 (1.0), e8 (0.75), e9 (0.6).
  // Weights from unbiased s {0.5, 0.75, 0.6}, sum 1.85, times 2.5:
  //   {1.25, 1.875, 1.5} / 1.85 = {25/37, 75/74, 30/37}.
  const double token0[16] = {0.9,  0.1, 0.1, 0.1, 0.5, 0.5, 0.25, 0.25,
                             0.75, 0.6, 0.1, 0.1, 0.8, 0.1, 0.1,  0.1};
  // Token 1: all logits 0, s = 0.5 everywhere; keys 1.0 at e4, 0.8 at e12.
  // Group top2: g0 1.0, g1 1.5, g2 1.0, g3 1.3 -> keep g1, g3.
  // Top 3: e4 (1.0), e12 (0.8), then the 0.5 tie -> lowest id e5.
  // Weights: 0.5 each, normalized 1/3, times 2.5 = 5/6.
  std::vector<float> logits;
  for (double p : token0)
    logits.push_back(logitOf(p));
  logits.insert(logits.end(), 16, 0.0f);

  RouterInputs in = inputsFor(logits, 16);
  in.bias = bias.data();
  RouterResult result = route(deepSeekLikeSpec(), in);
  ASSERT_TRUE(result.ok()) << result.error;
  EXPECT_EQ(result.outputs.topkIds, (std::vector<int32_t>{4, 8, 9, 4, 12, 5}));
  expectWeights(result, {25.0 / 37, 75.0 / 74, 30.0 / 37, //
                         5.0 / 6, 5.0 / 6, 5.0 / 6});

  // Dispatch of slots [4, 8, 9 | 4, 12, 5]:
  //   e4: slots 0, 3; e5: slot 5; e8: slot 1; e9: slot 2; e12: slot 4.
  std::vector<int32_t> counts(16, 0);
  counts[4] = 2;
  counts[5] = counts[8] = counts[9] = counts[12] = 1;
  EXPECT_EQ(result.outputs.expertCounts, counts);
  EXPECT_EQ(result.outputs.expertOffsets,
            (std::vector<int32_t>{0, 0, 0, 0, 0, 2, 3, 3, 3, 4, 5, 5, 5, 6, 6,
                                  6, 6}));
  EXPECT_EQ(result.outputs.sortedSlots,
            (std::vector<int32_t>{0, 3, 5, 1, 2, 4}));
  EXPECT_EQ(result.outputs.slotPositions,
            (std::vector<int32_t>{0, 3, 4, 1, 5, 2}));
}

TEST(GoldenDeepSeek, FullSizeUniformLogits) {
  // The real shape: E = 256, 8 groups of 32, keep 4, k = 8. Equal logits and
  // zero bias: every group ties (keep groups 0..3), every expert ties (take
  // 0..7). Weights: 0.5 each, normalized 1/8, times 2.5 = 0.3125.
  RoutingSpec spec = groupedSpec(256, 8, 8, 4, GroupScore::Top2Sum);
  spec.scoring = Scoring::Sigmoid;
  spec.scoreBias = true;
  spec.normalize = true;
  spec.scalingFactor = 2.5;
  std::vector<float> logits(256, 0.0f), bias(256, 0.0f);
  RouterInputs in = inputsFor(logits, 256);
  in.bias = bias.data();
  RouterResult result = route(spec, in);
  EXPECT_EQ(result.outputs.topkIds,
            (std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7}));
  expectWeights(result, std::vector<double>(8, 0.3125), 1e-15);

  // Lifting expert 200 (group 6) by bias makes group 6 the best group; it
  // becomes the first pick, and groups 0..2 fill the rest.
  bias[200] = 1.0f;
  result = route(spec, in);
  EXPECT_EQ(result.outputs.topkIds,
            (std::vector<int32_t>{200, 0, 1, 2, 3, 4, 5, 6}));
  expectWeights(result, std::vector<double>(8, 0.3125), 1e-15);
}

} // namespace

namespace {

TEST(GoldenDispatch, RejectsIdsOutOfRangeWithoutWriting) {
  moegen::golden::RouterOutputs out;
  EXPECT_EQ(moegen::golden::computeDispatch(4, 2, 2, {0, 1, 4, 2}, out),
            "ids[2] = 4: expert id outside [0, 4)");
  EXPECT_EQ(moegen::golden::computeDispatch(4, 2, 2, {0, -1, 3, 2}, out),
            "ids[1] = -1: expert id outside [0, 4)");
  EXPECT_TRUE(out.expertCounts.empty());
  EXPECT_TRUE(out.sortedSlots.empty());
}

TEST(GoldenDispatch, RejectsIdsOfTheWrongSize) {
  moegen::golden::RouterOutputs out;
  EXPECT_EQ(moegen::golden::computeDispatch(4, 2, 2, {0, 1, 2}, out),
            "ids: 3 entries, expected num_tokens * top_k = 4");
  EXPECT_TRUE(out.expertCounts.empty());
}

} // namespace
