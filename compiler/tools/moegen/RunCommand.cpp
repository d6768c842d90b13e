//===- RunCommand.cpp - moegen run ----------------------------------------===//
//
// Routes the tokens of .npy inputs with a spec on the CPU backend or the
// NVPTX kernels and writes the outputs as .npy files (docs/cli.md). The
// inputs are checked, fed and read back by the runtime's RouterInputs and
// HostRouter, as moegen-gpu-check and the sample do; this file adds the
// command line, the compile step and the output directory.
//
//===----------------------------------------------------------------------===//

#include "compiler/tools/moegen/Commands.h"

#include "compiler/backend/cpu/CpuHostRouter.h"
#include "compiler/spec/MoEToProgram.h"
#include "compiler/spec/SpecParser.h"
#include "compiler/tune/TuningDb.h"
#include "runtime/Error.h"
#include "runtime/RouterInputs.h"
#ifdef MOEGEN_HAVE_CUDA_RUNTIME
#include "compiler/jit/KernelJit.h"
#include "runtime/cuda/CudaHostRouter.h"
#endif
#ifdef MOEGEN_HAVE_GPU_EMU
#include "compiler/backend/gpuemu/GpuEmuRouter.h"
#endif
#include "support/Quote.h"

#include "llvm/Support/raw_ostream.h"

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>

