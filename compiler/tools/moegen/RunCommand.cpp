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
#include "compiler/backend/gpuemu/EmuCudaDriver.h"
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

/// The tuning database's entry for `spec` at `tokens` tokens measured at
/// `origin` (null when there is none, or with --no-tuning), and in
/// `source` where the config comes from. False after reporting a database
/// that cannot be read (exit code 2).
bool lookupTuning(const RoutingSpec &spec, const RunOptions &options,
                  const tune::Origin &origin, int64_t tokens,
                  std::optional<tune::TuningDb> &db, const tune::Entry *&entry,
                  std::string &source) {
  entry = nullptr;
  source = "the heuristic's";
  std::string dbPath = options.tuningDb;
  if (dbPath.empty())
    if (const char *env = std::getenv("MOEGEN_TUNING_DB"); env && *env)
      dbPath = env;
  if (options.noTuning || dbPath.empty())
    return true;
  std::string error;
  db = tune::TuningDb::load(dbPath, error);
  if (!db) {
    llvm::errs() << error << "\n";
    return false;
  }
  entry = db->lookup(specHash(spec), origin, tokens);
  if (entry) {
    source = "tuned for T = " + std::to_string(entry->tokens) + " in " + dbPath;
    return true;
  }
  const size_t foreign = db->foreignEntries(origin);
  source = "the heuristic's: " + dbPath + " has no entry for this spec" +
           (foreign ? " on this machine and build (" + std::to_string(foreign) +
                          " entries of others ignored)"
                    : "");
  return true;
}

/// Reports an entry whose config the backend refuses; kExitBadInput.
int reportBadEntry(const RunOptions &options, const RoutingSpec &spec,
                   const tune::Entry &entry, const std::string &why) {
  std::string dbPath = options.tuningDb;
  if (dbPath.empty())
    if (const char *env = std::getenv("MOEGEN_TUNING_DB"); env && *env)
      dbPath = env;
  llvm::errs() << support::quotePath(dbPath) << ": error: the entry for "
               << spec.name << " at T = " << entry.tokens << ": " << why
               << "\n";
  return kExitBadInput;
}

#ifdef MOEGEN_HAVE_CUDA_RUNTIME
/// The GPU config line of --print-config, from the manifest entry of the
/// route kernel a call of `tokens` tokens launches (what was compiled,
/// whatever chose it).
void printGpuConfig(const rt::Manifest &manifest, int64_t tokens,
                    const std::string &source) {
  const rt::Kernel *route = manifest.findFor(rt::EntryKind::Route, tokens);
  if (!route)
    route = manifest.findFor(rt::EntryKind::RouteHash, tokens);
  if (!route)
    return;
  llvm::errs() << "moegen: config: lanes_per_token="
               << route->launch.lanesPerToken
               << " tokens_per_block=" << route->launch.tokensPerBlock
               << " topk=" << (route->topk.empty() ? "none" : route->topk)
               << " (" << source << ")\n";
}

/// The database's GPU schedules for `spec` at `origin` as token buckets:
/// several go to `buckets` (a route kernel per bucket, the runtime
/// choosing per call), a single one pins `compile`. 0, or the exit status
/// after one line for a schedule the spec cannot take.
int tunedBuckets(const RoutingSpec &spec, const RunOptions &options,
                 const std::optional<tune::TuningDb> &db,
                 const tune::Origin &origin,
                 nvptx::NvptxCompileOptions &compile,
                 std::vector<nvptx::BucketSchedule> &buckets) {
  if (!db || options.noTuning)
    return kExitOk;
  std::string dbPath = options.tuningDb;
  if (dbPath.empty())
    if (const char *env = std::getenv("MOEGEN_TUNING_DB"); env && *env)
      dbPath = env;
  std::string error;
  buckets = jit::bucketSchedules(db->gpuBuckets(specHash(spec), origin), spec,
                                 dbPath, error);
  if (!error.empty()) {
    llvm::errs() << error << "\n";
    return kExitBadInput;
  }
  if (buckets.size() == 1) {
    compile.lanesPerToken = buckets[0].lanesPerToken;
    compile.tokensPerBlock = buckets[0].tokensPerBlock;
    compile.topk = buckets[0].topk;
    compile.scheduleNote = buckets[0].note;
  }
  return kExitOk;
}

/// Where GPU tunings for `driver`'s device 0 come from, and the arch its
/// kernels are compiled for; throws rt::Error when there is no device.
tune::Origin deviceTuningOrigin(const std::string &backend,
                                const rt::CudaDriver &driver,
                                std::string &arch) {
  const rt::CudaDriver::DeviceInfo info = driver.deviceInfo(0);
  if (arch.empty())
    arch = nvptx::archForComputeCapability(info.major, info.minor);
  return gpuTuningOrigin(backend, info.name, arch);
}
#endif

/// The CPU backend for `spec` and `tokens` tokens, with the tuning
/// database's config when there is one for them, or null after reporting
/// why not.
std::unique_ptr<rt::HostRouter> compileForCpu(const RoutingSpec &spec,
                                              const RunOptions &options,
                                              int64_t tokens, int &exitCode) {
  cpu::CpuCompileOptions compileOptions;
  compileOptions.threads = options.threads;
  compileOptions.dumpDir = options.dumpDir;
  std::optional<tune::TuningDb> db;
  const tune::Entry *entry = nullptr;
  std::string source;
  if (!lookupTuning(spec, options, cpuTuningOrigin(options.threads), tokens,
                    db, entry, source)) {
    exitCode = kExitBadInput;
    return nullptr;
  }
  if (entry) {
    if (std::string why = tune::checkCpuConfig(entry->config); !why.empty()) {
      exitCode = reportBadEntry(options, spec, *entry, why);
      return nullptr;
    }
    compileOptions.vectorWidth = entry->config.vectorWidth;
    compileOptions.tokensPerTask = entry->config.tokensPerTask;
    compileOptions.topk = entry->config.topk;
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
    std::optional<tune::TuningDb> db;
    const tune::Entry *entry = nullptr;
    std::string source;
    std::string arch = "sm_90";
    tune::Origin origin;
    try {
      origin = deviceTuningOrigin("gpu-emu", gpuemu::emulatedDriver(), arch);
    } catch (const rt::Error &e) {
      return reportUsage(std::string("--backend gpu-emu: ") + e.what());
    }
    if (!lookupTuning(*spec, options, origin, tokens, db, entry, source))
      return kExitBadInput;
    if (int status = tunedBuckets(*spec, options, db, origin, emu.nvptx,
                                  emu.buckets))
      return status;
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
    if (options.printConfig)
      if (const rt::CudaRouter *device = gpuemu::emulatedDevice(**router))
        printGpuConfig(device->manifest(), tokens, source);
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
      std::optional<tune::TuningDb> db;
      const tune::Entry *entry = nullptr;
      std::string source;
      const tune::Origin origin = deviceTuningOrigin(
          "cuda", rt::CudaDriver::get(), jit.compile.arch);
      if (!lookupTuning(*spec, options, origin, tokens, db, entry, source))
        return kExitBadInput;
      if (int status = tunedBuckets(*spec, options, db, origin, jit.compile,
                                    jit.buckets))
        return status;
      rt::CudaHostRouter router(jit::loadRouter(*spec, jit, rt::LoadOptions{}));
      if (options.printConfig)
        printGpuConfig(router.device().manifest(), tokens, source);
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
