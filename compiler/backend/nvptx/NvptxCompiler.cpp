//===- NvptxCompiler.cpp - Routing specs to PTX and cubin -----------------===//

#include "compiler/backend/nvptx/NvptxCompiler.h"

#include "compiler/Registration.h"
#include "compiler/backend/nvptx/NvptxPipeline.h"
#include "compiler/spec/SpecParser.h"
#include "compiler/spec/SpecToMoE.h"
#include "dialects/moe/IR/MoEAttrs.h"
#include "dialects/moe/IR/MoEDialect.h"
#include "dialects/moe/Transforms/PtxJoin.h"

#include "abi/KernelError.h"
#include "abi/Manifest.h"
#include "support/AtomicFile.h"
#include "support/Quote.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/Timing.h"

#include "llvm/ADT/ScopeExit.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdlib>
#include <map>
#include <regex>

#ifndef MOEGEN_VERSION
#error "MOEGEN_VERSION must be defined by the build"
#endif

namespace moegen::nvptx {

char CompileError::ID = 0;

void CompileError::log(llvm::raw_ostream &os) const { os << text; }

std::error_code CompileError::convertToErrorCode() const {
  return llvm::inconvertibleErrorCode();
}

std::pair<CompileStatus, std::string> takeCompileError(llvm::Error error) {
  std::pair<CompileStatus, std::string> taken{CompileStatus::Internal, ""};
  llvm::handleAllErrors(
      std::move(error),
      [&](const CompileError &e) { taken = {e.status(), e.message()}; },
      [&](const llvm::ErrorInfoBase &e) { taken.second = e.message(); });
  return taken;
}

namespace {
/// The implementation's status, with success; the API returns llvm::Error.
enum class Status { Ok, BadInput, ToolFailed, Internal };

llvm::Error toError(Status status, std::string message) {
  CompileStatus kind = CompileStatus::Internal;
  switch (status) {
  case Status::Ok:
    return llvm::Error::success();
  case Status::BadInput:
    kind = CompileStatus::BadInput;
    break;
  case Status::ToolFailed:
    kind = CompileStatus::ToolFailed;
    break;
  case Status::Internal:
    break;
  }
  return llvm::make_error<CompileError>(kind, std::move(message));
}
} // namespace

bool isSupportedArch(std::string_view arch) {
  for (std::string_view known : kSupportedArchs)
    if (arch == known)
      return true;
  return false;
}

std::string archForComputeCapability(int major, int minor) {
  if (major < 8 || minor < 0)
    return "";
  if (major == 8)
    return minor >= 9 ? "sm_89" : "sm_80";
  if (major == 9)
    return "sm_90";
  return "sm_100";
}

static bool checkOptions(const NvptxCompileOptions &options,
                         std::string &error) {
  if (!isSupportedArch(options.arch)) {
    error = "--arch " + options.arch + ": must be one of sm_80, sm_89, sm_90, "
            "sm_90a, sm_100";
    return false;
  }
  const int64_t lanes = options.lanesPerToken;
  if (lanes < 0 || lanes > 32 || (lanes & (lanes - 1)) != 0) {
    error = "lanes per token = " + std::to_string(lanes) +
            ": must be 0 (heuristic) or a power of two up to 32";
    return false;
  }
  const int64_t tokens = options.tokensPerBlock;
  if (tokens < 0 || (lanes == 0 && tokens > 32)) {
    error = "tokens per block = " + std::to_string(tokens) +
            ": must be 0 (heuristic) or 1 to 32 (more with lanes per token "
            "given)";
    return false;
  }
  if (lanes > 0 && tokens > 0 &&
      ((tokens * lanes) % 32 != 0 || tokens * lanes > 1024)) {
    error = "tokens per block = " + std::to_string(tokens) +
            " with lanes per token = " + std::to_string(lanes) +
            ": a block is whole warps of at most 1024 threads (tokens * "
            "lanes a multiple of 32)";
    return false;
  }
  if (!options.topk.empty() && options.topk != "argmax_passes" &&
      options.topk != "insertion" && options.topk != "lane_lists") {
    error = "topk " + support::quote(options.topk) +
            ": must be empty (heuristic), argmax_passes, insertion or "
            "lane_lists";
    return false;
  }
  return true;
}

/// The dynamic shared memory one block may have on `arch` with the
/// opt-in attribute (CUDA's sharedMemPerBlockOptin): 163 KiB on sm_80,
/// 99 KiB on sm_89, 227 KiB on sm_90 and sm_100.
static int64_t maxSharedBytesPerBlock(std::string_view arch) {
  if (arch == "sm_80")
    return 163 * 1024;
  if (arch == "sm_89")
    return 99 * 1024;
  return 227 * 1024;
}

/// "" or why a kernel's rows cannot fit a block's shared memory on the
/// target: only a pinned schedule can ask for more (the heuristic keeps
/// below every target's limit up to the largest E).
static std::string checkSharedMemory(const NvptxCompileOptions &options,
                                     const std::vector<abi::Kernel> &kernels) {
  const int64_t limit = maxSharedBytesPerBlock(options.arch);
  for (const abi::Kernel &kernel : kernels)
    if (kernel.launch.dynamicSharedMemoryBytes > limit)
      return std::string(abi::toString(kernel.entry)) + ": " +
             std::to_string(kernel.launch.tokensPerBlock) +
             " tokens per block at " +
             std::to_string(kernel.launch.lanesPerToken) +
             " lanes per token need " +
             std::to_string(kernel.launch.dynamicSharedMemoryBytes) +
             " bytes of shared memory per block, but " + options.arch +
             " has at most " + std::to_string(limit) +
             "; give more lanes per token or fewer tokens per block";
  return "";
}

/// What chose a kernel's schedule, for the manifest: "heuristic", or the
/// options that pinned part of it (the rest is the heuristic's). The
/// dispatch's cooperative grid is fixed by the ABI.
static std::string scheduleSource(const NvptxCompileOptions &options,
                                  abi::EntryKind entry) {
  if (entry == abi::EntryKind::Dispatch)
    return "abi";
  std::vector<std::string> pinned;
  if (options.lanesPerToken > 0)
    pinned.push_back("lanes_per_token = " +
                     std::to_string(options.lanesPerToken));
  if (options.tokensPerBlock > 0)
    pinned.push_back("tokens_per_block = " +
                     std::to_string(options.tokensPerBlock));
  if (!options.topk.empty() && entry == abi::EntryKind::Route)
    pinned.push_back("topk = " + options.topk);
  std::string text = pinned.empty() ? "heuristic" : "options: ";
  for (size_t i = 0; i < pinned.size(); ++i)
    text += (i ? ", " : "") + pinned[i];
  if (!options.scheduleNote.empty())
    text += " (" + options.scheduleNote + ")";
  return text;
}

std::string toolkitDirectory(const NvptxCompileOptions &options) {
  if (!options.toolkitPath.empty())
    return options.toolkitPath;
  for (const char *variable : {"CUDA_HOME", "CUDA_PATH"})
    if (const char *value = std::getenv(variable); value && *value)
      return value;
  return "/usr/local/cuda";
}

namespace {

/// LLVM 19 knows archs up to sm_90a; newer ones get sm_90 PTX, which ptxas
/// compiles for them (PTX is forward compatible).
std::string ptxTarget(std::string_view arch) {
  return arch == "sm_100" ? "sm_90" : std::string(arch);
}

/// Through the support layer: a failed write (a full disk) is one line
/// and leaves no partial file, where raw_fd_ostream would abort at exit.
bool writeFile(const std::string &path, llvm::StringRef text,
               std::string &error) {
  std::string message;
  if (support::writeFileAtomically(
          path, std::string_view(text.data(), text.size()), message))
    return true;
  // "PATH: MESSAGE" from the support layer; ours say "PATH: error: ...".
  error = support::quotePath(path) + ": error: " +
          message.substr(std::min(message.size(), path.size() + 2));
  return false;
}

std::string printModule(mlir::ModuleOp module) {
  std::string text;
  llvm::raw_string_ostream os(text);
  module->print(os);
  return text;
}

/// A directory for files the user must be able to look at after a
/// failure: the dump directory, else a fresh one under the temp dir.
std::string keepDirectory(const NvptxCompileOptions &options) {
  if (!options.dumpDir.empty())
    return options.dumpDir;
  llvm::SmallString<128> dir;
  if (llvm::sys::fs::createUniqueDirectory("moegen-nvptx", dir))
    return ".";
  return std::string(dir);
}

struct StageRunner {
  mlir::ModuleOp module;
  const NvptxCompileOptions &options;
  std::string &error;
  /// Where the stages' pass timings go (options.timing).
  mlir::TimingScope &timing;
  int index = 1;

