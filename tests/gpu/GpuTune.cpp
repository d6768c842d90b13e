//===- GpuTune.cpp - moegen-gpu-check --tune: GPU schedules timed here ----===//
//
// The GPU half of `moegen autotune --backend cuda` for GPU machines without
// the compiler: `moegen autotune SPEC... --backend cuda --emit-candidates
// DIR` compiles each spec's candidate schedules where the compiler is;
// here, each candidate's route kernel runs on seeded inputs, its outputs
// are checked against the default schedule's (ids equal, weights within
// 1e-5 relative), and it is timed as moegen autotune times it (CUDA
// events around one call, 256 MiB written before each so that L2 is cold,
// three warm-up calls, the median of --reps). The winners go into a tuning
// database (compiler/tune/TuningDb.h, no LLVM) under this device's name,
// the candidates' arch and the compiler version that built them, so that
// `moegen run --backend cuda` of that build on this device uses them.
//
//===----------------------------------------------------------------------===//

#include "tests/gpu/GpuTune.h"

#include "compiler/tune/TuningDb.h"
#include "runtime/Error.h"
#include "runtime/cuda/CudaRouter.h"
#include "runtime/cuda/DeviceTimer.h"
#include "runtime/npy/HalfFloat.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace moegen::gpucheck {

namespace {

namespace fs = std::filesystem;
namespace rt = moegen::rt;
using nlohmann::json;

struct Candidate {
  tune::GpuConfig config;
  std::unique_ptr<rt::CudaRouter> router;
};

/// One token count's inputs on the device, shared by every candidate (one
/// context), generated and uploaded once.
struct Call {
  std::vector<rt::DeviceBuffer> inputs;
  rt::RouteInputs in;
};

/// Seeded inputs for `tokens` tokens, as the route kernel's parameters ask.
void makeCall(const rt::CudaRouter &router, int64_t tokens, Call &call) {
  const rt::Manifest &manifest = router.manifest();
  const rt::Kernel &route = *manifest.find(rt::EntryKind::Route);
  const int64_t e = manifest.numExperts, k = manifest.topK;
  std::mt19937 rng(uint32_t(tokens) * 2654435761u + uint32_t(e));
  std::normal_distribution<float> normal(0.0f, 2.0f);
  auto add = [&](const void *data, size_t bytes) {
    call.inputs.push_back(router.allocate(std::max<size_t>(bytes, 8)));
    if (data && bytes)
      call.inputs.back().upload(data, bytes, nullptr);
    return call.inputs.back().get();
  };
  // `count` normal values in the logits' type.
  auto logits = [&](int64_t count) {
    std::vector<uint8_t> bytes;
    if (manifest.logitsDType == rt::DType::F32) {
      std::vector<float> values(count);
      for (float &x : values)
        x = normal(rng);
      bytes.resize(values.size() * 4);
      std::memcpy(bytes.data(), values.data(), bytes.size());
    } else {
      std::vector<uint16_t> values(count);
      for (uint16_t &x : values)
        x = manifest.logitsDType == rt::DType::BF16
                ? npy::floatToBf16(normal(rng))
                : npy::floatToHalf(normal(rng));
      bytes.resize(values.size() * 2);
      std::memcpy(bytes.data(), values.data(), bytes.size());
    }
    return add(bytes.data(), bytes.size());
  };
  call.in.numTokens = tokens;
  call.in.logits = logits(tokens * e);
  if (route.findParam("bias") >= 0) {
    std::vector<float> bias(e);
    for (float &b : bias)
      b = 0.01f * normal(rng);
    call.in.bias = add(bias.data(), bias.size() * 4);
  }
  if (route.findParam("capture") >= 0) {
    call.in.capture = add(nullptr, size_t(tokens * k) * 4);
    call.in.captureLayers = 1;
  }
  if (route.findParam("shared_gate_logits") >= 0)
    call.in.sharedGateLogits = logits(tokens);
}

/// A candidate's own outputs for `tokens` tokens, its ids filled with -1s
/// so that a kernel that writes nothing cannot pass for the default.
rt::RouteBuffers outputsFor(const rt::CudaRouter &router, int64_t tokens) {
  rt::RouteBuffers buffers = router.allocateBuffers(
      std::max<int64_t>(1, tokens), /*withDispatch=*/false);
  const rt::CudaDriver &driver = router.driver();
  rt::ScopedContext scope(driver, router.context());
  driver.check(driver.memsetD8Async(buffers.outputs().topkIds, 0xff,
                                    size_t(std::max<int64_t>(1, tokens) *
                                           router.manifest().topK) *
                                        4,
                                    nullptr),
               "cuMemsetD8Async");
  return buffers;
}

/// The ids and weights a call wrote.
std::pair<std::vector<int32_t>, std::vector<float>>
download(const rt::CudaRouter &router, const rt::RouteBuffers &buffers,
         int64_t tokens) {
  const size_t slots = size_t(tokens * router.manifest().topK);
  std::vector<int32_t> ids(slots);
  std::vector<float> weights(slots);
  const rt::RouteOutputs out = buffers.outputs();
  const rt::CudaDriver &driver = router.driver();
  rt::ScopedContext scope(driver, router.context());
  if (slots) {
    driver.check(driver.memcpyDtoHAsync(ids.data(), out.topkIds, slots * 4,
                                        nullptr),
                 "cuMemcpyDtoHAsync");
    driver.check(driver.memcpyDtoHAsync(weights.data(), out.topkWeights,
                                        slots * 4, nullptr),
                 "cuMemcpyDtoHAsync");
  }
  driver.check(driver.streamSynchronize(nullptr), "cuStreamSynchronize");
  return {ids, weights};
}

std::string today() {
  char date[32];
  std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&now));
  return date;
}

} // namespace

