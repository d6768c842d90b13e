//===- main.cpp - The moegen command-line tool ----------------------------===//
//
// The command line: CLI11 options of every command, which call the
// commands of Commands.h. Exit codes: 0 success; 2 bad input or usage; 1 an
// internal compiler error.
//
//===----------------------------------------------------------------------===//

#include "compiler/tools/moegen/Commands.h"

#include "compiler/jit/KernelJit.h"

#include "support/Numbers.h"
#include "support/Quote.h"

#include "llvm/Support/raw_ostream.h"

#include <CLI/CLI.hpp>

#include <cstdlib>
#include <string>
#include <string_view>

namespace moegen::tool {

int reportUsage(const std::string &message) {
  llvm::errs() << "moegen: error: " << message << "\n";
  return kExitBadInput;
}

int reportFile(const std::string &path, const std::string &message) {
  llvm::errs() << support::quotePath(path) << ": error: " << message << "\n";
  return kExitBadInput;
}

namespace {

/// Integer options are strict decimal (docs/cli.md): on its own, CLI11 also
/// takes '' (as 0), 0x1, 0b1, 0o1 and digit separators.
CLI::Validator decimalInteger() {
  return CLI::Validator(
      [](std::string &value) -> std::string {
        if (support::isDecimalInteger(value))
          return {};
        return support::quote(value) + " is not a decimal integer";
      },
      "", "DECIMAL");
}

/// The command as typed, for the repro line of an internal error.
std::string commandLine(int argc, char **argv) {
  std::string line = "moegen";
  for (int i = 1; i < argc; ++i)
    line += std::string(" ") + argv[i];
  return line;
}

/// `moegen compile`: its options into `compile`.
CLI::App *addCompileCommand(CLI::App &app, CompileOptions &compile) {
  CLI::App *compileCmd = app.add_subcommand(
      "compile", "Compile a routing spec and print or write the result");
  compileCmd
      ->add_option("SPEC", compile.specPath,
                   "routing spec, e.g. templates/deepseek-v3.yaml, or a moe "
                   "dialect module (.mlir) whose functions carry moe.entry")
      ->required();
  compileCmd
      ->add_option("--emit", compile.emit,
                   "what to produce: mlir (moe dialect IR), spec (the spec "
                   "with every default made explicit), program (the spec "
                   "as a gating program, its keys expanded), gpu (gpu "
                   "kernels), llvm (NVVM/LLVM dialect), ptx or cubin (a "
                   "kernel directory with manifest.json; "
                   "docs/kernel-abi.md)")
      ->check(CLI::IsMember(
          {"mlir", "spec", "program", "gpu", "llvm", "ptx", "cubin"}))
      ->capture_default_str();
  compileCmd
      ->add_option("-o,--output", compile.output,
                   "output file, '-' for stdout; for ptx and cubin the "
                   "kernel directory (created if missing); written "
                   "atomically")
      ->capture_default_str();
  compileCmd
      ->add_option("--arch", compile.arch, "GPU architecture of the kernels")
      ->check(CLI::IsMember({"sm_80", "sm_89", "sm_90", "sm_90a", "sm_100"}))
      ->capture_default_str();
  compileCmd
      ->add_option("--tokens-per-block", compile.tokensPerBlock,
                   "tokens per block; 0 lets the heuristic choose (at most "
                   "32 unless --lanes-per-token is given)")
      ->check(decimalInteger())
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  compileCmd
      ->add_option("--lanes-per-token", compile.lanesPerToken,
                   "lanes of a warp that route one token (1, 2, 4, 8, 16 or "
                   "32); 0 lets the heuristic choose")
      ->check(decimalInteger())
      ->check(CLI::IsMember({0, 1, 2, 4, 8, 16, 32}))
      ->capture_default_str();
  compileCmd->add_option("--dump-dir", compile.dumpDir,
                         "write the IR after every stage, the PTX and the "
                         "ptxas log to this directory (or set "
                         "MOEGEN_DUMP_DIR)");
  compileCmd->add_option("--override-dir", compile.overrideDir,
                         "use DIR/kernels.ptx instead of the generated PTX "
                         "when it exists (or set MOEGEN_OVERRIDE_DIR)");
  compileCmd->add_option(
      "--tuning-db", compile.tuningDb,
      "--emit=ptx|cubin: take the route schedules moegen autotune "
      "--backend cuda recorded for --tuning-device, the arch and this "
      "build, a kernel per token bucket where they differ (or set "
      "MOEGEN_TUNING_DB)");
  compileCmd->add_option("--tuning-device", compile.tuningDevice,
                         "the GPU the tuning database's entries were "
                         "measured on, as the driver names it (e.g. "
                         "\"NVIDIA H200\")");
  compileCmd->add_flag("--no-tuning", compile.noTuning,
                       "ignore any tuning database: the heuristic's schedule");
  compileCmd->add_flag("--timing", compile.timing,
                       "print the time of every stage, pass and ptxas to "
                       "stderr (NVPTX backend)");

  return compileCmd;
}

/// `moegen run`: its options into `run`; `layerOption` tells whether
/// --layer was given.
CLI::App *addRunCommand(CLI::App &app, RunOptions &run,
                        CLI::Option *&layerOption) {
  CLI::App *runCmd = app.add_subcommand(
      "run", "Route tokens with a spec: read .npy inputs, write .npy outputs");
  runCmd
      ->add_option("SPEC", run.specPath,
                   "routing spec, e.g. templates/deepseek-v3.yaml, or a moe "
                   "dialect module (.mlir) whose functions carry moe.entry")
      ->required();
  runCmd
      ->add_option("--backend", run.backend,
                   "where to run: cpu (JIT-compiled host kernels), cuda "
                   "(NVPTX kernels on GPU 0 through the runtime) or gpu-emu "
                   "(the same NVPTX kernels on the host's GPU emulator)")
      ->required();
  // One NAME=FILE per --in, so a following SPEC is never taken as an input.
  runCmd
      ->add_option("--in", run.inputs,
                   "an input tensor, NAME=FILE.npy; NAME is logits, bias, "
                   "token_ids, hash_table, forced_ids or capture (docs/cli.md)")
      ->allow_extra_args(false);
  runCmd
      ->add_option("--out", run.outDir,
                   "directory for the output .npy files; created if missing")
      ->required();
  layerOption =
      runCmd
          ->add_option("--layer", run.layer,
                       "layer of the capture buffer to write (specs with "
                       "capture: true)")
          ->check(decimalInteger());
  runCmd
      ->add_option("--threads", run.threads,
                   "worker threads; 0 is one per hardware thread")
      ->check(decimalInteger())
      ->check(CLI::Range(0u, 4096u))
      ->capture_default_str();
  runCmd->add_option("--dump-ir", run.dumpDir,
                     "write the IR after every compiler stage to this "
                     "directory");
  runCmd->add_option("--tuning-db", run.tuningDb,
                     "take the CPU kernel config for this token count from "
                     "a tuning database (moegen autotune; else "
                     "$MOEGEN_TUNING_DB)");
  runCmd->add_flag("--no-tuning", run.noTuning,
                   "ignore any tuning database: the heuristic's config");
  runCmd->add_flag("--print-config", run.printConfig,
                   "print the kernel config and where it came from on "
                   "stderr");

  return runCmd;
}

/// `moegen bench`: its options into `bench`.
CLI::App *addBenchCommand(CLI::App &app, BenchOptions &bench) {
  CLI::App *benchCmd = app.add_subcommand(
      "bench", "Time the CPU kernels of specs per token count, against the "
               "machine's copy bandwidth");
  benchCmd
      ->add_option("SPEC", bench.specPaths,
                   "routing specs or moe dialect modules (.mlir)")
      ->required();
  benchCmd
      ->add_option("--backend", bench.backend,
                   "the backend to time: cpu (GPU kernels: "
                   "tests/gpu/bench_routing.py)")
      ->capture_default_str();
  benchCmd
      ->add_option("--tokens", bench.tokens,
                   "comma-separated token counts, each in [1, 4194304]")
      ->delimiter(',')
      ->check(decimalInteger())
      ->capture_default_str();
  benchCmd
      ->add_option("--reps", bench.reps,
                   "samples per token count (median, 10th and 90th "
                   "percentiles)")
      ->check(decimalInteger())
      ->check(CLI::Range(1, 10000))
      ->capture_default_str();
  benchCmd
      ->add_option("--min-sample-ms", bench.minSampleMs,
                   "each sample repeats the call for at least this long")
      ->check(CLI::Range(0.0, 10000.0))
      ->capture_default_str();
  benchCmd
      ->add_option("--threads", bench.threads,
                   "worker threads; 0 is one per hardware thread")
      ->check(decimalInteger())
      ->check(CLI::Range(0u, 4096u))
      ->capture_default_str();
  benchCmd->add_flag("--dispatch", bench.dispatch,
                     "time route and dispatch together (specs with "
                     "dispatch)");
  benchCmd
      ->add_option("--copy-mib", bench.copyMiB,
                   "size of the memcpy that measures the copy bandwidth")
      ->check(decimalInteger())
      ->check(CLI::Range(int64_t{1}, int64_t{16384}))
      ->capture_default_str();
  benchCmd->add_option("--json", bench.jsonPath,
                       "also write the figures as JSON to this file ('-' "
                       "for stdout; the table then goes to stderr)");
  return benchCmd;
}

/// `moegen autotune`: its options into `tune`.
CLI::App *addAutotuneCommand(CLI::App &app, AutotuneOptions &tune) {
  CLI::App *tuneCmd = app.add_subcommand(
      "autotune", "Measure kernel configs (CPU, or GPU with --backend cuda) "
                  "per token count and record the fastest in a tuning "
                  "database");
  tuneCmd
      ->add_option("SPEC", tune.specPaths,
                   "routing specs or moe dialect modules (.mlir)")
      ->required();
  tuneCmd
      ->add_option("--backend", tune.backend,
                   "the backend to tune: cpu, cuda (the GPU), or gpu-emu "
                   "(the host's GPU emulator: the flow, not a GPU's times)")
      ->capture_default_str();
  tuneCmd->add_option("--arch", tune.arch,
                      "GPU backends: the arch to compile for (default: the "
                      "device's; sm_90 on gpu-emu)");
  tuneCmd->add_option(
      "--emit-candidates", tune.emitCandidates,
      "--backend cuda: compile the candidates into this new directory, with "
      "candidates.json, to time on a GPU machine without the compiler "
      "(moegen-gpu-check --tune DIR --db PATH)");
  tuneCmd
      ->add_option("--tokens", tune.tokens,
                   "comma-separated token counts (the buckets), each in [1, "
                   "4194304]")
      ->delimiter(',')
      ->check(decimalInteger())
      ->capture_default_str();
  tuneCmd
      ->add_option("--db", tune.dbPath,
                   "the tuning database (JSON) to write; created if missing, "
                   "merged into under a lock otherwise (or set "
                   "MOEGEN_TUNING_DB)");
  tuneCmd
      ->add_option("--reps", tune.reps,
                   "samples per candidate and token count (default 9 on the "
                   "CPU, 50 on a GPU: one call each, cold L2)")
      ->check(decimalInteger())
      ->check(CLI::Range(3, 1000));
  tuneCmd
      ->add_option("--min-sample-ms", tune.minSampleMs,
                   "each sample repeats the call for at least this long")
      ->check(CLI::Range(0.0, 10000.0))
      ->capture_default_str();
  tuneCmd
      ->add_option("--min-gain", tune.minGain,
                   "keep the default unless a candidate is faster by this "
                   "fraction")
      ->check(CLI::Range(0.0, 0.9))
      ->capture_default_str();
  tuneCmd
      ->add_option("--max-candidates", tune.maxCandidates,
                   "try at most this many configs, the default first (0: "
                   "every valid one)")
      ->check(decimalInteger())
      ->check(CLI::Range(int64_t{0}, int64_t{100000}))
      ->capture_default_str();
  tuneCmd
      ->add_option("--threads", tune.threads,
                   "worker threads; 0 is one per hardware thread")
      ->check(decimalInteger())
      ->check(CLI::Range(0u, 4096u))
      ->capture_default_str();
  return tuneCmd;
}

/// `moegen cache` and its commands.
struct CacheCommands {
  CLI::App *cache, *dir, *list, *clear, *warm;
};
CacheCommands addCacheCommand(CLI::App &app, CacheOptions &cacheOptions) {
  CLI::App *cacheCmd = app.add_subcommand(
      "cache", "Show, fill or empty the JIT cache of compiled kernels "
               "($MOEGEN_CACHE_DIR, else $XDG_CACHE_HOME/moegen, else "
               "~/.cache/moegen)");
  cacheCmd->require_subcommand(1, 1);
  CLI::App *cacheDirCmd =
      cacheCmd->add_subcommand("dir", "Print the cache directory");
  CLI::App *cacheListCmd = cacheCmd->add_subcommand(
      "list", "List the entries: key, spec, arch, kernels (or why an "
              "entry is invalid)");
  CLI::App *cacheClearCmd =
      cacheCmd->add_subcommand("clear", "Remove every entry");
  CLI::App *cacheWarmCmd = cacheCmd->add_subcommand(
      "warm", "Compile specs into the cache for the given archs, as "
              "'run --backend cuda' and engines would on first use");
  cacheWarmCmd->add_option("SPEC", cacheOptions.specPaths,
                           "routing specs or moe dialect modules (.mlir)")
      ->required();
  cacheWarmCmd
      ->add_option("--arch", cacheOptions.archs,
                   "GPU architecture; repeat for several (default sm_90)")
      ->check(CLI::IsMember({"sm_80", "sm_89", "sm_90", "sm_90a", "sm_100"}));
  cacheWarmCmd
      ->add_option("--tokens-per-block", cacheOptions.tokensPerBlock,
                   "tokens per block; 0 lets the heuristic choose (engines "
                   "use 0)")
      ->check(decimalInteger())
      ->check(CLI::Range(int64_t{0}, int64_t{1024}))
      ->capture_default_str();
  cacheWarmCmd
      ->add_option("--lanes-per-token", cacheOptions.lanesPerToken,
                   "lanes of a warp per token; 0 lets the heuristic choose "
                   "(engines use 0)")
      ->check(decimalInteger())
      ->check(CLI::IsMember({0, 1, 2, 4, 8, 16, 32}))
      ->capture_default_str();

  return {cacheCmd, cacheDirCmd, cacheListCmd, cacheClearCmd, cacheWarmCmd};
}

} // namespace

} // namespace moegen::tool

