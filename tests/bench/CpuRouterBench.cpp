//===- CpuRouterBench.cpp - Throughput of the CPU backend -------*- C++ -*-===//
//
// moegen-bench-cpu: tokens/s and GB/s of logits read by the CPU backend
// (CpuRouter::run, route entry point, f32 logits) for T in {1, 64, 4096,
// 65536} and E in {8, 128, 256, 384, 512}, with the golden reference's
// throughput beside it. Two families of specs:
//
//   softmax  softmax, top-8 (top-2 at E = 8, as Mixtral), normalize;
//   dsv3     DeepSeek-V3-like: sigmoid, score_bias, groups 8 keep 4 by
//            top2_sum, top-8, normalize, scale 2.5; only where 8 groups of
//            at least 2 experts divide E (not at E = 8).
//
// Every figure is the median of --reps samples, after a warm-up call; a
// sample times enough back-to-back calls to last at least a few
// milliseconds (std::chrono::steady_clock) and is divided by their number.
// The golden reference is timed the same way, with fewer samples, and only
// up to --golden-max-tokens tokens (4096 by default: at 65536 tokens one
// golden call takes seconds). The ids of one backend call are also compared
// with the golden ones ("agree": fraction of tokens with identical ids; fp32
// near-ties may make a few differ, see tests/unit/CpuBackendTest.cpp).
//
// See docs/benchmarks.md for how to run it and measured figures.
//
//===----------------------------------------------------------------------===//

#include "compiler/backend/cpu/CpuRouter.h"
#include "compiler/spec/RoutingSpec.h"
#include "tests/golden/GoldenRouter.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

using namespace moegen;
using Clock = std::chrono::steady_clock;

namespace {

struct Options {
  bool quick = false;
  unsigned threads = 0;
  std::string topk; // empty: the kernel-config heuristic
  int64_t vectorWidth = 0;
  int reps = 9;
  int goldenReps = 3;
  int64_t goldenMaxTokens = 4096;
  double minSampleSeconds = 0.02;
  std::vector<int64_t> tokens = {1, 64, 4096, 65536};
  std::vector<int64_t> experts = {8, 128, 256, 384, 512};
};

/// The options, or nullopt with the exit code (0 after --help).
std::optional<Options> parseArgs(int argc, char **argv, int &exitCode) {
  Options o;
  CLI::App app{"moegen-bench-cpu: throughput of the CPU backend's route "
               "entry point (f32 logits) and of the golden reference, for T "
               "in {1, 64, 4096, 65536} and E in {8, 128, 256, 384, 512}; "
               "median of --reps samples after a warm-up."};
  app.add_flag("--quick", o.quick,
               "tiny sizes (T in {1, 64}, E in {8, 128}), 3 samples of about "
               "1 ms: a smoke test");
  app.add_option("--threads", o.threads,
                 "worker threads (default: one per hardware thread)")
      ->check(CLI::Range(0u, 1024u));
  app.add_option("--experts", o.experts,
                 "comma-separated expert counts instead of the default set "
                 "(e.g. 1024,4096)")
      ->delimiter(',')
      ->check(CLI::Range(int64_t{2}, int64_t{8192}));
  app.add_option("--tokens", o.tokens,
                 "comma-separated token counts instead of the default set")
      ->delimiter(',')
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  app.add_option("--topk", o.topk,
                 "top-k method (default: the kernel-config heuristic)")
      ->check(CLI::IsMember({"argmax_passes", "insertion", "lane_lists", "lane_tree", "token_lanes"}));
  app.add_option("--vector-width", o.vectorWidth,
                 "lanes (experts, or tokens with token_lanes); default: the "
                 "kernel-config heuristic")
      ->check(CLI::IsMember({0, 1, 2, 4, 8, 16, 32, 64}));
  app.add_option("--reps", o.reps, "samples per figure")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  app.add_option("--golden-max-tokens", o.goldenMaxTokens,
                 "time the golden reference only up to this many tokens")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError &e) {
    exitCode = e.get_exit_code() == 0 ? app.exit(e) : 2;
    if (exitCode)
      std::fprintf(stderr, "moegen-bench-cpu: error: %s (see --help)\n",
                   e.what());
    return std::nullopt;
  }
  if (o.quick) {
    o.tokens = {1, 64};
    o.experts = {8, 128};
    o.reps = std::min(o.reps, 3);
    o.goldenReps = 1;
    o.minSampleSeconds = 0.001;
  }
  return o;
}