int tuneCandidates(const fs::path &dir, const std::vector<int64_t> &tokenCounts,
                   int reps, const std::string &dbPath, double minGain) {
  std::ifstream in(dir / "candidates.json");
  json index = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (index.is_discarded() ||
      index.value("format", "") != "moegen-tuning-candidates" ||
      index.value("version", 0) != 1 || !index.contains("specs")) {
    std::fprintf(stderr,
                 "%s: error: not a candidates.json of moegen autotune "
                 "--emit-candidates (format moegen-tuning-candidates, "
                 "version 1)\n",
                 (dir / "candidates.json").c_str());
    return 2;
  }
  {
    std::string error;
    if (!tune::TuningDb::load(dbPath, error)) {
      std::fprintf(stderr, "%s\n", error.c_str());
      return 2;
    }
  }
  const std::string arch = index.value("arch", "");
  const rt::CudaDriver &driver = rt::CudaDriver::get();
  char name[256] = {};
  driver.check(driver.deviceGetName(name, sizeof name - 1, 0),
               "cuDeviceGetName");
  tune::Origin origin;
  origin.backend = "cuda";
  origin.machine = std::string(name) + ", " + arch;
  origin.compilerVersion = index.value("compiler_version", "");
  std::printf("tuning on %s with the candidates of %s (compiler %s)\n",
              origin.machine.c_str(), dir.c_str(),
              origin.compilerVersion.c_str());

  std::vector<tune::Entry> entries;
  for (const json &spec : index["specs"]) {
    const std::string specName = spec.value("spec_name", "");
    std::vector<Candidate> candidates;
    for (const json &item : spec.at("candidates")) {
      const json &config = item.at("config");
      Candidate c;
      c.config = {config.at("lanes_per_token").get<int64_t>(),
                  config.at("tokens_per_block").get<int64_t>(),
                  config.at("topk").get<std::string>()};
      c.router = rt::CudaRouter::load(
          (dir / item.at("dir").get<std::string>()).string());
      candidates.push_back(std::move(c));
    }
    if (candidates.empty() ||
        !candidates[0].router->hasEntry(rt::EntryKind::Route)) {
      std::printf("%s: skipped (no route kernel to time)\n", specName.c_str());
      continue;
    }
    std::printf("%s: %zu candidates (the default first)\n", specName.c_str(),
                candidates.size());
    rt::DeviceTimer timer(driver, candidates[0].router->context());
    for (int64_t tokens : tokenCounts) {
      Call call;
      makeCall(*candidates[0].router, tokens, call);
      rt::RouteBuffers reference = outputsFor(*candidates[0].router, tokens);
      candidates[0].router->route(call.in, reference, nullptr);
      candidates[0].router->checkErrors(nullptr, reference.outputs().error);
      const auto [wantIds, wantWeights] =
          download(*candidates[0].router, reference, tokens);
      double best = 0, defaultTime = 0;
      size_t bestIndex = 0;
      for (size_t i = 0; i < candidates.size(); ++i) {
        const rt::CudaRouter &router = *candidates[i].router;
        const std::string described = candidates[i].config.describe();
        const rt::RouteBuffers buffers = outputsFor(router, tokens);
        auto run = [&](CUstream stream) {
          router.route(call.in, buffers, stream);
        };
        for (int warm = 0; warm < 3; ++warm)
          timer.sampleUs(run, nullptr);
        if (std::string error =
                router.readError(nullptr, buffers.outputs().error);
            !error.empty()) {
          std::printf("  T=%lld skipped %s: %s\n", (long long)tokens,
                      described.c_str(), error.c_str());
          continue;
        }
        const auto [ids, weights] = download(router, buffers, tokens);
        std::string differs;
        for (size_t s = 0; s < ids.size() && differs.empty(); ++s)
          if (ids[s] != wantIds[s] ||
              !(std::fabs(weights[s] - wantWeights[s]) <=
                1e-5 * std::fabs(wantWeights[s]) + 1e-9))
            differs = "slot " + std::to_string(s);
        if (!differs.empty()) {
          std::printf("  T=%lld skipped %s: differs from the default at %s\n",
                      (long long)tokens, described.c_str(), differs.c_str());
          continue;
        }
        std::vector<double> samples;
        const tune::Measurement timed = tune::measure(reps, best, [&] {
          samples.push_back(timer.sampleUs(run, nullptr));
          return samples.back();
        });
        const rt::TimingSummary spread = rt::summarize(samples);
        std::printf("  T=%lld %s: %.2f us (p10 %.2f, p90 %.2f)%s\n",
                    (long long)tokens, described.c_str(), timed.median,
                    spread.p10Us, spread.p90Us,
                    timed.pruned ? ", pruned" : "");
        if (i == 0)
          defaultTime = timed.median;
        if (!timed.pruned && (best == 0 || timed.median < best)) {
          best = timed.median;
          bestIndex = i;
        }
      }
      bestIndex = tune::winner(bestIndex, best, defaultTime, minGain);
      if (bestIndex == 0)
        best = defaultTime;
      std::printf("%s T=%lld: default %.2f us, tuned %.2f us (%.2fx): %s\n",
                  specName.c_str(), (long long)tokens, defaultTime, best,
                  best > 0 ? defaultTime / best : 1.0,
                  bestIndex == 0
                      ? "the default"
                      : candidates[bestIndex].config.describe().c_str());
      tune::Entry entry;
      entry.specHash = spec.value("spec_hash", "");
      entry.specName = specName;
      entry.origin = origin;
      entry.tokens = tokens;
      entry.gpu = candidates[bestIndex].config;
      entry.defaultUs = defaultTime;
      entry.tunedUs = best;
      entry.candidates = int64_t(candidates.size());
      entry.date = today();
      entries.push_back(entry);
    }
  }
  if (std::string error = tune::TuningDb::merge(dbPath, entries);
      !error.empty()) {
    std::fprintf(stderr, "%s\n", error.c_str());
    return 2;
  }
  std::printf("wrote %zu entries to %s\n", entries.size(), dbPath.c_str());
  return 0;
}

} // namespace moegen::gpucheck
