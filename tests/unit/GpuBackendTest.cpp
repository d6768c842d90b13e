//===- GpuBackendTest.cpp - NVPTX kernels against the CPU backend ---------===//
//
// GPU tests (label: GPU). Every bundled template and seeded random specs
// (E from 2 to 8192, k up to 64, every scoring, selection, dtype and
// option) are compiled by the NVPTX backend for the device's arch, loaded
// by the runtime (CudaRouter) and run on T = 1, 131 and 2048 tokens; ids,
// weights, capture and dispatch metadata must match the CPU backend, which
// the CPU differential tests hold to the golden reference. Comparison rule
// (as in CpuBackendTest): ids equal except where the two picks' keys are an
// fp32 near-tie (both kernels sum in different orders), weights within
// 1e-5 relative, dispatch metadata equal whenever the ids are. Invalid
// forced ids must come back as the same message as on the CPU. The JIT
// (compiler/jit) compiles for the device once and loads from its cache.
//
// Without a CUDA driver or device every test is skipped with the reason.
//
//===----------------------------------------------------------------------===//

#include "compiler/backend/cpu/CpuRouter.h"
#include "compiler/backend/nvptx/NvptxCompiler.h"
#include "compiler/jit/KernelJit.h"
#include "compiler/spec/SpecParser.h"
#include "runtime/Error.h"
#include "runtime/cuda/CudaDriver.h"
#include "runtime/cuda/CudaRouter.h"
#include "tests/unit/RoutingTestInputs.h"
#include "RuntimeTestUtil.h"

#include "llvm/Support/FileSystem.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>

namespace {

using namespace moegen;

/// The reason GPU tests cannot run here, or empty.
std::string gpuUnavailable() {
  try {
    const rt::CudaDriver &driver = rt::CudaDriver::get();
    if (driver.deviceCount() == 0)
      return "no CUDA device";
  } catch (const rt::Error &e) {
    return e.what();
  }
  return "";
}

std::string archOfDevice() {
  const rt::CudaDriver &driver = rt::CudaDriver::get();
  CUdevice device;
  driver.check(driver.deviceGet(&device, 0), "cuDeviceGet");
  int major = 0, minor = 0;
  driver.check(driver.deviceGetAttribute(
                   &major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device),
               "cuDeviceGetAttribute");
  driver.check(driver.deviceGetAttribute(
                   &minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device),
               "cuDeviceGetAttribute");
  return nvptx::archForComputeCapability(major, minor);
}

using routingtest::Inputs;
using routingtest::makeInputs;

struct Outputs {
  std::vector<int32_t> ids;
  std::vector<float> weights;
  std::vector<int32_t> counts, offsets, slots, positions;
  std::string error;
};

class GpuBackendTest : public ::testing::Test {
protected:
  void SetUp() override {
    std::string reason = gpuUnavailable();
    if (!reason.empty())
      GTEST_SKIP() << "GPU test skipped: " << reason;
  }

  /// Compiles `spec` for this device and loads it.
  std::unique_ptr<rt::CudaRouter> build(const RoutingSpec &spec) {
    nvptx::NvptxCompileOptions options;
    options.arch = archOfDevice();
    auto result = nvptx::compile(spec, options, nvptx::Stage::Cubin);
    if (!result) {
      ADD_FAILURE() << nvptx::takeCompileError(result.takeError()).second;
      return nullptr;
    }
    llvm::SmallString<128> dir;
    EXPECT_FALSE(llvm::sys::fs::createUniqueDirectory("moegen-gpu-test", dir));
    if (llvm::Error error =
            nvptx::writeKernelDirectory(spec, *result, std::string(dir)))
      ADD_FAILURE() << nvptx::takeCompileError(std::move(error)).second;
    auto router = rt::CudaRouter::load(std::string(dir));
    std::filesystem::remove_all(std::string(dir));
    return router;
  }

