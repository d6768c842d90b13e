//===- BenchCommand.cpp - moegen bench ------------------------------------===//
//
// Times the route entry point of each spec (and dispatch after it, with
// --dispatch) on the CPU backend for each token count: the median and the
// 10th/90th percentiles of --reps samples, each sample as many back-to-back
// calls as fill --min-sample-ms, after a warm-up call that must succeed.
// Beside each time: tokens/s, the bytes the call must move (logits, bias,
// hash rows, ids and weights, dispatch's arrays) and the GB/s that makes,
// against the machine's copy bandwidth measured in the same run (a memcpy of
// --copy-mib MiB, read + write counted): the roofline. --json writes the
// same figures for machines; tests/bench/plot_bench.py draws them.
//
// Timings are measurements, not tests: nothing here fails on a slow run.
//
//===----------------------------------------------------------------------===//

#include "compiler/tools/moegen/Commands.h"
#include "compiler/tools/moegen/BenchInputs.h"

#include "compiler/backend/cpu/CpuHostRouter.h"
#include "compiler/spec/MoEToProgram.h"
#include "compiler/spec/SpecParser.h"
#include "runtime/npy/HalfFloat.h"
#include "support/Quote.h"

#include "llvm/Support/Format.h"
#include "llvm/Support/raw_ostream.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <ctime>
#include <fstream>
#include <numeric>
#include <random>
#include <thread>

namespace moegen::tool {

namespace {

/// Read + write bandwidth of memcpy over `bytes`, the best of five, in GB/s.
double copyBandwidth(size_t bytes) {
  std::vector<char> source(bytes, 1), target(bytes, 0);
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    Clock::time_point start = Clock::now();
    std::memcpy(target.data(), source.data(), bytes);
    double seconds = secondsSince(start);
    // Read the target so the copy cannot be elided.
    if (target[bytes / 2] != 1)
      return 0;
    best = std::max(best, 2.0 * double(bytes) / seconds / 1e9);
  }
  return best;
}

} // namespace

bool readTimedSpecs(const std::vector<std::string> &paths,
                    const std::vector<int64_t> &tokenCounts,
                    std::vector<std::pair<std::string, RoutingSpec>> &specs) {
  for (const std::string &path : paths) {
    std::string error;
    std::optional<RoutingSpec> spec = parseRouterFile(path, error);
    if (!spec) {
      llvm::errs() << error << "\n";
      return false;
    }
    // Every call's buffers are allocated at once: refuse sizes that would
    // not fit before anything is timed.
    const rt::RouterFacts facts = cpu::routerFactsOf(*spec);
    for (int64_t tokens : tokenCounts)
      if (callBytes(facts, tokens) > kMaxCallBytes) {
        reportFile(path, "--tokens: T = " + std::to_string(tokens) +
                             " with E = " + std::to_string(facts.numExperts) +
                             " needs " +
                             std::to_string(int64_t(callBytes(facts, tokens) /
                                                    (1 << 20))) +
                             " MiB per call; at most 8 GiB");
        return false;
      }
    specs.emplace_back(path, *spec);
  }
  return true;
}

