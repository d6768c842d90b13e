//===- Commands.h - The commands of the moegen tool -------------*- C++ -*-===//
//
// One file per command (CompileCommand.cpp, RunCommand.cpp,
// CacheCommand.cpp), wired to the command line in main.cpp. A new command
// (autotune, bench) adds its options struct and entry point here, a file of
// its own, and a subcommand in main.cpp.
//
// Exit codes: 0 success; 2 bad input or usage (one line on stderr naming the
// file, key or option and the rule); 1 an internal compiler error (with a
// repro command). Output files are written atomically, so a failed command
// leaves nothing half-written.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_COMPILER_TOOLS_MOEGEN_COMMANDS_H
#define MOEGEN_COMPILER_TOOLS_MOEGEN_COMMANDS_H

#include "compiler/spec/RoutingSpec.h"
#include "compiler/tune/TuningDb.h"
#include "runtime/npy/Npy.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace moegen::tool {

constexpr int kExitOk = 0;
constexpr int kExitInternal = 1;
constexpr int kExitBadInput = 2;

/// Prints "moegen: error: MESSAGE"; returns kExitBadInput.
int reportUsage(const std::string &message);
/// Prints "PATH: error: MESSAGE"; returns kExitBadInput.
int reportFile(const std::string &path, const std::string &message);

/// The specs (or moe IR files) `moegen bench` and `moegen autotune` time,
/// appended to `specs` as (path, spec), each checked to fit one call of
/// every token count (BenchInputs.h, kMaxCallBytes). False after one line
/// on stderr naming the file.
bool readTimedSpecs(const std::vector<std::string> &paths,
                    const std::vector<int64_t> &tokenCounts,
                    std::vector<std::pair<std::string, RoutingSpec>> &specs);

/// `moegen compile SPEC`.
struct CompileOptions {
  std::string specPath;
  std::string emit = "mlir";
  std::string output = "-";
  std::string arch = "sm_90";
  int64_t tokensPerBlock = 0;
  int64_t lanesPerToken = 0;
  std::string dumpDir;
  std::string overrideDir;
  /// --emit=ptx|cubin: the GPU schedules `moegen autotune --backend cuda`
  /// recorded for `tuningDevice` ("NVIDIA H200"), the arch and this build,
  /// a route kernel per token bucket where they differ.
  std::string tuningDb;
  std::string tuningDevice;
  bool noTuning = false;
  /// Print every stage's, pass's and ptxas's time to stderr.
  bool timing = false;
  /// The command as typed, for the repro line of an internal error.
  std::string commandLine;
};
int runCompile(const CompileOptions &options);

/// `moegen run SPEC --backend B --in NAME=FILE... --out DIR`.
struct RunOptions {
  std::string specPath;
  std::string backend;
  /// `--in NAME=FILE` arguments, as given.
  std::vector<std::string> inputs;
  std::string outDir;
  int64_t layer = 0;
  bool layerGiven = false;
  unsigned threads = 0;
  std::string dumpDir;
  /// The tuning database to take the CPU config from (else
  /// $MOEGEN_TUNING_DB); --no-tuning ignores both.
  std::string tuningDb;
  bool noTuning = false;
  /// Print the kernel config used and where it came from, on stderr.
  bool printConfig = false;
  /// The command as typed, for the repro line of an internal error.
  std::string commandLine;
};
int runRun(const RunOptions &options);

/// `moegen cache dir|list|clear|warm`.
struct CacheOptions {
  std::vector<std::string> specPaths;
  std::vector<std::string> archs;
  int64_t tokensPerBlock = 0;
  int64_t lanesPerToken = 0;
  std::string commandLine;
};
int runCacheDir();
int runCacheList();
int runCacheClear();
int runCacheWarm(const CacheOptions &options);

/// `moegen bench SPEC... --backend cpu --tokens T,...` (BenchCommand.cpp).
struct BenchOptions {
  std::vector<std::string> specPaths;
  std::string backend = "cpu";
  std::vector<int64_t> tokens = {1, 16, 256, 4096, 65536};
  int reps = 21;
  double minSampleMs = 2.0;
  unsigned threads = 0;
  bool dispatch = false;
  int64_t copyMiB = 256;
  /// Also write the figures as JSON here ("-": stdout, the table then
  /// going to stderr).
  std::string jsonPath;
};
int runBench(const BenchOptions &options);

/// `moegen autotune SPEC... --backend cpu --tokens T,... --db PATH`
/// (AutotuneCommand.cpp, docs/autotune.md).
struct AutotuneOptions {
  std::vector<std::string> specPaths;
  std::string backend = "cpu";
  std::vector<int64_t> tokens = {1, 16, 256, 4096, 65536};
  std::string dbPath;
  /// GPU backends: the arch to compile for; empty: the device's (cuda) or
  /// sm_90 (gpu-emu).
  std::string arch;
  /// --backend cuda: compile the candidates into this directory (with
  /// candidates.json) instead of timing them, for a GPU machine without
  /// the compiler (moegen-gpu-check --tune).
  std::string emitCandidates;
  /// Samples per candidate and token count; 0: 9 on the CPU, 50 on a GPU.
  int reps = 0;
  double minSampleMs = 2.0;
  /// A winner must beat the default by this fraction to be recorded.
  double minGain = 0.03;
  unsigned threads = 0;
  /// At most this many candidates, the default included (0: all).
  int64_t maxCandidates = 0;
};
int runAutotune(const AutotuneOptions &options);
/// `moegen autotune --backend cuda --emit-candidates DIR` (AutotuneGpu.cpp).
int emitGpuCandidates(
    const AutotuneOptions &options,
    const std::vector<std::pair<std::string, RoutingSpec>> &specs,
    const std::string &date);
/// Where GPU tuning entries are measured and looked up: `backend` (cuda,
/// gpu-emu), the device's name and the arch ("NVIDIA H200, sm_90"), this
/// moegen build.
tune::Origin gpuTuningOrigin(const std::string &backend,
                             const std::string &deviceName,
                             const std::string &arch);
/// The GPU backends' half of runAutotune, on its validated options and
/// specs (AutotuneGpu.cpp).
int runGpuAutotune(const AutotuneOptions &options,
                   const std::vector<std::pair<std::string, RoutingSpec>> &specs,
                   const std::string &date);
/// Where CPU tuning entries are measured and looked up: this CPU model and
/// thread count, this moegen build (AutotuneCommand.cpp).
tune::Origin cpuTuningOrigin(unsigned threads);

/// Writes `text` to `path` ("-" is stdout) through a temporary file and a
/// rename, so that readers never see a partial file.
int writeOutput(const std::string &path, const std::string &text);

/// Writes every array to DIR/NAME.npy; DIR ends up holding all of them or
/// none, as it was before (OutputDirectory.cpp).
int writeOutputs(
    const std::string &outDir,
    const std::vector<std::pair<std::string, npy::Array>> &outputs);

} // namespace moegen::tool

#endif // MOEGEN_COMPILER_TOOLS_MOEGEN_COMMANDS_H