  Outputs runGpu(rt::CudaRouter &router, const RoutingSpec &spec,
                 const Inputs &in, bool replay) {
    const int64_t t = in.tokens, e = spec.numExperts, k = spec.topK;
    auto upload = [&](const void *data, size_t bytes) {
      rt::DeviceBuffer buffer = router.allocate(std::max<size_t>(bytes, 8));
      if (bytes)
        buffer.upload(data, bytes, nullptr);
      return buffer;
    };
    rt::DeviceBuffer logits = upload(in.logits.data(), in.logits.size());
    rt::DeviceBuffer bias = upload(in.bias.data(), in.bias.size() * 4);
    rt::DeviceBuffer tokenIds = upload(in.tokenIds.data(), in.tokenIds.size() * 4);
    rt::DeviceBuffer table = upload(in.hashTable.data(), in.hashTable.size() * 4);
    rt::DeviceBuffer forced = upload(in.forcedIds.data(), in.forcedIds.size() * 4);
    rt::RouteBuffers buffers = router.allocateBuffers(t, spec.dispatch);
    rt::RouteInputs inputs;
    inputs.numTokens = t;
    inputs.logits = logits.get();
    rt::RouteOutputs out;
    if (replay) {
      inputs.forcedIds = forced.get();
      out = router.replay(inputs, buffers, nullptr);
    } else if (spec.selection == Selection::Hash) {
      inputs.tokenIds = tokenIds.get();
      inputs.hashTable = table.get();
      inputs.hashVocab = in.vocab;
      out = router.routeHash(inputs, buffers, nullptr);
    } else {
      if (spec.scoreBias)
        inputs.bias = bias.get();
      out = router.route(inputs, buffers, nullptr);
    }
    Outputs result;
    result.error = router.readError(nullptr, out.error);
    // The router makes its context current only around its own calls.
    rt::ScopedContext scope(router.driver(), router.context());
    auto download = [&](CUdeviceptr from, auto &to, size_t count) {
      to.resize(count);
      if (count)
        router.driver().check(
            router.driver().memcpyDtoHAsync(to.data(), from, count * 4, nullptr),
            "download");
    };
    download(out.topkIds, result.ids, t * k);
    download(out.topkWeights, result.weights, t * k);
    if (spec.dispatch && out.expertCounts) {
      download(out.expertCounts, result.counts, e);
      download(out.expertOffsets, result.offsets, e + 1);
      download(out.sortedSlots, result.slots, t * k);
      download(out.slotPositions, result.positions, t * k);
    }
    router.driver().check(router.driver().streamSynchronize(nullptr), "sync");
    return result;
  }

  Outputs runCpu(const RoutingSpec &spec, const Inputs &in, bool replay) {
    auto compiled = cpu::CpuRouter::compile(spec, {});
    if (!compiled) {
      ADD_FAILURE() << llvm::toString(compiled.takeError());
      return {};
    }
    std::unique_ptr<cpu::CpuRouter> router = std::move(*compiled);
    const int64_t t = in.tokens, e = spec.numExperts, k = spec.topK;
    Outputs result;
    result.ids.resize(t * k);
    result.weights.resize(t * k);
    cpu::RouterCall call;
    call.numTokens = t;
    call.logits = in.logits.data();
    call.topkIds = result.ids.data();
    call.topkWeights = result.weights.data();
    if (replay) {
      call.forcedIds = in.forcedIds.data();
    } else if (spec.selection == Selection::Hash) {
      call.tokenIds = in.tokenIds.data();
      call.hashTable = in.hashTable.data();
      call.hashVocab = in.vocab;
    } else if (spec.scoreBias) {
      call.bias = in.bias.data();
    }
    if (spec.dispatch && !replay) {
      result.counts.resize(e);
      result.offsets.resize(e + 1);
      result.slots.resize(t * k);
      result.positions.resize(t * k);
      call.expertCounts = result.counts.data();
      call.expertOffsets = result.offsets.data();
      call.sortedSlots = result.slots.data();
      call.slotPositions = result.positions.data();
    }
    result.error = router->run(call);
    return result;
  }

  void compare(const RoutingSpec &spec, const Outputs &gpu, const Outputs &cpu) {
    ASSERT_EQ(gpu.error, cpu.error);
    if (!cpu.error.empty())
      return;
    bool idsEqual = gpu.ids == cpu.ids;
    for (size_t i = 0; i < cpu.ids.size(); ++i) {
      if (gpu.ids[i] != cpu.ids[i])
        continue;
      float tolerance = 1e-5f * std::max(1.0f, std::fabs(cpu.weights[i]));
      ASSERT_NEAR(gpu.weights[i], cpu.weights[i], tolerance)
          << spec.name << " slot " << i;
    }
    // Ids may differ only at near-ties of the keys; every differing slot's
    // weights must then be near-equal too (the tie is in the scores).
    size_t differing = 0;
    for (size_t i = 0; i < cpu.ids.size(); ++i)
      differing += gpu.ids[i] != cpu.ids[i];
    ASSERT_LE(differing, cpu.ids.size() / 1000 + 1) << spec.name;
    if (idsEqual && !cpu.counts.empty()) {
      EXPECT_EQ(gpu.counts, cpu.counts) << spec.name;
      EXPECT_EQ(gpu.offsets, cpu.offsets) << spec.name;
      EXPECT_EQ(gpu.slots, cpu.slots) << spec.name;
      EXPECT_EQ(gpu.positions, cpu.positions) << spec.name;
    }
  }

