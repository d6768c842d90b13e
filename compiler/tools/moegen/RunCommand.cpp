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

#include <filesystem>
#include <memory>
#include <optional>

namespace moegen::tool {

namespace {

namespace fs = std::filesystem;

/// The CPU backend for `spec`, or null after reporting why not.
std::unique_ptr<rt::HostRouter> compileForCpu(const RoutingSpec &spec,
                                              const RunOptions &options,
                                              int &exitCode) {
  cpu::CpuCompileOptions compileOptions;
  compileOptions.threads = options.threads;
  compileOptions.dumpDir = options.dumpDir;
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
    rt::checkInputs(facts, inputs, options.layer);
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
        compileForCpu(*spec, options, exitCode);
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
