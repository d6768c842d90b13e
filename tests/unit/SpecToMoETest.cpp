//===- SpecToMoETest.cpp - Routing spec to moe IR -------------------------===//
//
// The IR built from a spec has exactly the entry points its keys ask for,
// with the documented signatures, and every valid spec gives IR that
// verifies.
//
//===----------------------------------------------------------------------===//

#include "compiler/Registration.h"
#include "compiler/spec/SpecToMoE.h"
#include "dialects/moe/IR/MoEOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"

#include "llvm/Support/raw_ostream.h"

#include <gtest/gtest.h>

#include <random>

using namespace mlir;
using namespace moegen;

namespace {

class SpecToMoETest : public ::testing::Test {
protected:
  SpecToMoETest() {
    DialectRegistry registry;
    registerMoEGenDialects(registry);
    context.appendDialectRegistry(registry);
    context.loadAllAvailableDialects();
  }

  static RoutingSpec spec(int64_t experts, int64_t k) {
    RoutingSpec s;
    s.name = "r";
    s.numExperts = experts;
    s.topK = k;
    return s;
  }

  OwningOpRef<ModuleOp> build(const RoutingSpec &s) {
    OwningOpRef<ModuleOp> module = buildRouterModule(s, context);
    EXPECT_TRUE(succeeded(verify(*module))) << print(*module);
    return module;
  }

  static std::vector<std::string> entryNames(ModuleOp module) {
    std::vector<std::string> names;
    for (auto func : module.getOps<func::FuncOp>()) {
      EXPECT_EQ(func->getAttrOfType<StringAttr>(kEntryAttrName).getValue(),
                func.getSymName());
      names.push_back(func.getSymName().str());
    }
    return names;
  }

  template <typename Op> static int count(Operation *root) {
    int n = 0;
    root->walk([&](Op) { ++n; });
    return n;
  }

  static std::string print(Operation *op) {
    std::string text;
    llvm::raw_string_ostream os(text);
    op->print(os);
    return text;
  }

  static std::string typeString(Type type) {
    std::string text;
    llvm::raw_string_ostream os(text);
    type.print(os);
    return text;
  }