  /// Runs `build`'s passes; dumps the result as NN-name.mlir. On failure,
  /// writes the stage's input and a repro command (the pass manager's own
  /// textual pipeline) into `error`.
  bool run(llvm::StringRef name,
           llvm::function_ref<void(mlir::OpPassManager &)> build) {
    // Printed only on failure: printing every stage's input costs more
    // than a stage of passes.
    mlir::OwningOpRef<mlir::ModuleOp> input = module.clone();
    std::string diagnostics;
    mlir::PassManager pm(module->getContext());
    // The IR is verified once, after the stage: after each of its passes
    // it cost a sixth of a compile (DeepSeek-V3: 30 of 180 ms). The repro
    // command below (moegen-opt) verifies after every pass.
    pm.enableVerifier(false);
    build(pm);
    mlir::TimingScope stageTiming = timing.nest(name);
    if (options.timing)
      pm.enableTiming(stageTiming);
    std::string pipeline;
    {
      llvm::raw_string_ostream os(pipeline);
      pm.printAsTextualPipeline(os);
    }
    mlir::LogicalResult status = mlir::success();
    {
      mlir::ScopedDiagnosticHandler handler(
          module->getContext(), [&](mlir::Diagnostic &diag) {
            llvm::raw_string_ostream os(diagnostics);
            os << diag.getLocation() << ": " << diag << "\n";
            return mlir::success();
          });
      status = pm.run(module);
      if (mlir::succeeded(status))
        status = mlir::verify(module);
    }
    ++index;
    char prefix[16];
    snprintf(prefix, sizeof(prefix), "%02d-", index);
    if (mlir::failed(status)) {
      std::string dir = keepDirectory(options);
      std::string path = dir + "/" + prefix + name.str() + "-input.mlir";
      std::string ignored;
      writeFile(path, printModule(*input), ignored);
      error = "internal error: the " + name.str() +
              " stage failed:\n" + diagnostics + "input IR: " + path +
              "\nrepro: moegen-opt " + path + " --pass-pipeline='" +
              pipeline + "'";
      return false;
    }
    if (!options.dumpDir.empty())
      return writeFile(options.dumpDir + "/" + prefix + name.str() + ".mlir",
                       printModule(module), error);
    return true;
  }
};

/// The kernels of the gpu stage as the manifest lists them: every parameter
/// from its #moe.kernel_arg or #moe.kernel_size stamp, the launch from
/// #moe.launch.
bool describeKernels(mlir::ModuleOp module, std::vector<abi::Kernel> &kernels,
                     std::string &error) {
  using namespace moegen::abi;
  bool ok = true;
  module.walk([&](mlir::gpu::GPUFuncOp func) {
    auto entryName =
        func->getAttrOfType<mlir::StringAttr>(mlir::moe::kEntryAttrName);
    mlir::moe::LaunchAttr launch = mlir::moe::getLaunch(func);
    if (!entryName || !ok)
      return;
    auto fail = [&](const std::string &why) {
      error = "internal error: kernel '" + func.getName().str() + "': " + why;
      ok = false;
    };
    std::optional<EntryKind> entry = parseEntryKind(entryName.getValue().str());
    if (!entry || !launch)
      return fail("no entry kind or no #moe.launch");
    Kernel kernel;
    kernel.entry = *entry;
    kernel.symbol = func.getName().str();
    kernel.launch.blockDim = launch.getBlockDim();
    kernel.launch.tokensPerBlock = launch.getTokensPerBlock();
    kernel.launch.lanesPerToken = launch.getLanesPerToken();
    kernel.launch.dynamicSharedMemoryBytes =
        launch.getDynamicSharedMemoryBytes();
    kernel.launch.cooperative = launch.getMaxBlocks() > 0;
    kernel.launch.maxGridDim = launch.getMaxBlocks();
    kernel.launch.slotsPerBlock = launch.getSlotsPerBlock();
    if (auto slots = func->getAttrOfType<mlir::IntegerAttr>(
            mlir::moe::kFusedDispatchAttrName))
      kernel.fusedDispatchMaxSlots = slots.getInt();
    // Only route finds a top-k (route_hash and replay are given theirs).
    if (*entry == EntryKind::Route)
      if (mlir::moe::KernelConfigAttr config =
              mlir::moe::getKernelConfig(func))
        kernel.topk = mlir::moe::stringifyTopKMethod(config.getTopk()).str();
    for (unsigned i = 0; i < func.getNumArguments(); ++i) {
      Param param;
      if (auto size = func.getArgAttrOfType<mlir::moe::KernelSizeAttr>(
              i, mlir::moe::kKernelSizeAttrName)) {
        param.kind = ParamKind::Size;
        param.name = sizeParamName(size.getOf().str(), int(size.getDim()));
        param.ofParam = kernel.findParam(size.getOf().str());
        param.dim = int(size.getDim());
        if (param.ofParam < 0)
          return fail("size of unknown tensor '" + size.getOf().str() + "'");
        kernel.params.push_back(std::move(param));
        continue;
      }
      auto arg = func.getArgAttrOfType<mlir::moe::KernelArgAttr>(
          i, mlir::moe::kKernelArgAttrName);
      if (!arg)
        return fail("parameter #" + std::to_string(i) + " has no ABI stamp");
      std::optional<DType> dtype = mlir::moe::toAbiDType(arg.getDtype());
      if (!dtype)
        return fail("parameter '" + arg.getName().str() +
                    "' has an element type the ABI lacks");
      param.name = arg.getName().str();
      param.dtype = *dtype;
      param.access = static_cast<Access>(arg.getAccess());
      if (arg.getRole() == mlir::moe::KernelArgRole::Scalar) {
        param.kind = ParamKind::Scalar;
      } else {
        param.kind = ParamKind::Pointer;
        for (mlir::Attribute dim : arg.getShape())
          param.shape.push_back(mlir::moe::toAbiDim(dim));
      }
      kernel.params.push_back(std::move(param));
    }
    kernels.push_back(std::move(kernel));
  });
  return ok;
}

std::optional<std::string> extractPtx(mlir::ModuleOp module) {
  std::optional<std::string> ptx;
  module.walk([&](mlir::gpu::BinaryOp binary) {
    for (mlir::Attribute object : binary.getObjects())
      if (auto gpuObject = mlir::dyn_cast<mlir::gpu::ObjectAttr>(object))
        // The serializer keeps the C string's terminator; ptxas reads it as
        // garbage at the end of the file.
        ptx = gpuObject.getObject().getValue().rtrim('\0').str();
  });
  return ptx;
}

/// The toolkit's ptxas, else the one on PATH; empty (and `error` set) when
/// there is none.
std::string findPtxas(const NvptxCompileOptions &options, std::string &error) {
  std::string toolkit = toolkitDirectory(options);
  std::string ptxas = toolkit + "/bin/ptxas";
  if (llvm::sys::fs::can_execute(ptxas))
    return ptxas;
  if (llvm::ErrorOr<std::string> found = llvm::sys::findProgramByName("ptxas"))
    return *found;
  error = "ptxas not found in " + toolkit +
          "/bin or on PATH: set CUDA_HOME to the CUDA toolkit";
  return "";
}

/// Runs ptxas; parses "Used N registers" and spill bytes per function.
Status runPtxas(const NvptxCompileOptions &options,
                       NvptxCompileResult &result, std::string &error) {
  std::string ptxas = findPtxas(options, error);
  if (ptxas.empty())
    return Status::BadInput;
  std::string dir = options.dumpDir;
  bool temporary = dir.empty();
  if (temporary) {
    llvm::SmallString<128> tmp;
    if (llvm::sys::fs::createUniqueDirectory("moegen-ptxas", tmp)) {
      error = "cannot create a temporary directory for ptxas";
      return Status::Internal;
    }
    dir = std::string(tmp);
  }
  std::string ptxPath = dir + "/kernels.ptx";
  std::string cubinPath = dir + "/kernels.cubin";
  std::string logPath = dir + "/ptxas.log";
  if (!writeFile(ptxPath, result.ptx, error)) {
    if (temporary)
      llvm::sys::fs::remove_directories(dir);
    return Status::Internal;
  }
  std::string archFlag = "-arch=" + options.arch;
  llvm::SmallVector<llvm::StringRef> args{ptxas, archFlag, "-O3", "-v",
                                          "-o", cubinPath, ptxPath};
  std::optional<llvm::StringRef> redirects[] = {std::nullopt, logPath, logPath};
  std::string message;
  int rc = llvm::sys::ExecuteAndWait(ptxas, args, std::nullopt, redirects,
                                     /*secondsToWait=*/300, 0, &message);
  auto log = llvm::MemoryBuffer::getFile(logPath);
  std::string logText = log ? (*log)->getBuffer().str() : "";
  if (rc != 0) {
    error = "ptxas failed (exit " + std::to_string(rc) + (message.empty() ? "" : ", " + message) +
            "):\n" + logText + "PTX: " + ptxPath + "\nrepro: " + ptxas + " " +
            archFlag + " -O3 -v -o " + dir + "/repro.cubin " + ptxPath;
    return Status::ToolFailed;
  }
  auto cubin = llvm::MemoryBuffer::getFile(cubinPath, /*IsText=*/false,
                                           /*RequiresNullTerminator=*/false);
  if (!cubin) {
    error = "ptxas wrote no cubin at " + cubinPath;
    return Status::Internal;
  }
  result.cubin = (*cubin)->getBuffer().str();

  // "Compiling entry function 'route' for 'sm_90'" is followed by
  // "N bytes stack frame, N bytes spill stores, ..." and "Used N registers".
  std::regex function("Compiling entry function '([^']+)'");
  std::regex spills("([0-9]+) bytes spill stores");
  std::regex registers("Used ([0-9]+) registers");
  abi::Kernel *current = nullptr;
  std::istringstream lines(logText);
  for (std::string line; std::getline(lines, line);) {
    std::smatch match;
    if (std::regex_search(line, match, function)) {
      current = nullptr;
      for (abi::Kernel &kernel : result.kernels)
        if (kernel.symbol == match[1].str())
          current = &kernel;
    } else if (current && std::regex_search(line, match, spills)) {
      current->spillStoreBytes = std::stoll(match[1].str());
    } else if (current && std::regex_search(line, match, registers)) {
      current->registers = std::stoll(match[1].str());
    }
  }
  if (temporary)
    llvm::sys::fs::remove_directories(dir);
  return Status::Ok;
}

/// The manifest of `result`'s kernels, read back through the runtime's rules
/// before it is published: the compiler never writes a manifest the
/// runtime would refuse.
bool manifestJson(const RoutingSpec &spec, const NvptxCompileOptions &options,
                  NvptxCompileResult &result, std::string &error) {
  abi::Manifest manifest;
  manifest.abiVersion = abi::kKernelAbiVersion;
  manifest.compilerVersion = MOEGEN_VERSION;
  manifest.specName = spec.name;
  manifest.specHash = specHash(spec);
  manifest.arch = *abi::parseArch(options.arch);
  manifest.ptxTarget = ptxTarget(options.arch);
  manifest.ptxFile = "kernels.ptx";
  if (!result.cubin.empty())
    manifest.cubinFile = "kernels.cubin";
  manifest.numExperts = spec.numExperts;
  manifest.topK = spec.topK;
  auto floatDType = [](LogitsDType dtype) {
    return dtype == LogitsDType::F32    ? abi::DType::F32
           : dtype == LogitsDType::BF16 ? abi::DType::BF16
                                        : abi::DType::F16;
  };
  manifest.logitsDType = floatDType(spec.logitsDType);
  if (spec.permute) {
    manifest.hiddenDType = floatDType(spec.hiddenDType);
    manifest.hiddenSize = spec.hiddenSize;
  }
  if (spec.capture)
    manifest.captureDType = abi::captureDType(spec.numExperts);
  manifest.unusedSlots = spec.unusedSlots;
  manifest.capacityFactor = spec.capacityFactor;
  manifest.kernels = result.kernels;
  result.manifestJson = abi::writeManifest(manifest);
  try {
    abi::ManifestOptions check;
    check.expectedCompilerVersion = MOEGEN_VERSION;
    check.checkFilesExist = false;
    abi::parseManifest(result.manifestJson, "manifest.json", check);
  } catch (const abi::ManifestError &e) {
    error = std::string("internal error: the manifest breaks the kernel ABI: ") +
            e.what();
    return false;
  }
  return true;
}

Status compileInto(const RoutingSpec &spec, const NvptxCompileOptions &options,
                   Stage stage, NvptxCompileResult &result, std::string &error) {
  if (!checkOptions(options, error))
    return Status::BadInput;
  if (!options.dumpDir.empty()) {
    if (std::error_code ec = llvm::sys::fs::create_directories(options.dumpDir)) {
      error = options.dumpDir + ": error: cannot create the dump directory: " +
              ec.message();
      return Status::BadInput;
    }
  }

  mlir::DialectRegistry registry;
  registerMoEGenDialects(registry);
  mlir::MLIRContext context(registry);
  context.loadAllAvailableDialects();
  mlir::OwningOpRef<mlir::ModuleOp> module = buildRouterModule(spec, context);
  // Reported on stderr when the manager goes, at the end of the compile.
  mlir::DefaultTimingManager timingManager;
  timingManager.setEnabled(options.timing);
  mlir::TimingScope timing = timingManager.getRootScope();
  StageRunner runner{*module, options, error, timing};
  if (!options.dumpDir.empty() &&
      !writeFile(options.dumpDir + "/01-moe.mlir", printModule(*module), error))
    return Status::BadInput;

  NvptxPipelineOptions pipeline;
  pipeline.tokensPerBlock = options.tokensPerBlock;
  pipeline.lanesPerToken = options.lanesPerToken;
  pipeline.topk = options.topk;
  pipeline.chip = ptxTarget(options.arch);
  pipeline.toolkitPath = toolkitDirectory(options);
  if (!runner.run("config", [&](mlir::OpPassManager &pm) {
        addNvptxConfigStage(pm, pipeline);
      }))
    return Status::Internal;
  if (!runner.run("loops",
                  [&](mlir::OpPassManager &pm) { addNvptxLoopsStage(pm); }))
    return Status::Internal;
  if (!runner.run("gpu",
                  [&](mlir::OpPassManager &pm) { addNvptxGpuStage(pm); }))
    return Status::Internal;
  if (!describeKernels(*module, result.kernels, error))
    return Status::Internal;
  for (abi::Kernel &kernel : result.kernels)
    kernel.scheduleSource = scheduleSource(options, kernel.entry);
  if (error = checkSharedMemory(options, result.kernels); !error.empty())
    return Status::BadInput;
  // The gpu stage's manifest serves the GPU emulator, which runs these
  // very kernels (PTX named, not built).
  if (stage == Stage::Gpu) {
    result.gpuIR = printModule(*module);
    return manifestJson(spec, options, result, error) ? Status::Ok
                                                      : Status::Internal;
  }

  if (!runner.run("nvvm", [&](mlir::OpPassManager &pm) {
        addNvptxNvvmStage(pm, pipeline);
      }))
    return Status::Internal;
  if (stage == Stage::Llvm) {
    result.llvmIR = printModule(*module);
    return Status::Ok;
  }

  if (!runner.run("binary", [&](mlir::OpPassManager &pm) {
        addNvptxBinaryStage(pm, pipeline);
      }))
    return Status::Internal;
  std::optional<std::string> ptx = extractPtx(*module);
  if (!ptx) {
    error = "internal error: the binary stage produced no PTX";
    return Status::Internal;
  }
  result.ptx = *ptx;
  if (!options.overrideDir.empty()) {
    std::string path = options.overrideDir + "/kernels.ptx";
    if (auto buffer = llvm::MemoryBuffer::getFile(path)) {
      llvm::errs() << "moegen: note: using the PTX in " << path << "\n";
      result.ptx = (*buffer)->getBuffer().str();
    }
  }
  if (!options.dumpDir.empty() &&
      !writeFile(options.dumpDir + "/07-kernels.ptx", result.ptx, error))
    return Status::BadInput;

  if (stage == Stage::Cubin) {
    mlir::TimingScope ptxasTiming = timing.nest("ptxas");
    Status status = runPtxas(options, result, error);
    ptxasTiming.stop();
    if (status != Status::Ok)
      return status;
  }
  if (!manifestJson(spec, options, result, error))
    return Status::Internal;
  return Status::Ok;
}

Status findPtxasVersion(const NvptxCompileOptions &options,
                        std::string &version, std::string &error) {
  std::string ptxas = findPtxas(options, error);
  if (ptxas.empty())
    return Status::BadInput;
  llvm::SmallString<128> output;
  if (llvm::sys::fs::createTemporaryFile("moegen-ptxas-version", "txt",
                                         output)) {
    error = "cannot create a temporary file for ptxas --version";
    return Status::Internal;
  }
  std::optional<llvm::StringRef> redirects[] = {std::nullopt, output.str(),
                                                output.str()};
  llvm::StringRef args[] = {ptxas, "--version"};
  std::string message;
  int rc = llvm::sys::ExecuteAndWait(ptxas, args, std::nullopt, redirects,
                                     /*secondsToWait=*/60, 0, &message);
  auto text = llvm::MemoryBuffer::getFile(output);
  llvm::sys::fs::remove(output);
  if (rc != 0 || !text) {
    error = ptxas + " --version failed (exit " + std::to_string(rc) +
            (message.empty() ? "" : ", " + message) + ")";
    return Status::ToolFailed;
  }
  // The last line: "Build cuda_13.0.r13.0/compiler.36424714_0".
  llvm::StringRef lines = llvm::StringRef((*text)->getBuffer()).trim();
  auto [head, last] = lines.rsplit('\n');
  version = (last.empty() ? head : last).trim().str();
  return Status::Ok;
}

bool writeKernelFiles(const RoutingSpec &spec, const NvptxCompileResult &result,
                      const std::string &dir, std::string &error) {
  // The directories this call creates go again on failure, so that a
  // failed compile leaves the file system as it was; only while empty, so
  // that what a concurrent writer published there stays.
  std::string created;
  for (llvm::StringRef p = dir; !p.empty() && !llvm::sys::fs::exists(p);
       p = llvm::sys::path::parent_path(p))
    created = p.str();
  if (std::error_code ec = llvm::sys::fs::create_directories(dir)) {
    error = dir + ": error: cannot create the output directory: " + ec.message();
    return false;
  }
  auto removeCreated = llvm::make_scope_exit([&] {
    if (created.empty())
      return;
    for (llvm::StringRef p = dir; !p.empty() && !llvm::sys::fs::remove(p);
         p = llvm::sys::path::parent_path(p))
      if (p == created)
        break;
  });
  // Several threads of the JIT may publish into one directory at once.
  std::string stagingError;
  support::StagingDirectory staging(dir, "moegen-compile", stagingError);
  if (staging.path().empty()) {
    error = dir + ": error: cannot write into the output directory: " +
            stagingError;
    return false;
  }
  std::vector<std::pair<std::string, const std::string *>> files;
  std::string specText = printRoutingSpec(spec);
  files.emplace_back("spec.yaml", &specText);
  files.emplace_back("kernels.ptx", &result.ptx);
  if (!result.cubin.empty())
    files.emplace_back("kernels.cubin", &result.cubin);
  // Last: a reader never sees a manifest without its binaries.
  files.emplace_back("manifest.json", &result.manifestJson);
  std::vector<std::string> names;
  for (auto &[name, text] : files) {
    if (!writeFile(staging.pathFor(name), *text, error)) {
      // Named as published, with the system's reason (the last part): the
      // staging path is gone by the time the line is read.
      size_t reason = error.rfind(": ");
      error = support::quotePath(dir + "/" + name) + ": error: cannot write: " +
              error.substr(reason == std::string::npos ? 0 : reason + 2);
      return false;
    }
    names.push_back(name);
  }
  // A stale cubin from an earlier --emit=cubin must not outlive a PTX-only
  // compile next to a new manifest.
  if (result.cubin.empty())
    llvm::sys::fs::remove(dir + "/kernels.cubin");
  std::string failed, message;
  if (!staging.publish(names, failed, message)) {
    error = dir + "/" + failed + ": error: cannot write: " + message;
    return false;
  }
  removeCreated.release();
  return true;
}

} // namespace

llvm::Error validateOptions(const NvptxCompileOptions &options) {
  std::string error;
  if (!checkOptions(options, error))
    return toError(Status::BadInput, error);
  return llvm::Error::success();
}

llvm::Expected<NvptxCompileResult> compile(const RoutingSpec &spec,
                                           const NvptxCompileOptions &options,
                                           Stage stage) {
  NvptxCompileResult result;
  std::string error;
  if (Status status = compileInto(spec, options, stage, result, error);
      status != Status::Ok)
    return toError(status, error);
  return result;
}

namespace {

bool isBucketedKernel(const abi::Kernel &kernel) {
  return (kernel.entry == abi::EntryKind::Route ||
          kernel.entry == abi::EntryKind::RouteHash ||
          kernel.entry == abi::EntryKind::Replay) &&
         !kernel.launch.cooperative && kernel.fusedDispatchMaxSlots == 0;
}

/// The gpu stage's module `base` with the gpu.funcs of `variant` that
/// `renames` names moved in under their new names; nullopt when either
/// does not parse or lacks a kernel.
std::optional<std::string>
mergeGpuKernels(const std::string &base, const std::string &variant,
                llvm::ArrayRef<std::pair<std::string, std::string>> renames,
                std::string &error) {
  mlir::DialectRegistry registry;
  registerMoEGenDialects(registry);
  mlir::MLIRContext context(registry);
  context.loadAllAvailableDialects();
  mlir::OwningOpRef<mlir::ModuleOp> into =
      mlir::parseSourceString<mlir::ModuleOp>(base, &context);
  mlir::OwningOpRef<mlir::ModuleOp> from =
      mlir::parseSourceString<mlir::ModuleOp>(variant, &context);
  if (!into || !from) {
    error = "internal error: a token bucket's gpu stage does not parse back";
    return std::nullopt;
  }
  mlir::gpu::GPUModuleOp target, source;
  into->walk([&](mlir::gpu::GPUModuleOp op) { target = op; });
  from->walk([&](mlir::gpu::GPUModuleOp op) { source = op; });
  if (!target || !source) {
    error = "internal error: a token bucket's gpu stage has no gpu.module";
    return std::nullopt;
  }
  for (const auto &[name, renamed] : renames) {
    auto kernel = source.lookupSymbol<mlir::gpu::GPUFuncOp>(name);
    if (!kernel) {
      error = "internal error: a token bucket's gpu stage lacks " + name;
      return std::nullopt;
    }
    kernel.setName(renamed);
    // Before the module's terminator (gpu.module_end in MLIR 19).
    mlir::Block &body = target.getBodyRegion().front();
    if (body.mightHaveTerminator())
      kernel->moveBefore(body.getTerminator());
    else
      kernel->moveBefore(&body, body.end());
  }
  return printModule(*into);
}

} // namespace

llvm::Expected<NvptxCompileResult>
compileBuckets(const RoutingSpec &spec, const NvptxCompileOptions &options,
               const std::vector<BucketSchedule> &buckets, Stage stage) {
  if (buckets.empty() || buckets[0].minTokens != 0)
    return toError(Status::Internal,
                   "internal error: the first token bucket must start at 0");
  if (stage == Stage::Llvm)
    return toError(Status::BadInput,
                   "a kernel per token bucket is a gpu stage or a PTX or "
                   "cubin kernel directory (--emit=gpu, ptx or cubin)");
  const Stage partStage = stage == Stage::Gpu ? Stage::Gpu : Stage::Ptx;
  auto pinned = [&](const BucketSchedule &bucket) {
    NvptxCompileOptions pin = options;
    pin.lanesPerToken = bucket.lanesPerToken;
    pin.tokensPerBlock = bucket.tokensPerBlock;
    pin.topk = bucket.topk;
    pin.scheduleNote = bucket.note;
    return pin;
  };
  NvptxCompileResult result;
  std::string error;
  if (Status status =
          compileInto(spec, pinned(buckets[0]), partStage, result, error);
      status != Status::Ok)
    return toError(status, error);
  std::vector<std::string> parts{result.ptx};
  for (size_t i = 1; i < buckets.size(); ++i) {
    if (buckets[i].minTokens <= buckets[i - 1].minTokens)
      return toError(Status::Internal,
                     "internal error: token buckets must ascend");
    NvptxCompileOptions pin = pinned(buckets[i]);
    // Stages and overrides are the first bucket's.
    pin.dumpDir.clear();
    pin.overrideDir.clear();
    NvptxCompileResult variant;
    if (Status status = compileInto(spec, pin, partStage, variant, error);
        status != Status::Ok)
      return toError(status, error);
    // The row kernels under the bucket's names; dispatch and the other
    // entry points are the first bucket's.
    std::vector<std::pair<std::string, std::string>> renames;
    for (abi::Kernel kernel : variant.kernels) {
      if (!isBucketedKernel(kernel))
        continue;
      std::string name =
          kernel.symbol + "_t" + std::to_string(buckets[i].minTokens);
      renames.emplace_back(kernel.symbol, name);
      kernel.symbol = name;
      kernel.minTokens = buckets[i].minTokens;
      result.kernels.push_back(kernel);
    }
    if (stage == Stage::Gpu) {
      std::optional<std::string> merged =
          mergeGpuKernels(result.gpuIR, variant.gpuIR, renames, error);
      if (!merged)
        return toError(Status::Internal, error);
      result.gpuIR = *merged;
      continue;
    }
    std::optional<std::string> selected =
        mlir::moe::selectAndRenameKernels(variant.ptx, renames);
    if (!selected)
      return toError(Status::Internal,
                     "internal error: the PTX of the schedule for T >= " +
                         std::to_string(buckets[i].minTokens) +
                         " is not laid out as the backend prints it");
    parts.push_back(*selected);
  }
  NvptxCompileOptions base = pinned(buckets[0]);
  if (stage != Stage::Gpu) {
    std::optional<std::string> joined = mlir::moe::joinPtx(parts);
    if (!joined)
      return toError(Status::Internal,
                     "internal error: the token buckets' PTX modules do not "
                     "join (a symbol declared differently by two of them)");
    result.ptx = *joined;
    if (stage == Stage::Cubin)
      if (Status status = runPtxas(base, result, error); status != Status::Ok)
        return toError(status, error);
  }
  if (!manifestJson(spec, base, result, error))
    return toError(Status::Internal, error);
  return result;
}

llvm::Expected<std::string> ptxasVersion(const NvptxCompileOptions &options) {
  std::string version, error;
  if (Status status = findPtxasVersion(options, version, error);
      status != Status::Ok)
    return toError(status, error);
  return version;
}

llvm::Error writeKernelDirectory(const RoutingSpec &spec,
                                 const NvptxCompileResult &result,
                                 const std::string &dir) {
  std::string error;
  if (!writeKernelFiles(spec, result, dir, error))
    return toError(Status::BadInput, error);
  return llvm::Error::success();
}

} // namespace moegen::nvptx