/// Deterministic pseudo-random numbers (splitmix64).
struct Rng {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  /// Approximately standard normal: the sum of four uniforms, rescaled.
  float normal() {
    double sum = 0;
    for (int i = 0; i < 4; ++i)
      sum += (next() >> 11) * 0x1.0p-53;
    return static_cast<float>((sum - 2.0) * std::sqrt(3.0));
  }
};

struct Family {
  const char *name;
  /// The spec for E experts, or nullopt where the family does not apply.
  std::function<std::optional<RoutingSpec>(int64_t)> make;
};

std::vector<Family> families() {
  return {
      {"softmax",
       [](int64_t e) -> std::optional<RoutingSpec> {
         RoutingSpec spec;
         spec.name = "bench_softmax";
         spec.numExperts = e;
         spec.topK = e == 8 ? 2 : 8;
         spec.scoring = Scoring::Softmax;
         spec.normalize = true;
         return spec;
       }},
      {"dsv3",
       [](int64_t e) -> std::optional<RoutingSpec> {
         if (e % 8 != 0 || e / 8 < 2)
           return std::nullopt;
         RoutingSpec spec;
         spec.name = "bench_dsv3";
         spec.numExperts = e;
         spec.topK = 8;
         spec.scoring = Scoring::Sigmoid;
         spec.scoreBias = true;
         spec.groups = 8;
         spec.topkGroups = 4;
         spec.groupScore = GroupScore::Top2Sum;
         spec.normalize = true;
         spec.scalingFactor = 2.5;
         return spec;
       }},
  };
}

/// Seconds per call of `call`: the median of `reps` samples, each timing
/// enough back-to-back calls to last at least `minSeconds`.
double timeCall(const std::function<void()> &call, int reps,
                double minSeconds) {
  auto seconds = [](Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
  };
  // Warm-up (first-touch of the outputs, thread-pool start), then calibrate.
  Clock::time_point start = Clock::now();
  call();
  double one = seconds(start, Clock::now());
  int64_t inner = 1;
  while (one * static_cast<double>(inner) < minSeconds && inner < (1 << 20))
    inner *= 2;
  std::vector<double> samples;
  for (int r = 0; r < reps; ++r) {
    start = Clock::now();
    for (int64_t i = 0; i < inner; ++i)
      call();
    samples.push_back(seconds(start, Clock::now()) /
                      static_cast<double>(inner));
  }
  std::sort(samples.begin(), samples.end());
  return samples[samples.size() / 2];
}

std::string today() {
  std::time_t now = std::time(nullptr);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%d", std::localtime(&now));
  return buffer;
}

} // namespace