  MLIRContext context;
};

TEST_F(SpecToMoETest, ModuleIsNamedAfterSpec) {
  RoutingSpec s = spec(8, 2);
  s.name = "mixtral_like";
  auto module = build(s);
  ASSERT_TRUE(module->getSymName().has_value());
  EXPECT_EQ(*module->getSymName(), "mixtral_like");
}

TEST_F(SpecToMoETest, PlainTopKHasOnlyRoute) {
  auto module = build(spec(8, 2));
  EXPECT_EQ(entryNames(*module), std::vector<std::string>{"route"});
}

TEST_F(SpecToMoETest, ReplayAndDispatchAddEntries) {
  RoutingSpec s = spec(64, 4);
  s.replay = true;
  s.dispatch = true;
  auto module = build(s);
  EXPECT_EQ(entryNames(*module),
            (std::vector<std::string>{"route", "replay", "dispatch"}));
}

TEST_F(SpecToMoETest, HashSelectionNamesRouteHash) {
  RoutingSpec s = spec(256, 6);
  s.selection = Selection::Hash;
  auto module = build(s);
  EXPECT_EQ(entryNames(*module), std::vector<std::string>{"route_hash"});
  auto func = module->lookupSymbol<func::FuncOp>("route_hash");
  ASSERT_TRUE(func);
  EXPECT_EQ(typeString(func.getFunctionType()),
            "(tensor<?x256xf32>, tensor<?xi32>, tensor<?x6xi32>) -> "
            "(tensor<?x6xi32>, tensor<?x6xf32>)");
  EXPECT_EQ(count<moe::HashSelectOp>(*module), 1);
  EXPECT_EQ(count<moe::TopKOp>(*module), 0);
}

TEST_F(SpecToMoETest, RouteSignatureWithBiasAndCapture) {
  RoutingSpec s = spec(256, 8);
  s.scoring = Scoring::Sigmoid;
  s.scoreBias = true;
  s.capture = true;
  s.logitsDType = LogitsDType::BF16;
  auto module = build(s);
  auto func = module->lookupSymbol<func::FuncOp>("route");
  ASSERT_TRUE(func);
  EXPECT_EQ(typeString(func.getFunctionType()),
            "(tensor<?x256xbf16>, tensor<256xf32>, tensor<?x?x8xi16>, index) "
            "-> (tensor<?x8xi32>, tensor<?x8xf32>, tensor<?x?x8xi16>)");
}

TEST_F(SpecToMoETest, ReplaySignatureAndNoSelectionOps) {
  RoutingSpec s = spec(256, 8);
  s.scoreBias = true;
  s.groups = 8;
  s.topkGroups = 4;
  s.replay = true;
  auto module = build(s);
  auto replay = module->lookupSymbol<func::FuncOp>("replay");
  ASSERT_TRUE(replay);
  EXPECT_EQ(typeString(replay.getFunctionType()),
            "(tensor<?x256xf32>, tensor<?x8xi32>) -> (tensor<?x8xi32>, "
            "tensor<?x8xf32>)");
  // Bias and groups steer selection only; replay forces the ids instead.
  EXPECT_EQ(count<moe::ForcedSelectOp>(replay), 1);
  EXPECT_EQ(count<moe::AddBiasOp>(replay), 0);
  EXPECT_EQ(count<moe::GroupMaskOp>(replay), 0);
  EXPECT_EQ(count<moe::TopKOp>(replay), 0);
}

TEST_F(SpecToMoETest, DispatchSignature) {
  RoutingSpec s = spec(160, 6);
  s.dispatch = true;
  auto module = build(s);
  auto func = module->lookupSymbol<func::FuncOp>("dispatch");
  ASSERT_TRUE(func);
  EXPECT_EQ(typeString(func.getFunctionType()),
            "(tensor<?x6xi32>) -> (tensor<160xi32>, tensor<161xi32>, "
            "tensor<?xi32>, tensor<?xi32>)");
}

TEST_F(SpecToMoETest, WeightsGatherUnbiasedScores) {
  RoutingSpec s = spec(256, 8);
  s.scoreBias = true;
  auto module = build(s);
  moe::GatherOp gather;
  module->walk([&](moe::GatherOp op) { gather = op; });
  ASSERT_TRUE(gather);
  EXPECT_TRUE(isa<moe::ScoreOp>(gather.getScores().getDefiningOp()))
      << "weights must come from the scores, not the biased keys";
}

TEST_F(SpecToMoETest, GroupedSelectionMasksBeforeTopK) {
  RoutingSpec s = spec(256, 8);
  s.groups = 8;
  s.topkGroups = 4;
  s.groupScore = GroupScore::Max;
  auto module = build(s);
  moe::TopKOp topk;
  module->walk([&](moe::TopKOp op) { topk = op; });
  ASSERT_TRUE(topk);
  auto mask = topk.getKeys().getDefiningOp<moe::GroupMaskOp>();
  ASSERT_TRUE(mask);
  EXPECT_EQ(mask.getGroups(), 8);
  EXPECT_EQ(mask.getKeep(), 4);
  EXPECT_EQ(mask.getGroupScore(), moe::GroupScoreKind::max);
}

TEST_F(SpecToMoETest, NormalizeAndScaleOnlyWhenAsked) {
  RoutingSpec plain = spec(8, 2);
  auto module = build(plain);
  EXPECT_EQ(count<moe::NormalizeOp>(*module), 0);
  EXPECT_EQ(count<moe::ScaleOp>(*module), 0);

  RoutingSpec scaled = spec(8, 2);
  scaled.normalize = true;
  scaled.scalingFactor = 2.5;
  module = build(scaled);
  EXPECT_EQ(count<moe::NormalizeOp>(*module), 1);
  moe::ScaleOp scale;
  module->walk([&](moe::ScaleOp op) { scale = op; });
  ASSERT_TRUE(scale);
  EXPECT_EQ(scale.getFactor().convertToDouble(), 2.5);
  // Normalization happens before scaling.
  EXPECT_TRUE(isa<moe::NormalizeOp>(scale.getWeights().getDefiningOp()));
}

TEST_F(SpecToMoETest, CaptureBufferIsI16UpToTheExpertLimit) {
  // i16 holds every id of the largest spec (8192 experts), so the builder
  // always picks it; the op verifier rejects i16 beyond 32767 experts.
  RoutingSpec s = spec(kMaxExperts, 64);
  s.capture = true;
  auto module = build(s);
  moe::CaptureOp capture;
  module->walk([&](moe::CaptureOp op) { capture = op; });
  ASSERT_TRUE(capture);
  EXPECT_TRUE(capture.getBuffer().getType().getElementType().isInteger(16));
}

// Every valid spec, over a spread of expert counts, k, groups and options,
// gives IR that verifies and round-trips through the printer and parser.
TEST_F(SpecToMoETest, RandomValidSpecsVerifyAndRoundTrip) {
  std::mt19937 rng(20261123);
  const int64_t expertCounts[] = {2,   8,   60,  64,   128,  160,
                                  256, 384, 512, 1000, 4096, 8192};
  for (int trial = 0; trial < 300; ++trial) {
    RoutingSpec s;
    s.name = "random_" + std::to_string(trial);
    s.numExperts = expertCounts[rng() % std::size(expertCounts)];
    s.scoring = static_cast<Scoring>(rng() % 3);
    s.selection = rng() % 5 == 0 ? Selection::Hash : Selection::TopK;
    s.logitsDType = static_cast<LogitsDType>(rng() % 3);
    s.normalize = rng() % 2;
    s.scalingFactor = rng() % 2 ? 1.0 : 0.5 + (rng() % 100) / 10.0;
    s.replay = rng() % 2;
    s.dispatch = rng() % 2;
    s.capture = rng() % 2;
    if (s.selection == Selection::TopK) {
      s.scoreBias = rng() % 2;
      // A divisor of E as the group count, sometimes.
      std::vector<int64_t> divisors;
      for (int64_t g = 1; g <= s.numExperts && g <= 64; ++g)
        if (s.numExperts % g == 0)
          divisors.push_back(g);
      s.groups = rng() % 2 ? divisors[rng() % divisors.size()] : 1;
      s.topkGroups = 1 + rng() % s.groups;
      s.groupScore = s.numExperts / s.groups >= 2 && rng() % 2
                         ? GroupScore::Top2Sum
                         : GroupScore::Max;
    }
    int64_t maxK = std::min<int64_t>(kMaxTopK, s.numExperts);
    if (s.isGrouped())
      maxK = std::min(maxK, s.topkGroups * s.expertsPerGroup());
    s.topK = 1 + rng() % maxK;
    ASSERT_FALSE(validateRoutingSpec(s).has_value())
        << "test generated an invalid spec: "
        << validateRoutingSpec(s)->message;

    auto module = build(s);
    std::string text = print(*module);
    OwningOpRef<ModuleOp> reparsed =
        parseSourceString<ModuleOp>(text, &context);
    ASSERT_TRUE(reparsed) << text;
    EXPECT_EQ(print(*reparsed), text);
  }
}

} // namespace