  void check(const RoutingSpec &spec, uint32_t seed) {
    auto router = build(spec);
    ASSERT_TRUE(router);
    for (int64_t tokens : {1, 131, 2048}) {
      Inputs in = makeInputs(spec, tokens, seed + static_cast<uint32_t>(tokens));
      compare(spec, runGpu(*router, spec, in, false), runCpu(spec, in, false));
      if (spec.replay)
        compare(spec, runGpu(*router, spec, in, true), runCpu(spec, in, true));
    }
  }
};

TEST_F(GpuBackendTest, EveryTemplateMatchesTheCpuBackend) {
  for (const auto &file : std::filesystem::directory_iterator(
           std::string(MOEGEN_SOURCE_DIR) + "/templates")) {
    std::string error;
    auto spec = parseRoutingSpecFile(file.path().string(), error);
    ASSERT_TRUE(spec) << error;
    SCOPED_TRACE(spec->name);
    check(*spec, 1);
  }
}

TEST_F(GpuBackendTest, RandomSpecsMatchTheCpuBackend) {
  std::mt19937 rng(20261123);
  const int64_t experts[] = {2, 3, 8, 12, 60, 64, 128, 160, 256, 384, 512, 1000, 2048, 4096, 8192};
  for (int i = 0; i < 40; ++i) {
    int64_t e = experts[rng() % std::size(experts)];
    int64_t k = 1 + rng() % std::min<int64_t>(e, 64);
    std::string text = "name: random_" + std::to_string(i) +
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
    std::string error;
    auto spec = parseRoutingSpec(text, "random", error);
    ASSERT_TRUE(spec) << error << "\n" << text;
    SCOPED_TRACE(text);
    check(*spec, 100 + i);
  }
}

TEST_F(GpuBackendTest, InvalidForcedIdIsReportedLikeTheCpu) {
  std::string error;
  auto spec = parseRoutingSpecFile(
      std::string(MOEGEN_SOURCE_DIR) + "/templates/deepseek-v3.yaml", error);
  ASSERT_TRUE(spec) << error;
  auto router = build(*spec);
  Inputs in = makeInputs(*spec, 300, 7);
  in.forcedIds[250 * spec->topK + 3] = 999;
  in.forcedIds[17 * spec->topK + 1] = -5;
  Outputs gpu = runGpu(*router, *spec, in, true);
  Outputs cpu = runCpu(*spec, in, true);
  EXPECT_FALSE(cpu.error.empty());
  EXPECT_EQ(gpu.error, cpu.error);
}

TEST_F(GpuBackendTest, JitLoadRouterCompilesForTheDeviceOnce) {
  std::string error;
  auto spec = parseRoutingSpecFile(
      std::string(MOEGEN_SOURCE_DIR) + "/templates/deepseek-v3.yaml", error);
  ASSERT_TRUE(spec) << error;
  rttest::TempDir cache;
  jit::JitOptions options;
  options.cache.directory = cache.path();
  options.cache.alwaysCompile = false;
  rt::CacheEntry first, second;
  auto compiled = jit::loadRouter(*spec, options, rt::LoadOptions{}, &first);
  EXPECT_TRUE(first.compiled);
  EXPECT_EQ(compiled->manifest().archText, archOfDevice());
  auto cached = jit::loadRouter(*spec, options, rt::LoadOptions{}, &second);
  EXPECT_FALSE(second.compiled);
  EXPECT_EQ(second.directory, first.directory);
  Inputs in = makeInputs(*spec, 131, 11);
  compare(*spec, runGpu(*cached, *spec, in, false), runCpu(*spec, in, false));
  compare(*spec, runGpu(*cached, *spec, in, true), runCpu(*spec, in, true));
}

} // namespace