int main(int argc, char **argv) {
  int exitCode = 0;
  std::optional<Options> options = parseArgs(argc, argv, exitCode);
  if (!options)
    return exitCode;
  const Options &o = *options;

  std::printf("moegen-bench-cpu: %s, %u hardware threads, --threads %u%s, "
              "median of %d samples (golden: %d)\n",
              today().c_str(), std::thread::hardware_concurrency(), o.threads,
              o.threads ? "" : " (one per hardware thread)", o.reps,
              o.goldenReps);
  std::printf("route entry point, f32 logits; GB/s = logits bytes read "
              "(T * E * 4) per second; golden timed up to T = %lld\n\n",
              static_cast<long long>(o.goldenMaxTokens));
  std::printf("| family  |    E |  k |     T | vw |   tpt | cpu us/call | cpu "
              "Mtok/s | cpu GB/s | golden us/call | golden Mtok/s | speedup | "
              "agree |\n");
  std::printf("|---------|-----:|---:|------:|---:|------:|------------:|------"
              "-----:|---------:|---------------:|--------------:|--------:|--"
              "----:|\n");

  int failures = 0;
  std::vector<std::string> notes;
  for (const Family &family : families()) {
    for (int64_t e : o.experts) {
      std::optional<RoutingSpec> spec = family.make(e);
      if (!spec) {
        notes.push_back(std::string(family.name) + " at E = " +
                        std::to_string(e) +
                        ": skipped (needs 8 groups of at least 2 experts)");
        continue;
      }
      const int64_t k = spec->topK;
      cpu::CpuCompileOptions compileOptions;
      compileOptions.threads = o.threads;
      compileOptions.topk = o.topk;
      compileOptions.vectorWidth = o.vectorWidth;
      Clock::time_point compileStart = Clock::now();
      auto compiled = cpu::CpuRouter::compile(*spec, compileOptions);
      std::string error =
          compiled ? "" : llvm::toString(compiled.takeError());
      std::unique_ptr<cpu::CpuRouter> router =
          compiled ? std::move(*compiled) : nullptr;
      const double compileSeconds =
          std::chrono::duration<double>(Clock::now() - compileStart).count();
      if (!router) {
        std::fprintf(stderr, "moegen-bench-cpu: error: %s E=%lld: %s\n",
                     family.name, static_cast<long long>(e), error.c_str());
        ++failures;
        continue;
      }
      std::fprintf(stderr, "  (%s E=%lld: compiled in %.2f s)\n", family.name,
                   static_cast<long long>(e), compileSeconds);

      Rng rng{static_cast<uint64_t>(e) * 7919u};
      std::vector<float> bias(e);
      for (float &b : bias)
        b = 0.05f * rng.normal();
      for (int64_t numTokens : o.tokens) {
        std::vector<float> logits(numTokens * e);
        for (float &l : logits)
          l = 2.0f * rng.normal();
        std::vector<int32_t> ids(numTokens * k);
        std::vector<float> weights(numTokens * k);
        cpu::RouterCall call;
        call.numTokens = numTokens;
        call.logits = logits.data();
        call.bias = spec->scoreBias ? bias.data() : nullptr;
        call.topkIds = ids.data();
        call.topkWeights = weights.data();
        std::string runError;
        const double cpuSeconds = timeCall(
            [&] {
              std::string message = router->run(call);
              if (!message.empty())
                runError = message;
            },
            o.reps, o.minSampleSeconds);
        if (!runError.empty()) {
          std::fprintf(stderr, "moegen-bench-cpu: error: %s E=%lld T=%lld: %s\n",
                       family.name, static_cast<long long>(e),
                       static_cast<long long>(numTokens), runError.c_str());
          ++failures;
          continue;
        }
        const double bytes = static_cast<double>(numTokens * e) * sizeof(float);
        char goldenTime[32] = "skipped", goldenRate[32] = "skipped",
             speedup[32] = "-", agree[32] = "-";
        if (numTokens <= o.goldenMaxTokens) {
          golden::RouterInputs in;
          in.numTokens = numTokens;
          in.logits = logits.data();
          in.bias = spec->scoreBias ? bias.data() : nullptr;
          golden::RouterResult result;
          const double goldenSeconds = timeCall(
              [&] { result = golden::route(*spec, in); }, o.goldenReps,
              o.minSampleSeconds);
          if (!result.ok()) {
            std::fprintf(stderr, "moegen-bench-cpu: golden error: %s\n",
                         result.error.c_str());
            ++failures;
            continue;
          }
          int64_t same = 0;
          for (int64_t t = 0; t < numTokens; ++t)
            same += std::equal(ids.begin() + t * k, ids.begin() + (t + 1) * k,
                               result.outputs.topkIds.begin() + t * k);
          std::snprintf(goldenTime, sizeof goldenTime, "%.1f",
                        goldenSeconds * 1e6);
          std::snprintf(goldenRate, sizeof goldenRate, "%.3f",
                        static_cast<double>(numTokens) / goldenSeconds / 1e6);
          const double ratio = goldenSeconds / cpuSeconds;
          std::snprintf(speedup, sizeof speedup,
                        ratio < 10 ? "%.1fx" : "%.0fx", ratio);
          std::snprintf(agree, sizeof agree, "%.4f",
                        static_cast<double>(same) /
                            static_cast<double>(numTokens));
        }
        std::printf("| %-7s | %4lld | %2lld | %5lld | %2lld | %5lld | %11.1f | "
                    "%10.3f | %8.3f | %14s | %13s | %7s | %5s |\n",
                    family.name, static_cast<long long>(e),
                    static_cast<long long>(k),
                    static_cast<long long>(numTokens),
                    static_cast<long long>(router->vectorWidth()),
                    static_cast<long long>(router->tokensPerTask()),
                    cpuSeconds * 1e6,
                    static_cast<double>(numTokens) / cpuSeconds / 1e6,
                    bytes / cpuSeconds / 1e9, goldenTime, goldenRate, speedup,
                    agree);
        std::fflush(stdout);
      }
    }
  }
  if (o.goldenMaxTokens < o.tokens.back())
    notes.push_back("golden: skipped above T = " +
                    std::to_string(o.goldenMaxTokens) +
                    " (too slow; --golden-max-tokens N to include it)");
  std::printf("\n");
  for (const std::string &note : notes)
    std::printf("note: %s\n", note.c_str());
  if (failures) {
    std::fprintf(stderr, "moegen-bench-cpu: %d configuration(s) failed\n",
                 failures);
    return 1;
  }
  return 0;
}
