//===- CpuHostRouterTest.cpp - The CPU backend behind HostRouter ----------===//
//
// The path moegen run and the tools share (RouterInputs + a HostRouter)
// must give exactly what CpuRouter::run gives for the same tensors: every
// output, the capture, and the kernels' error messages.
//
//===----------------------------------------------------------------------===//

#include "compiler/backend/cpu/CpuHostRouter.h"
#include "compiler/spec/SpecParser.h"
#include "runtime/RouterInputs.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <random>

namespace {

namespace rt = moegen::rt;
namespace npy = moegen::npy;
using moegen::RoutingSpec;
using moegen::cpu::CpuHostRouter;
using moegen::cpu::CpuRouter;
using moegen::cpu::RouterCall;

RoutingSpec templateSpec(const std::string &name) {
  std::string error;
  std::optional<RoutingSpec> spec = moegen::parseRoutingSpecFile(
      (std::filesystem::path(MOEGEN_SOURCE_DIR) / "templates" / name).string(),
      error);
  if (!spec)
    ADD_FAILURE() << error;
  return spec.value_or(RoutingSpec{});
}

template <typename T>
npy::Array makeArray(npy::DType dtype, std::vector<int64_t> shape,
                     const std::vector<T> &values) {
  npy::Array array;
  array.dtype = dtype;
  array.shape = std::move(shape);
  array.data.resize(values.size() * sizeof(T));
  if (!values.empty())
    std::memcpy(array.data.data(), values.data(), array.data.size());
  return array;
}

template <typename T> std::vector<T> valuesOf(const npy::Array *array) {
  EXPECT_NE(array, nullptr);
  if (!array)
    return {};
  std::vector<T> out(array->data.size() / sizeof(T));
  std::memcpy(out.data(), array->data.data(), array->data.size());
  return out;
}

TEST(CpuHostRouter, FactsFollowTheSpec) {
  rt::RouterFacts facts =
      moegen::cpu::routerFactsOf(templateSpec("deepseek-v3.yaml"));
  EXPECT_EQ(facts.name, "deepseek_v3");
  EXPECT_EQ(facts.numExperts, 256);
  EXPECT_EQ(facts.topK, 8);
  EXPECT_EQ(facts.logits, rt::RouterFacts::Logits::F32);
  EXPECT_TRUE(facts.scoreBias && facts.capture && facts.replay &&
              facts.dispatch);
  EXPECT_FALSE(facts.hashSelection);
  EXPECT_EQ(facts.captureElementBytes(), 2u);
  rt::RouterFacts hash =
      moegen::cpu::routerFactsOf(templateSpec("deepseek-v4-flash-hash.yaml"));
  EXPECT_TRUE(hash.hashSelection);
}

TEST(CpuHostRouter, MatchesCpuRouterRunExactly) {
  RoutingSpec spec = templateSpec("deepseek-v3.yaml");
  const int64_t t = 37, e = spec.numExperts, k = spec.topK, layers = 3,
                layer = 1;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> logits(t * e), bias(e);
  for (float &x : logits)
    x = normal(rng);
  for (float &b : bias)
    b = 0.1f * normal(rng);

  std::string error;
  auto compiled = CpuRouter::compile(spec, {});
  ASSERT_TRUE(bool(compiled)) << llvm::toString(compiled.takeError());
  std::unique_ptr<CpuRouter> direct = std::move(*compiled);
  std::vector<int32_t> ids(t * k), counts(e), offsets(e + 1), slots(t * k),
      positions(t * k);
  std::vector<float> weights(t * k);
  std::vector<int16_t> capture(t * layers * k, 0);
  RouterCall call;
  call.numTokens = t;
  call.logits = logits.data();
  call.bias = bias.data();
  call.captureBuffer = capture.data();
  call.captureLayers = layers;
  call.captureLayer = layer;
  call.topkIds = ids.data();
  call.topkWeights = weights.data();
  call.expertCounts = counts.data();
  call.expertOffsets = offsets.data();
  call.sortedSlots = slots.data();
  call.slotPositions = positions.data();
  ASSERT_EQ(direct->run(call), "");

  auto compiledHost = CpuHostRouter::compile(spec, {});
  ASSERT_TRUE(bool(compiledHost)) << llvm::toString(compiledHost.takeError());
  std::unique_ptr<CpuHostRouter> host = std::move(*compiledHost);
  EXPECT_EQ(host->backendName(), "cpu");
  rt::RouterInputMap inputs;
  inputs["logits"] = {"logits.npy", makeArray(npy::DType::F32, {t, e}, logits)};
  inputs["bias"] = {"bias.npy", makeArray(npy::DType::F32, {e}, bias)};
  inputs["capture"] = {"capture.npy",
                       makeArray(npy::DType::I16, {t, layers, k},
                                 std::vector<int16_t>(t * layers * k, 0))};
  ASSERT_EQ(rt::checkInputs(host->facts(), inputs, layer), t);
  rt::HostRunResult result = rt::runOnHost(*host, inputs, layer);
  ASSERT_EQ(result.error, "");
  EXPECT_EQ(valuesOf<int32_t>(result.find("topk_ids")), ids);
  EXPECT_EQ(valuesOf<float>(result.find("topk_weights")), weights);
  EXPECT_EQ(valuesOf<int32_t>(result.find("expert_counts")), counts);
  EXPECT_EQ(valuesOf<int32_t>(result.find("expert_offsets")), offsets);
  EXPECT_EQ(valuesOf<int32_t>(result.find("sorted_slots")), slots);
  EXPECT_EQ(valuesOf<int32_t>(result.find("slot_positions")), positions);
  EXPECT_EQ(valuesOf<int16_t>(result.find("capture")), capture);
  EXPECT_EQ(result.find("capture")->shape,
            (std::vector<int64_t>{t, layers, k}));
}

TEST(CpuHostRouter, ReplayErrorsAreTheBackendsAndNameTheFile) {
  RoutingSpec spec = templateSpec("deepseek-v3.yaml");
  const int64_t t = 4, e = spec.numExperts, k = spec.topK;
  std::vector<float> logits(t * e, 0.0f);
  std::vector<int32_t> forced(t * k);
  for (int64_t i = 0; i < t * k; ++i)
    forced[i] = static_cast<int32_t>(i % k);
  forced[2 * k + 3] = 300; // out of range: token 2, position 3

  std::string error;
  auto compiled = CpuRouter::compile(spec, {});
  ASSERT_TRUE(bool(compiled)) << llvm::toString(compiled.takeError());
  std::unique_ptr<CpuRouter> direct = std::move(*compiled);
  std::vector<int32_t> ids(t * k);
  std::vector<float> weights(t * k);
  RouterCall call;
  call.numTokens = t;
  call.logits = logits.data();
  call.forcedIds = forced.data();
  call.topkIds = ids.data();
  call.topkWeights = weights.data();
  std::string expected = direct->run(call);
  ASSERT_EQ(expected.rfind("forced_ids[2][3] = 300: ", 0), 0u) << expected;

  CpuHostRouter host(std::move(direct));
  rt::RouterInputMap inputs;
  inputs["logits"] = {"in/logits.npy",
                      makeArray(npy::DType::F32, {t, e}, logits)};
  // int64 ids take the int32 path through RouterInputs.
  std::vector<int64_t> wide(forced.begin(), forced.end());
  inputs["forced_ids"] = {"in/forced.npy",
                          makeArray(npy::DType::I64, {t, k}, wide)};
  rt::checkInputs(host.facts(), inputs, 0);
  rt::HostRunResult result = rt::runOnHost(host, inputs, 0);
  EXPECT_EQ(result.error, expected);
  EXPECT_EQ(rt::locateError(result.error, inputs).format("moegen"),
            "in/forced.npy: error: " + expected);
}

} // namespace