namespace moegen::tool {

namespace {

namespace fs = std::filesystem;

/// The CPU backend for `spec` and `tokens` tokens, with the tuning
/// database's config when there is one for them, or null after reporting
/// why not.
std::unique_ptr<rt::HostRouter> compileForCpu(const RoutingSpec &spec,
                                              const RunOptions &options,
                                              int64_t tokens, int &exitCode) {
  cpu::CpuCompileOptions compileOptions;
  compileOptions.threads = options.threads;
  compileOptions.dumpDir = options.dumpDir;
  std::string source = "the heuristic's";
  std::string dbPath = options.tuningDb;
  if (dbPath.empty())
    if (const char *db = std::getenv("MOEGEN_TUNING_DB"); db && *db)
      dbPath = db;
  if (!options.noTuning && !dbPath.empty()) {
    std::string error;
    std::optional<tune::TuningDb> db = tune::TuningDb::load(dbPath, error);
    if (!db) {
      llvm::errs() << error << "\n";
      exitCode = kExitBadInput;
      return nullptr;
    }
    const tune::Origin origin = cpuTuningOrigin(options.threads);
    if (const tune::Entry *entry =
            db->lookup(specHash(spec), origin, tokens)) {
      if (std::string why = tune::checkCpuConfig(entry->config);
          !why.empty()) {
        llvm::errs() << support::quotePath(dbPath)
                     << ": error: the entry for " << spec.name << " at T = "
                     << entry->tokens << ": " << why << "\n";
        exitCode = kExitBadInput;
        return nullptr;
      }
      compileOptions.vectorWidth = entry->config.vectorWidth;
      compileOptions.tokensPerTask = entry->config.tokensPerTask;
      compileOptions.topk = entry->config.topk;
      source = "tuned for T = " + std::to_string(entry->tokens) + " in " +
               dbPath;
    } else {
      source = "the heuristic's: " + dbPath + " has no entry for this spec" +
               (db->foreignEntries(origin)
                    ? " on this machine and build (" +
                          std::to_string(db->foreignEntries(origin)) +
                          " entries of others ignored)"
                    : "");
    }
  }
  auto compiled = cpu::CpuHostRouter::compile(spec, compileOptions);
  std::string error = compiled ? "" : llvm::toString(compiled.takeError());
  std::unique_ptr<rt::HostRouter> router =
      compiled ? std::move(*compiled) : nullptr;
  if (!router) {
    // The spec parsed and validated, so a compile failure is moegen's bug.
    llvm::errs() << options.specPath
                 << ": internal error: the CPU backend cannot compile this "
                    "spec: "
                 << error << "\nrepro: " << options.commandLine
                 << (options.dumpDir.empty() ? " --dump-ir DIR" : "") << "\n";
    exitCode = kExitInternal;
  }
  if (router && options.printConfig) {
    auto &backend = static_cast<cpu::CpuHostRouter &>(*router).backend();
    llvm::errs() << "moegen: config: vector_width=" << backend.vectorWidth()
                 << " tokens_per_task=" << backend.tokensPerTask() << " topk="
                 << (compileOptions.topk.empty() ? "auto" : compileOptions.topk)
                 << " (" << source << ")\n";
  }
  return router;
}

} // namespace

int runRun(const RunOptions &options) {
  if (options.backend != "cpu" && options.backend != "cuda" &&
      options.backend != "gpu-emu")
    return reportUsage("--backend '" + support::escape(options.backend) +
                       "': unknown backend (available: cpu, cuda, gpu-emu)");
  const bool cuda = options.backend == "cuda";
  const bool emulated = options.backend == "gpu-emu";

  std::string error;
  std::optional<RoutingSpec> spec =
      parseRouterFile(options.specPath, error);
  if (!spec) {
    llvm::errs() << error << "\n";
    return kExitBadInput;
  }
  const rt::RouterFacts facts = cpu::routerFactsOf(*spec);

  rt::RouterInputMap inputs;
  int64_t tokens = 0;
  try {
    rt::InputPaths paths = rt::parseInputArguments(options.inputs);
    rt::checkInputsUsed(facts, paths,
                        options.layerGiven ? std::optional(options.layer)
                                           : std::nullopt);
    std::error_code ec;
    if (options.outDir.empty())
      return reportUsage("--out: the output directory must not be empty");
    if (fs::exists(options.outDir, ec) && !fs::is_directory(options.outDir, ec))
      return reportFile(options.outDir, "--out: exists and is not a directory");
    // Read every input before checking any, in the kernels' order.
    inputs = rt::readInputs(paths);
    tokens = rt::checkInputs(facts, inputs, options.layer);
  } catch (const rt::InputError &e) {
    llvm::errs() << e.format("moegen") << "\n";
    return kExitBadInput;
  }

  if (!options.dumpDir.empty()) {
    std::error_code ec;
    fs::create_directories(options.dumpDir, ec);
    if (ec)
      return reportFile(options.dumpDir,
                        "--dump-ir: cannot create the directory: " +
                            ec.message());
  }

  rt::HostRunResult result;
  if (emulated) {
#ifdef MOEGEN_HAVE_GPU_EMU
    gpuemu::GpuEmuOptions emu;
    emu.nvptx.dumpDir = options.dumpDir;
    auto router = gpuemu::compileEmulatedRouter(*spec, emu);
    if (!router) {
      auto [status, message] = nvptx::takeCompileError(router.takeError());
      if (status == nvptx::CompileStatus::BadInput)
        return reportUsage("--backend gpu-emu: " + message);
      llvm::errs() << options.specPath
                   << ": internal error: the GPU emulator cannot run this "
                      "spec: "
                   << message << "\nrepro: " << options.commandLine << "\n";
      return kExitInternal;
    }
    try {
      result = rt::runOnHost(**router, inputs, options.layer);
    } catch (const rt::Error &e) {
      // A kernel fault (out of bounds, race, deadlock) is moegen's bug.
      llvm::errs() << options.specPath << ": internal error: " << e.what()
                   << "\nrepro: " << options.commandLine << "\n";
      return kExitInternal;
    }
#else
    return reportUsage("--backend gpu-emu: this moegen was built without the "
                       "CUDA runtime (cuda.h was not found; set CUDA_HOME "
                       "and rebuild)");
#endif
  } else if (!cuda) {
    int exitCode = kExitOk;
    std::unique_ptr<rt::HostRouter> router =
        compileForCpu(*spec, options, tokens, exitCode);
    if (!router)
      return exitCode;
    result = rt::runOnHost(*router, inputs, options.layer);
  } else {
#ifdef MOEGEN_HAVE_CUDA_RUNTIME
    try {
      // Compiled for GPU 0 on first use, then taken from the JIT cache.
      jit::JitOptions jit;
      jit.compile.dumpDir = options.dumpDir;
      rt::CudaHostRouter router(jit::loadRouter(*spec, jit, rt::LoadOptions{}));
      result = rt::runOnHost(router, inputs, options.layer);
    } catch (const rt::Error &e) {
      if (e.kind() != rt::Error::Kind::Compile)
        return reportUsage(std::string("--backend cuda: ") + e.what());
      llvm::errs() << options.specPath
                   << ": internal error: the NVPTX backend cannot compile "
                      "this spec: "
                   << e.what() << "\nrepro: " << options.commandLine
                   << (options.dumpDir.empty() ? " --dump-ir DIR" : "") << "\n";
      return kExitInternal;
    } catch (const std::exception &e) {
      // A file system error or an allocation failure: still one line.
      return reportUsage(std::string("--backend cuda: ") + e.what());
    }
#else
    return reportUsage("--backend cuda: this moegen was built without the "
                       "CUDA runtime (cuda.h was not found; set CUDA_HOME "
                       "and rebuild)");
#endif
  }
  if (!result.error.empty()) {
    llvm::errs() << rt::locateError(result.error, inputs).format("moegen")
                 << "\n";
    return kExitBadInput;
  }
  return writeOutputs(options.outDir, result.outputs);
}

} // namespace moegen::tool
