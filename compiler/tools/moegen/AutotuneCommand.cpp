//===- AutotuneCommand.cpp - moegen autotune ------------------------------===//
//
// For each spec: the candidate CPU configurations the validity model keeps
// (tune::checkCpuConfig: vector widths, tokens per task, top-k methods), each
// compiled once, in parallel; then, per token bucket, every candidate's outputs checked
// against the default configuration's on seeded inputs (ids equal, weights
// within 1e-6 relative: the vector width changes the order of the softmax
// sum) before it is timed like `moegen bench` (warm-up, median of --reps
// samples, pruned after three samples when clearly slower than the best so
// far). A candidate that fails to compile or differs is reported with its
// parameters and skipped. The winner of each bucket goes to the tuning
// database unless it beats the default by less than --min-gain, in which
// case the default is recorded: a tuned config is never slower than the
// default beyond noise.
//
//===----------------------------------------------------------------------===//

#include "compiler/tools/moegen/BenchInputs.h"
#include "compiler/tools/moegen/Commands.h"
#include "compiler/tools/moegen/TuneSearch.h"

#include "compiler/backend/cpu/CpuHostRouter.h"
#include "compiler/jit/KernelJit.h"
#include "compiler/spec/MoEToProgram.h"
#include "compiler/spec/SpecParser.h"
#include "compiler/tune/TuningDb.h"
#include "support/Quote.h"

#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <memory>