int runBench(const BenchOptions &options) {
  if (options.backend != "cpu")
    return reportUsage(
        "--backend '" + support::escape(options.backend) +
        "': moegen bench times the cpu backend; GPU kernels are timed with "
        "CUDA events by tests/gpu/bench_routing.py (docs/benchmarks.md)");
  if (options.tokens.empty())
    return reportUsage("--tokens: give at least one token count");
  for (int64_t t : options.tokens)
    if (t < 1 || t > (int64_t{1} << 22))
      return reportUsage("--tokens: " + std::to_string(t) +
                         " must be in [1, 4194304]");
  // Check the JSON destination before any time is spent.
  if (!options.jsonPath.empty() && options.jsonPath != "-") {
    std::error_code ec;
    std::filesystem::path parent =
        std::filesystem::absolute(options.jsonPath, ec).parent_path();
    if (ec || !std::filesystem::is_directory(parent, ec))
      return reportFile(options.jsonPath,
                        "--json: the directory does not exist");
  }

  std::vector<std::pair<std::string, RoutingSpec>> specs;
  if (!readTimedSpecs(options.specPaths, options.tokens, specs))
    return kExitBadInput;

  const unsigned threads =
      options.threads ? options.threads
                      : std::max(1u, std::thread::hardware_concurrency());
  const double copyGBs = copyBandwidth(size_t(options.copyMiB) << 20);
  nlohmann::json report = {
      {"moegen_version", MOEGEN_VERSION},
      {"backend", "cpu"},
      {"cpu", cpuModel()},
      {"threads", threads},
      {"copy_bandwidth_gbs", copyGBs},
      {"copy_bytes", options.copyMiB << 20},
      {"reps", options.reps},
      {"results", nlohmann::json::array()}};
  {
    char date[32];
    std::time_t now = std::time(nullptr);
    std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&now));
    report["date"] = date;
  }
  llvm::raw_ostream &out = options.jsonPath == "-" ? llvm::errs() : llvm::outs();
  out << "moegen bench: cpu backend, " << threads << " threads ("
      << report["cpu"].get<std::string>() << "); copy bandwidth "
      << llvm::format("%.1f", copyGBs) << " GB/s (memcpy of "
      << options.copyMiB << " MiB, read + write)\n";

  for (const auto &[path, spec] : specs) {
    const rt::RouterFacts facts = cpu::routerFactsOf(spec);
    const bool dispatch = options.dispatch && facts.dispatch;
    if (options.dispatch && !facts.dispatch)
      return reportFile(path, "--dispatch: the spec has no dispatch entry "
                              "point");
    cpu::CpuCompileOptions compileOptions;
    compileOptions.threads = options.threads;
    auto compiled = cpu::CpuHostRouter::compile(spec, compileOptions);
    if (!compiled) {
      llvm::errs() << path << ": internal error: the CPU backend cannot "
                              "compile this spec: "
                   << llvm::toString(compiled.takeError())
                   << "\nrepro: moegen run " << path
                   << " --backend cpu --dump-ir DIR\n";
      return kExitInternal;
    }
    rt::HostRouter &router = **compiled;
    std::string entry =
        std::string(facts.hashSelection ? "route_hash" : "route") +
        (dispatch ? " + dispatch" : "");
    const char *dtype = facts.logits == rt::RouterFacts::Logits::F32 ? "f32"
                        : facts.logits == rt::RouterFacts::Logits::BF16
                            ? "bf16"
                            : "f16";
    out << "\n" << spec.name << " (E " << facts.numExperts << ", k "
        << facts.topK << ", " << dtype << " logits, " << entry << ")\n";
    out << "        T   median us      p10 us      p90 us       tokens/s"
           "    MB moved     GB/s  % copy\n";
    for (int64_t tokens : options.tokens) {
      BenchCall c;
      makeCall(facts, tokens, dispatch, c);
      // Warm-up; valid inputs must route.
      if (std::string error = router.run(c.call); !error.empty()) {
        llvm::errs() << path << ": internal error: a benchmark call failed "
                                "on valid inputs: "
                     << error << "\n";
        return kExitInternal;
      }
      // Calls per sample: enough to fill the minimum sample time.
      Clock::time_point start = Clock::now();
      router.run(c.call);
      double one = std::max(secondsSince(start), 1e-9);
      Timing timing;
      timing.callsPerSample = std::max<int64_t>(
          1, int64_t(std::ceil(options.minSampleMs / 1e3 / one)));
      std::vector<double> samples;
      for (int rep = 0; rep < options.reps; ++rep) {
        start = Clock::now();
        for (int64_t i = 0; i < timing.callsPerSample; ++i)
          router.run(c.call);
        samples.push_back(secondsSince(start) / double(timing.callsPerSample));
      }
      std::sort(samples.begin(), samples.end());
      timing.median = percentile(samples, 0.5);
      timing.p10 = percentile(samples, 0.1);
      timing.p90 = percentile(samples, 0.9);
      const double gbs = c.bytes / timing.median / 1e9;
      out << llvm::format("%9lld %11.2f %11.2f %11.2f %14.0f %11.3f %8.2f "
                          "%6.1f%%\n",
                          (long long)tokens, timing.median * 1e6,
                          timing.p10 * 1e6, timing.p90 * 1e6,
                          double(tokens) / timing.median, c.bytes / 1e6, gbs,
                          copyGBs > 0 ? 100.0 * gbs / copyGBs : 0.0);
      report["results"].push_back(
          {{"spec", spec.name},
           {"path", path},
           {"entry", entry},
           {"num_experts", facts.numExperts},
           {"top_k", facts.topK},
           {"tokens", tokens},
           {"median_us", timing.median * 1e6},
           {"p10_us", timing.p10 * 1e6},
           {"p90_us", timing.p90 * 1e6},
           {"calls_per_sample", timing.callsPerSample},
           {"tokens_per_s", double(tokens) / timing.median},
           {"bytes", c.bytes},
           {"gbs", gbs},
           {"copy_fraction", copyGBs > 0 ? gbs / copyGBs : 0.0}});
    }
  }
  out.flush();
  if (!options.jsonPath.empty())
    return writeOutput(options.jsonPath, report.dump(2) + "\n");
  return kExitOk;
}

} // namespace moegen::tool