using namespace moegen::tool;

int main(int argc, char **argv) {
  CLI::App app{"moegen: a compiler for Mixture-of-Experts routing kernels.\n"
               "A routing spec (YAML) describes one gating layer; moegen "
               "turns it into moe dialect IR, CPU kernels it runs itself, or "
               "CUDA kernels (PTX, cubin) with a manifest for the runtime."};
  // The version tuning databases key their entries by: moegen's and the
  // code generator's fingerprint.
  app.set_version_flag("--version", "moegen " + std::string(MOEGEN_VERSION) +
                                        "+codegen." +
                                        moegen::jit::codegenFingerprint());
  app.require_subcommand(1, 1);
  app.footer(
      "Examples:\n"
      "  moegen compile templates/deepseek-v3.yaml\n"
      "  moegen compile templates/qwen3-30b-a3b.yaml -o qwen3.mlir\n"
      "  moegen compile my-router.yaml --emit=spec\n"
      "  moegen compile templates/deepseek-v3.yaml --emit=cubin "
      "--arch sm_90 -o ds3/\n"
      "  moegen run templates/mixtral-8x7b.yaml --backend cpu \\\n"
      "      --in logits=logits.npy --out out/\n"
      "  moegen cache warm templates/*.yaml --arch sm_90 --arch sm_80\n"
      "  moegen bench templates/deepseek-v3.yaml --tokens 1,64,4096\n"
      "  moegen autotune templates/qwen3-30b-a3b.yaml --tokens 64,4096 "
      "--db tuning.json\n\n"
      "Spec keys and their rules: docs/spec-language.md\n"
      "moegen run inputs and outputs: docs/cli.md\n"
      "Routing math: docs/semantics.md\n"
      "Exit codes: 0 ok, 2 bad input or usage, 1 internal error.");

  // One subcommand per file of Commands.h; a new command (autotune, bench)
  // registers here the same way.
  CompileOptions compile;
  CLI::App *compileCmd = addCompileCommand(app, compile);
  RunOptions run;
  CLI::Option *layerOption = nullptr;
  CLI::App *runCmd = addRunCommand(app, run, layerOption);
  BenchOptions bench;
  CLI::App *benchCmd = addBenchCommand(app, bench);
  AutotuneOptions autotune;
  CLI::App *autotuneCmd = addAutotuneCommand(app, autotune);
  CacheOptions cacheOptions;
  CacheCommands cache = addCacheCommand(app, cacheOptions);
  CLI::App *cacheCmd = cache.cache;

  // CLI11 would call an unknown command "a missing subcommand"; name it.
  if (argc > 1 && argv[1][0] != '-') {
    std::string commands;
    bool known = false;
    for (const CLI::App *sub : app.get_subcommands({})) {
      known |= sub->get_name() == argv[1];
      commands += (commands.empty() ? "" : ", ") + sub->get_name();
    }
    if (!known)
      return reportUsage("unknown command '" + std::string(argv[1]) +
                         "' (commands: " + commands + "; run 'moegen --help')");
  }

  // Likewise for the cache commands, and name them when none is given.
  if (argc > 1 && std::string_view(argv[1]) == "cache" &&
      (argc == 2 || argv[2][0] != '-')) {
    std::string commands;
    bool known = false;
    for (const CLI::App *sub : cacheCmd->get_subcommands({})) {
      known |= argc > 2 && sub->get_name() == argv[2];
      commands += (commands.empty() ? "" : ", ") + sub->get_name();
    }
    if (!known) {
      llvm::errs() << "moegen: error: "
                   << (argc == 2 ? std::string("moegen cache needs a command")
                                 : "unknown cache command '" +
                                       std::string(argv[2]) + "'")
                   << " (commands: " << commands
                   << "; run 'moegen cache --help')\n";
      return kExitBadInput;
    }
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError &e) {
    if (e.get_exit_code() == 0) // --help, --version
      return app.exit(e);
    llvm::errs() << "moegen: error: " << e.what() << " (run 'moegen --help')\n";
    return kExitBadInput;
  }

  if (compileCmd->parsed()) {
    compile.commandLine = commandLine(argc, argv);
    return runCompile(compile);
  }
  if (benchCmd->parsed())
    return runBench(bench);
  if (autotuneCmd->parsed()) {
    if (autotune.dbPath.empty())
      if (const char *db = std::getenv("MOEGEN_TUNING_DB"); db && *db)
        autotune.dbPath = db;
    return runAutotune(autotune);
  }
  if (cacheCmd->parsed()) {
    if (cache.dir->parsed())
      return runCacheDir();
    if (cache.list->parsed())
      return runCacheList();
    if (cache.clear->parsed())
      return runCacheClear();
    cacheOptions.commandLine = commandLine(argc, argv);
    return runCacheWarm(cacheOptions);
  }
  if (runCmd->parsed()) {
    run.layerGiven = layerOption->count() != 0;
    run.commandLine = commandLine(argc, argv);
    return runRun(run);
  }
  return kExitBadInput;
}