namespace moegen::tool {

tune::Origin cpuTuningOrigin(unsigned threads) {
  return tune::cpuOrigin(threads, std::string(MOEGEN_VERSION) + "+codegen." +
                                      jit::codegenFingerprint());
}

namespace {

struct Candidate {
  tune::CpuConfig config;
  std::unique_ptr<rt::HostRouter> router;
  std::string skipped; // why, once it failed
};

/// Vector widths, tokens per task and top-k methods, the heuristic's
/// choice (the default) first. An expert-choice route runs as one task
/// and finds no top-k: only its width is searched.
std::vector<tune::CpuConfig> candidateConfigs(int64_t numExperts,
                                              bool expertChoice) {
  std::vector<tune::CpuConfig> configs{tune::CpuConfig{}};
  const std::vector<int64_t> tasks =
      expertChoice ? std::vector<int64_t>{0} : std::vector<int64_t>{16, 64, 256, 1024};
  const std::vector<std::string> methods =
      expertChoice ? std::vector<std::string>{""}
                   : std::vector<std::string>{"argmax_passes", "insertion",
                                              "lane_lists", "lane_tree",
                                              "token_lanes"};
  for (int64_t width : {4, 8, 16, 32})
    for (int64_t perTask : tasks)
      for (const std::string &topk : methods) {
        tune::CpuConfig config{width, perTask, topk};
        // Lanes beyond the experts only pad every chunk.
        if (width > 8 && width / 2 >= numExperts)
          continue;
        if (tune::checkCpuConfig(config).empty())
          configs.push_back(config);
      }
  return configs;
}

} // namespace

int runAutotune(const AutotuneOptions &options) {
  const bool gpu = options.backend == "cuda" || options.backend == "gpu-emu";
  if (options.backend != "cpu" && !gpu)
    return reportUsage("--backend '" + support::escape(options.backend) +
                       "': unknown backend (available: cpu, cuda, gpu-emu)");
  if (!gpu && !options.arch.empty())
    return reportUsage("--arch: only the GPU backends (cuda, gpu-emu) have "
                       "an arch");
  if (!options.emitCandidates.empty()) {
    if (options.backend != "cuda")
      return reportUsage("--emit-candidates: only with --backend cuda (GPU "
                         "kernels to time where the compiler is not)");
    std::vector<std::pair<std::string, RoutingSpec>> specs;
    if (!readTimedSpecs(options.specPaths, {1}, specs))
      return kExitBadInput;
    char date[32];
    std::time_t now = std::time(nullptr);
    std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&now));
    return emitGpuCandidates(options, specs, date);
  }
  if (options.tokens.empty())
    return reportUsage("--tokens: give at least one token count");
  for (int64_t t : options.tokens)
    if (t < 1 || t > (int64_t{1} << 22))
      return reportUsage("--tokens: " + std::to_string(t) +
                         " must be in [1, 4194304]");
  if (options.dbPath.empty())
    return reportUsage("--db: give the tuning database to write");
  {
    // Refuse a database we could not merge into before spending any time.
    std::string error;
    if (!tune::TuningDb::load(options.dbPath, error)) {
      llvm::errs() << error << "\n";
      return kExitBadInput;
    }
    std::error_code ec;
    std::filesystem::path parent =
        std::filesystem::absolute(options.dbPath, ec).parent_path();
    if (ec || !std::filesystem::is_directory(parent, ec))
      return reportFile(options.dbPath, "--db: the directory does not exist");
  }
  std::vector<std::pair<std::string, RoutingSpec>> specs;
  if (!readTimedSpecs(options.specPaths, options.tokens, specs))
    return kExitBadInput;

  char date[32];
  std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&now));
  if (gpu)
    return runGpuAutotune(options, specs, date);
  const tune::Origin origin = cpuTuningOrigin(options.threads);
  const int reps = options.reps ? options.reps : 9;
  llvm::raw_ostream &log = llvm::errs();
  std::vector<tune::Entry> entries;

  for (const auto &[path, spec] : specs) {
    const rt::RouterFacts facts = cpu::routerFactsOf(spec);
    std::vector<Candidate> candidates;
    for (const tune::CpuConfig &config :
         candidateConfigs(facts.numExperts, spec.expertChoice))
      if (!options.maxCandidates ||
          int64_t(candidates.size()) < options.maxCandidates)
        candidates.push_back({config, nullptr, ""});
    log << spec.name << ": " << candidates.size()
        << " candidates (the default first), " << options.tokens.size()
        << " token counts\n";
    // Compile each candidate once for every bucket, before any timing:
    // compiles running beside a timed call would skew it.
    std::vector<std::string> errors =
        compileInParallel(candidates.size(), [&](size_t i) -> std::string {
          Candidate &c = candidates[i];
          cpu::CpuCompileOptions compileOptions;
          compileOptions.vectorWidth = c.config.vectorWidth;
          compileOptions.tokensPerTask = c.config.tokensPerTask;
          compileOptions.topk = c.config.topk;
          compileOptions.threads = options.threads;
          auto compiled = cpu::CpuHostRouter::compile(spec, compileOptions);
          if (!compiled)
            return llvm::toString(compiled.takeError());
          c.router = std::move(*compiled);
          return "";
        });
    // Failures in candidate order, as if compiled one by one.
    for (size_t i = 0; i < candidates.size(); ++i) {
      if (errors[i].empty())
        continue;
      Candidate &c = candidates[i];
      c.skipped = "does not compile: " + errors[i];
      if (i == 0) {
        llvm::errs() << path << ": internal error: the default "
                                "configuration does not compile: "
                     << c.skipped << "\n";
        return kExitInternal;
      }
      log << "  skipped " << c.config.describe() << ": " << c.skipped << "\n";
    }

    for (int64_t tokens : options.tokens) {
      BenchCall reference;
      makeCall(facts, tokens, /*dispatch=*/false, reference);
      if (std::string error = candidates[0].router->run(reference.call);
          !error.empty()) {
        llvm::errs() << path << ": internal error: the default configuration "
                                "failed on valid inputs: "
                     << error << "\n";
        return kExitInternal;
      }
      BenchCall call;
      const BucketChoice choice = searchBucket(
          tokens, candidates.size(), reps, options.minGain,
          [&](size_t i) { return candidates[i].config.describe(); },
          [&](size_t i) -> std::optional<CandidateRun> {
            Candidate &c = candidates[i];
            if (!c.router)
              return std::nullopt;
            call = BenchCall();
            makeCall(facts, tokens, /*dispatch=*/false, call);
            if (std::string error = c.router->run(call.call); !error.empty())
              return CandidateRun{error, nullptr};
            if (std::string diff = compareOutputs(call, reference,
                                                  tokens * facts.topK, 1e-6);
                !diff.empty())
              return CandidateRun{"differs from the default at " + diff,
                                  nullptr};
            // Calls per sample from one call's time.
            Clock::time_point start = Clock::now();
            c.router->run(call.call);
            double one = std::max(secondsSince(start), 1e-9);
            int64_t calls = std::max<int64_t>(
                1, int64_t(std::ceil(options.minSampleMs / 1e3 / one)));
            return CandidateRun{"", [&c, &call, calls] {
                                  Clock::time_point begin = Clock::now();
                                  for (int64_t n = 0; n < calls; ++n)
                                    c.router->run(call.call);
                                  return secondsSince(begin) / double(calls) *
                                         1e6;
                                }};
          });
      tune::Entry entry = reportBucket(
          spec, origin, tokens, choice, candidates.size(),
          candidates[choice.index].config.describe(), date);
      entry.config = candidates[choice.index].config;
      entries.push_back(entry);
    }
  }
  if (std::string error = tune::TuningDb::merge(options.dbPath, entries);
      !error.empty()) {
    llvm::errs() << error << "\n";
    return kExitBadInput;
  }
  llvm::outs() << "wrote " << entries.size() << " entries to "
               << options.dbPath << "\n";
  return kExitOk;
}

} // namespace moegen::tool
