//===- JitCacheBench.cpp - Cost of a JIT cache miss and of a hit ----------===//
//
// moegen-bench-jit: for every template (or the specs given), the time of
// moegen::jit::compileCached on a miss (compile, ptxas, checksum, publish)
// and on a hit (key, checksum check of the entry), in a private temporary
// cache. An engine pays the miss once per spec, arch and compiler build, and
// the hit at every start. Median of --reps samples each; the ptxas --version
// the key needs is run once per process, before the first sample.
//
//   moegen-bench-jit [--arch sm_90] [--reps 5] [SPEC.yaml ...]
//
// See docs/benchmarks.md for measured figures.
//
//===----------------------------------------------------------------------===//

#include "compiler/jit/KernelJit.h"
#include "compiler/spec/SpecParser.h"
#include "runtime/Error.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <unistd.h>

namespace {

namespace fs = std::filesystem;

double medianMs(std::vector<double> samples) {
  std::sort(samples.begin(), samples.end());
  return samples[samples.size() / 2];
}

template <typename Body> double timeMs(Body body) {
  auto start = std::chrono::steady_clock::now();
  body();
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now() - start)
      .count();
}

} // namespace

int main(int argc, char **argv) {
  std::string arch = "sm_90";
  int reps = 5;
  std::vector<std::string> specs;
  CLI::App app{"moegen-bench-jit: the JIT cache's miss (compile) and hit "
               "costs per spec, in a temporary cache."};
  app.add_option("SPEC", specs, "routing specs (default: every template)");
  app.add_option("--arch", arch, "GPU architecture of the kernels")
      ->capture_default_str();
  app.add_option("--reps", reps, "samples per figure (the median is shown)")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError &e) {
    if (e.get_exit_code() == 0)
      return app.exit(e);
    std::fprintf(stderr, "moegen-bench-jit: error: %s (see --help)\n",
                 e.what());
    return 2;
  }
  if (specs.empty())
    for (const fs::directory_entry &entry :
         fs::directory_iterator(MOEGEN_SOURCE_DIR "/templates"))
      if (entry.path().extension() == ".yaml")
        specs.push_back(entry.path().string());
  std::sort(specs.begin(), specs.end());

  std::string cache = (fs::temp_directory_path() /
                       ("moegen-bench-jit-" + std::to_string(::getpid())))
                          .string();
  std::printf("arch %s, median of %d, cache %s\n", arch.c_str(), reps,
              cache.c_str());
  std::printf("%-28s %12s %12s\n", "spec", "miss (ms)", "hit (ms)");
  int status = 0;
  for (const std::string &path : specs) {
    std::string error;
    std::optional<moegen::RoutingSpec> spec =
        moegen::parseRoutingSpecFile(path, error);
    if (!spec) {
      std::fprintf(stderr, "%s\n", error.c_str());
      return 2;
    }
    moegen::jit::JitOptions options;
    options.compile.arch = arch;
    options.cache.directory = cache;
    try {
      moegen::jit::cacheKeyFor(*spec, options.compile); // ptxas --version once
      std::vector<double> misses, hits;
      for (int r = 0; r < reps; ++r) {
        options.cache.alwaysCompile = true;
        misses.push_back(
            timeMs([&] { moegen::jit::compileCached(*spec, options); }));
        options.cache.alwaysCompile = false;
        hits.push_back(timeMs([&] {
          if (moegen::jit::compileCached(*spec, options).compiled)
            throw moegen::rt::Error(moegen::rt::Error::Kind::Cache,
                                    "a hit compiled");
        }));
      }
      std::printf("%-28s %12.1f %12.3f\n", spec->name.c_str(),
                  medianMs(misses), medianMs(hits));
    } catch (const moegen::rt::Error &e) {
      std::fprintf(stderr, "%s: %s\n", path.c_str(), e.what());
      status = 1;
    }
  }
  std::error_code ignored;
  fs::remove_all(cache, ignored);
  return status;
}
