//===- GpuRouterBench.cpp - Throughput of the NVPTX kernels ---------------===//
//
// moegen-bench-gpu: JIT-compiles (or takes from the cache) a DeepSeek-V3-like
// router (E 256, k 8, sigmoid,
// bias, 8 groups keep 4, normalize, scale 2.5, f32 logits, dispatch) for the
// device's arch, then times route + dispatch at T = 8192 and T = 65536.
// Prints one line per case: microseconds per call (mean of --reps calls
// enqueued back to back on one stream, timed on the host around a final
// synchronize, so launch gaps count) and the bandwidth of the bytes a call
// must move (logits + bias in, ids + weights + dispatch metadata out), to
// set against the device's copy bandwidth. Without a GPU it says so and
// exits 0.
//
// Usage: moegen-bench-gpu [--reps N] [--tokens T]... [--spec FILE]
//
//===----------------------------------------------------------------------===//

#include "compiler/jit/KernelJit.h"
#include "compiler/spec/SpecParser.h"
#include "runtime/Error.h"
#include "runtime/cuda/CudaDriver.h"
#include "runtime/cuda/CudaRouter.h"

#include <CLI/CLI.hpp>


#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace moegen;

namespace {

constexpr const char *kDeepSeekV3 = "name: bench_deepseek_v3\n"
                                    "num_experts: 256\ntop_k: 8\n"
                                    "scoring: sigmoid\nscore_bias: true\n"
                                    "groups: 8\ntopk_groups: 4\n"
                                    "group_score: top2_sum\nnormalize: true\n"
                                    "scaling_factor: 2.5\ndispatch: true\n";

double seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since)
      .count();
}

} // namespace

int main(int argc, char **argv) {
  int reps = 200;
  std::vector<int64_t> tokenCounts;
  std::string specPath;
  CLI::App app{"moegen-bench-gpu: route (+ dispatch) of the NVPTX kernels "
               "through the runtime, microseconds per call; prints \"no GPU "
               "run\" and exits 0 where there is no GPU."};
  app.add_option("--reps", reps, "back-to-back calls per figure")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  app.add_option("--tokens", tokenCounts,
                 "token counts, repeated or comma-separated (default "
                 "8192,65536)")
      ->delimiter(',')
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  app.add_option("--spec", specPath,
                 "routing spec (default: a DeepSeek-V3-like spec with "
                 "dispatch)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError &e) {
    if (e.get_exit_code() == 0)
      return app.exit(e);
    std::fprintf(stderr, "moegen-bench-gpu: error: %s (see --help)\n",
                 e.what());
    return 2;
  }
  if (tokenCounts.empty())
    tokenCounts = {8192, 65536};

  std::string error;
  std::optional<RoutingSpec> spec =
      specPath.empty() ? parseRoutingSpec(kDeepSeekV3, "deepseek-v3-bench", error)
                       : parseRoutingSpecFile(specPath, error);
  if (!spec) {
    std::fprintf(stderr, "%s\n", error.c_str());
    return 2;
  }

  try {
    const rt::CudaDriver &driver = rt::CudaDriver::get();
    // Compiled for GPU 0 through the JIT cache, as an engine would.
    auto router = jit::loadRouter(*spec, jit::JitOptions{}, rt::LoadOptions{});
    CUdevice device;
    driver.check(driver.deviceGet(&device, 0), "cuDeviceGet");
    char name[256] = {};
    driver.deviceGetName(name, sizeof(name), device);
    std::printf("device: %s (%s), spec %s: E %lld, k %lld, reps %d\n", name,
                router->manifest().archText.c_str(), spec->name.c_str(),
                static_cast<long long>(spec->numExperts),
                static_cast<long long>(spec->topK), reps);

    const int64_t e = spec->numExperts, k = spec->topK;
    for (int64_t t : tokenCounts) {
      std::vector<float> logits(t * e), bias(e);
      std::mt19937 rng(42);
      std::normal_distribution<float> normal(0.0f, 2.0f);
      for (float &x : logits)
        x = normal(rng);
      for (float &b : bias)
        b = 0.1f * normal(rng);
      rt::DeviceBuffer logitsBuffer = router->allocate(logits.size() * 4);
      logitsBuffer.upload(logits.data(), logits.size() * 4, nullptr);
      rt::DeviceBuffer biasBuffer = router->allocate(bias.size() * 4);
      biasBuffer.upload(bias.data(), bias.size() * 4, nullptr);
      rt::RouteBuffers buffers = router->allocateBuffers(t, spec->dispatch);
      rt::RouteInputs inputs;
      inputs.numTokens = t;
      inputs.logits = logitsBuffer.get();
      if (spec->scoreBias)
        inputs.bias = biasBuffer.get();

      // The calls with RouteBuffers record errors in the buffers' record.
      rt::RouteOutputs out = router->route(inputs, buffers, nullptr); // warm-up
      router->checkErrors(nullptr, out.error);
      // The router makes its context current only around its own calls.
      rt::ScopedContext scope(driver, router->context());
      auto start = std::chrono::steady_clock::now();
      for (int r = 0; r < reps; ++r)
        router->route(inputs, buffers, nullptr);
      driver.check(driver.streamSynchronize(nullptr), "sync");
      double perCall = seconds(start) / reps;

      double bytes = t * e * 4.0 + e * 4.0 + t * k * 8.0;
      if (spec->dispatch)
        bytes += (2 * e + 1) * 4.0 + t * k * 8.0;
      std::printf("route%s T=%lld: %.2f us/call, %.3f GB/s of %.1f MB moved\n",
                  spec->dispatch ? "+dispatch" : "",
                  static_cast<long long>(t), perCall * 1e6, bytes / perCall / 1e9,
                  bytes / 1e6);
    }
  } catch (const rt::Error &e) {
    if (e.kind() == rt::Error::Kind::NoDriver ||
        e.kind() == rt::Error::Kind::NoDevice) {
      std::printf("moegen-bench-gpu: no GPU run: %s\n", e.what());
      return 0;
    }
    std::fprintf(stderr, "moegen-bench-gpu: %s\n", e.what());
    return 1;
  }
  return 0;
}
