//===- NvptxCompiler.cpp - Routing specs to PTX and cubin -----------------===//

#include "compiler/backend/nvptx/NvptxCompiler.h"

#include "compiler/Registration.h"
#include "compiler/spec/SpecParser.h"
#include "compiler/spec/SpecToMoE.h"
#include "dialects/moe/Conversion/Passes.h"
#include "dialects/moe/IR/MoEDialect.h"
#include "dialects/moe/Transforms/Passes.h"
#include "runtime/KernelError.h"

#include "mlir/Conversion/Passes.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/GPU/Transforms/Passes.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/Transforms/Passes.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Transforms/Passes.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/raw_ostream.h"

#include <atomic>
#include <cstdlib>
#include <map>
#include <regex>
#include <unistd.h>

#ifndef MOEGEN_VERSION
#error "MOEGEN_VERSION must be defined by the build"
#endif

namespace moegen::nvptx {

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

bool validateOptions(const NvptxCompileOptions &options, std::string &error) {
  if (!isSupportedArch(options.arch)) {
    error = "--arch " + options.arch + ": must be one of sm_80, sm_89, sm_90, "
            "sm_90a, sm_100";
    return false;
  }
  if (options.tokensPerBlock < 0 || options.tokensPerBlock > 32) {
    error = "tokens per block = " + std::to_string(options.tokensPerBlock) +
            ": must be 0 (heuristic) or 1 to 32 warps";
    return false;
  }
  if (!options.topk.empty() && options.topk != "argmax_passes" &&
      options.topk != "insertion") {
    error = "topk '" + options.topk +
            "': must be empty (heuristic), argmax_passes or insertion";
    return false;
  }
  return true;
}

std::string specHash(const RoutingSpec &spec) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (unsigned char c : printRoutingSpec(spec)) {
    hash ^= c;
    hash *= 0x100000001b3ull;
  }
  char text[17];
  snprintf(text, sizeof(text), "%016llx", static_cast<unsigned long long>(hash));
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

bool writeFile(const std::string &path, llvm::StringRef text,
               std::string &error) {
  std::error_code ec;
  llvm::raw_fd_ostream os(path, ec);
  if (!ec) {
    os << text;
    os.close();
    ec = os.error();
  }
  if (ec) {
    error = path + ": error: cannot write: " + ec.message();
    return false;
  }
  return true;
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
  int index = 1;

  /// Runs `build`'s passes; dumps the result as NN-name.mlir. On failure,
  /// writes the stage's input and a repro command into `error`.
  bool run(llvm::StringRef name, llvm::StringRef reproFlags,
           llvm::function_ref<void(mlir::PassManager &)> build) {
    std::string input = printModule(module);
    std::string diagnostics;
    mlir::PassManager pm(module->getContext());
    build(pm);
    mlir::LogicalResult status = mlir::success();
    {
      mlir::ScopedDiagnosticHandler handler(
          module->getContext(), [&](mlir::Diagnostic &diag) {
            llvm::raw_string_ostream os(diagnostics);
            os << diag.getLocation() << ": " << diag << "\n";
            return mlir::success();
          });
      status = pm.run(module);
    }
    ++index;
    char prefix[16];
    snprintf(prefix, sizeof(prefix), "%02d-", index);
    if (mlir::failed(status)) {
      std::string dir = keepDirectory(options);
      std::string path = dir + "/" + prefix + name.str() + "-input.mlir";
      std::string ignored;
      writeFile(path, input, ignored);
      error = "internal error: the " + name.str() +
              " stage failed:\n" + diagnostics + "input IR: " + path +
              "\nrepro: moegen-opt " + path + " " + reproFlags.str();
      return false;
    }
    if (!options.dumpDir.empty())
      return writeFile(options.dumpDir + "/" + prefix + name.str() + ".mlir",
                       printModule(module), error);
    return true;
  }
};

std::string dtypeName(mlir::Type type) {
  if (type.isF32())
    return "f32";
  if (type.isBF16())
    return "bf16";
  if (type.isF16())
    return "f16";
  if (type.isInteger(16))
    return "i16";
  if (type.isInteger(32))
    return "i32";
  return "i64";
}

/// Names of a kernel's arguments (in the ABI order of docs/kernel-abi.md),
/// the symbols of their dynamic dimensions, and what the kernel does with
/// them.
struct ArgRole {
  std::string name;
  std::vector<std::string> dynamicDims;
  std::string access;
};

std::vector<ArgRole> argRoles(const RoutingSpec &spec, llvm::StringRef entry) {
  std::vector<ArgRole> roles;
  if (entry == "dispatch")
    return {{"topk_ids", {"T"}, "read"},
            {"expert_counts", {}, "write"},
            {"expert_offsets", {}, "write"},
            {"sorted_slots", {"T*k"}, "write"},
            {"slot_positions", {"T*k"}, "write"},
            {"error", {}, "readwrite"}};
  roles.push_back({"logits", {"T"}, "read"});
  if (entry == "replay") {
    roles.push_back({"forced_ids", {"T"}, "read"});
  } else if (entry == "route_hash") {
    roles.push_back({"token_ids", {"T"}, "read"});
    roles.push_back({"hash_table", {"V"}, "read"});
  } else if (spec.scoreBias) {
    roles.push_back({"bias", {}, "read"});
  }
  if (entry != "replay" && spec.capture) {
    roles.push_back({"capture", {"T", "L"}, "readwrite"});
    roles.push_back({"layer", {}, ""});
  }
  roles.push_back({"topk_ids", {"T"}, "write"});
  roles.push_back({"topk_weights", {"T"}, "write"});
  roles.push_back({"error", {}, "readwrite"});
  return roles;
}

/// The parameters of each kernel, from the loops-stage signatures.
bool describeKernels(const RoutingSpec &spec, mlir::ModuleOp loops,
                     std::vector<KernelInfo> &kernels, std::string &error) {
  for (auto func : loops.getOps<mlir::func::FuncOp>()) {
    auto entry = func->getAttrOfType<mlir::StringAttr>(mlir::moe::kEntryAttrName);
    if (!entry)
      continue;
    KernelInfo info;
    info.entry = entry.getValue().str();
    info.symbol = func.getName().str();
    std::vector<ArgRole> roles = argRoles(spec, entry.getValue());
    mlir::TypeRange types = func.getArgumentTypes();
    size_t numArgs = info.entry == "dispatch" ? types.size() : types.size() - 2;
    if (roles.size() != numArgs) {
      error = "internal error: kernel '" + info.symbol + "' has " +
              std::to_string(numArgs) + " arguments, the ABI names " +
              std::to_string(roles.size());
      return false;
    }
    for (size_t i = 0; i < numArgs; ++i) {
      const ArgRole &role = roles[i];
      auto memref = mlir::dyn_cast<mlir::MemRefType>(types[i]);
      if (!memref) {
        info.params.push_back({role.name, "scalar", "i64", {}, "", "", 0});
        continue;
      }
      KernelParam pointer{role.name, "pointer", dtypeName(memref.getElementType()),
                          {}, role.access, "", 0};
      std::vector<KernelParam> sizes;
      size_t symbol = 0;
      for (int64_t dim = 0; dim < memref.getRank(); ++dim) {
        if (!memref.isDynamicDim(dim)) {
          pointer.shape.push_back(std::to_string(memref.getDimSize(dim)));
          continue;
        }
        pointer.shape.push_back(symbol < role.dynamicDims.size()
                                    ? role.dynamicDims[symbol]
                                    : "?");
        ++symbol;
        sizes.push_back({role.name + ".size" + std::to_string(dim), "size",
                         "i64", {}, "", role.name, dim});
      }
      info.params.push_back(pointer);
      info.params.insert(info.params.end(), sizes.begin(), sizes.end());
    }
    kernels.push_back(std::move(info));
  }
  return true;
}

/// Fills the launch geometry from the gpu stage's kernels.
void readLaunch(mlir::ModuleOp module, std::vector<KernelInfo> &kernels) {
  module.walk([&](mlir::gpu::GPUFuncOp func) {
    auto launch =
        func->getAttrOfType<mlir::DictionaryAttr>(mlir::moe::kLaunchAttrName);
    if (!launch)
      return;
    for (KernelInfo &info : kernels) {
      if (info.symbol != func.getName())
        continue;
      info.blockDim = launch.getAs<mlir::IntegerAttr>("block_dim").getInt();
      info.tokensPerBlock =
          launch.getAs<mlir::IntegerAttr>("tokens_per_block").getInt();
      info.dynamicSharedBytes =
          launch.getAs<mlir::IntegerAttr>("dynamic_shared_memory_bytes")
              .getInt();
    }
  });
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
CompileStatus runPtxas(const NvptxCompileOptions &options,
                       NvptxCompileResult &result, std::string &error) {
  std::string ptxas = findPtxas(options, error);
  if (ptxas.empty())
    return CompileStatus::BadInput;
  std::string dir = options.dumpDir;
  bool temporary = dir.empty();
  if (temporary) {
    llvm::SmallString<128> tmp;
    if (llvm::sys::fs::createUniqueDirectory("moegen-ptxas", tmp)) {
      error = "cannot create a temporary directory for ptxas";
      return CompileStatus::Internal;
    }
    dir = std::string(tmp);
  }
  std::string ptxPath = dir + "/kernels.ptx";
  std::string cubinPath = dir + "/kernels.cubin";
  std::string logPath = dir + "/ptxas.log";
  if (!writeFile(ptxPath, result.ptx, error))
    return CompileStatus::Internal;
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
    return CompileStatus::ToolFailed;
  }
  auto cubin = llvm::MemoryBuffer::getFile(cubinPath, /*IsText=*/false,
                                           /*RequiresNullTerminator=*/false);
  if (!cubin) {
    error = "ptxas wrote no cubin at " + cubinPath;
    return CompileStatus::Internal;
  }
  result.cubin = (*cubin)->getBuffer().str();

  // "Compiling entry function 'route' for 'sm_90'" is followed by
  // "N bytes stack frame, N bytes spill stores, ..." and "Used N registers".
  std::regex function("Compiling entry function '([^']+)'");
  std::regex spills("([0-9]+) bytes spill stores");
  std::regex registers("Used ([0-9]+) registers");
  KernelInfo *current = nullptr;
  std::istringstream lines(logText);
  for (std::string line; std::getline(lines, line);) {
    std::smatch match;
    if (std::regex_search(line, match, function)) {
      current = nullptr;
      for (KernelInfo &info : result.kernels)
        if (info.symbol == match[1].str())
          current = &info;
    } else if (current && std::regex_search(line, match, spills)) {
      current->spillBytes = std::stoll(match[1].str());
    } else if (current && std::regex_search(line, match, registers)) {
      current->registers = std::stoll(match[1].str());
    }
  }
  if (temporary)
    llvm::sys::fs::remove_directories(dir);
  return CompileStatus::Ok;
}

std::string manifestJson(const RoutingSpec &spec,
                         const NvptxCompileOptions &options,
                         const NvptxCompileResult &result) {
  llvm::json::Array kernels;
  for (const KernelInfo &info : result.kernels) {
    llvm::json::Array params;
    for (const KernelParam &param : info.params) {
      llvm::json::Object object{{"name", param.name}, {"kind", param.kind}};
      if (param.kind == "pointer") {
        object["dtype"] = param.dtype;
        llvm::json::Array shape;
        for (const std::string &dim : param.shape) {
          if (!dim.empty() && std::isdigit(static_cast<unsigned char>(dim[0])))
            shape.push_back(std::stoll(dim));
          else
            shape.push_back(dim);
        }
        object["shape"] = std::move(shape);
        object["access"] = param.access;
      } else if (param.kind == "size") {
        object["of"] = param.of;
        object["dim"] = param.dim;
      } else {
        object["dtype"] = param.dtype;
      }
      params.push_back(std::move(object));
    }
    llvm::json::Object launch{
        {"block_dim", info.blockDim},
        {"tokens_per_block", info.tokensPerBlock},
        {"grid_dim", info.tokensPerBlock > 0
                         ? "ceil_div(T, " + std::to_string(info.tokensPerBlock) + ")"
                         : std::string("1")},
        {"dynamic_shared_memory_bytes", info.dynamicSharedBytes}};
    llvm::json::Object kernel{{"entry", info.entry},
                              {"symbol", info.symbol},
                              {"params", std::move(params)},
                              {"launch", std::move(launch)}};
    if (info.registers)
      kernel["registers"] = *info.registers;
    if (info.spillBytes)
      kernel["spill_store_bytes"] = *info.spillBytes;
    kernels.push_back(std::move(kernel));
  }
  llvm::json::Object manifest{
      {"format", "moegen-kernels"},
      {"abi_version", 1},
      {"compiler_version", MOEGEN_VERSION},
      {"spec_name", spec.name},
      {"spec_hash", specHash(spec)},
      {"arch", options.arch},
      {"ptx_target", ptxTarget(options.arch)},
      {"ptx", "kernels.ptx"},
      {"num_experts", spec.numExperts},
      {"top_k", spec.topK},
      {"logits_dtype", spec.logitsDType == LogitsDType::F32    ? "f32"
                       : spec.logitsDType == LogitsDType::BF16 ? "bf16"
                                                               : "f16"},
      {"error_record_words", moegen::kGpuKernelErrorWords},
      {"kernels", std::move(kernels)}};
  if (!result.cubin.empty())
    manifest["cubin"] = "kernels.cubin";
  if (spec.capture)
    manifest["capture_dtype"] = spec.numExperts <= 32767 ? "i16" : "i32";
  std::string text;
  llvm::raw_string_ostream os(text);
  os << llvm::formatv("{0:2}", llvm::json::Value(std::move(manifest))) << "\n";
  return text;
}

} // namespace

CompileStatus compile(const RoutingSpec &spec, const NvptxCompileOptions &options,
                      Stage stage, NvptxCompileResult &result,
                      std::string &error) {
  if (!validateOptions(options, error))
    return CompileStatus::BadInput;
  if (!options.dumpDir.empty()) {
    if (std::error_code ec = llvm::sys::fs::create_directories(options.dumpDir)) {
      error = options.dumpDir + ": error: cannot create the dump directory: " +
              ec.message();
      return CompileStatus::BadInput;
    }
  }

  mlir::DialectRegistry registry;
  registerMoEGenDialects(registry);
  mlir::MLIRContext context(registry);
  context.loadAllAvailableDialects();
  mlir::OwningOpRef<mlir::ModuleOp> module = buildRouterModule(spec, context);
  StageRunner runner{*module, options, error};
  if (!options.dumpDir.empty() &&
      !writeFile(options.dumpDir + "/01-moe.mlir", printModule(*module), error))
    return CompileStatus::BadInput;

  std::string configFlags = "-moe-kernel-config=\"target=nvptx" +
                            (options.tokensPerBlock
                                 ? " tokens-per-task=" +
                                       std::to_string(options.tokensPerBlock)
                                 : std::string()) +
                            (options.topk.empty() ? "" : " topk=" + options.topk) +
                            "\"";
  if (!runner.run("config", configFlags, [&](mlir::PassManager &pm) {
        mlir::moe::MoEKernelConfigOptions config;
        config.target = "nvptx";
        config.tokensPerTask = options.tokensPerBlock;
        config.topk = options.topk;
        pm.addPass(mlir::moe::createMoEKernelConfig(config));
      }))
    return CompileStatus::Internal;
  if (!runner.run("loops", "-convert-moe-to-loops -canonicalize -cse",
                  [&](mlir::PassManager &pm) {
                    pm.addPass(mlir::moe::createConvertMoEToLoops());
                    pm.addPass(mlir::createCanonicalizerPass());
                    pm.addPass(mlir::createCSEPass());
                  }))
    return CompileStatus::Internal;
  if (!describeKernels(spec, *module, result.kernels, error))
    return CompileStatus::Internal;
  if (!runner.run("gpu", "-convert-moe-loops-to-gpu -canonicalize -cse",
                  [&](mlir::PassManager &pm) {
                    pm.addPass(mlir::moe::createConvertMoELoopsToGPU());
                    pm.addPass(mlir::createCanonicalizerPass());
                    pm.addPass(mlir::createCSEPass());
                  }))
    return CompileStatus::Internal;
  readLaunch(*module, result.kernels);
  result.gpuIR = printModule(*module);
  if (stage == Stage::Gpu)
    return CompileStatus::Ok;

  std::string chip = ptxTarget(options.arch);
  std::string nvvmFlags =
      "--pass-pipeline=\"builtin.module(nvvm-attach-target{chip=" + chip +
      " features=+ptx80 O=3},gpu.module(convert-scf-to-cf,convert-gpu-to-"
      "nvvm,canonicalize,cse,reconcile-unrealized-casts))\"";
  if (!runner.run("nvvm", nvvmFlags, [&](mlir::PassManager &pm) {
        mlir::GpuNVVMAttachTargetOptions target;
        target.chip = chip;
        target.features = "+ptx80";
        target.optLevel = 3;
        pm.addPass(mlir::createGpuNVVMAttachTarget(target));
        mlir::OpPassManager &gpu = pm.nest<mlir::gpu::GPUModuleOp>();
        gpu.addPass(mlir::createConvertSCFToCFPass());
        gpu.addPass(mlir::createConvertGpuOpsToNVVMOps());
        gpu.addPass(mlir::createCanonicalizerPass());
        gpu.addPass(mlir::createCSEPass());
        gpu.addPass(mlir::createReconcileUnrealizedCastsPass());
      }))
    return CompileStatus::Internal;
  result.llvmIR = printModule(*module);
  if (stage == Stage::Llvm)
    return CompileStatus::Ok;

  // MLIR 19 gives the dynamic shared memory symbol internal linkage, which
  // NVPTX prints as a 1-byte static `.shared` variable that the kernels then
  // index past; external linkage gives CUDA's `.extern .shared ... []`, the
  // base of the dynamic allocation.
  module->walk([](mlir::LLVM::GlobalOp global) {
    if (global.getAddrSpace() == 3 &&
        global.getSymName().starts_with("__dynamic_shmem__"))
      global.setLinkage(mlir::LLVM::Linkage::External);
  });
  std::string toolkit = toolkitDirectory(options);
  if (!runner.run("binary",
                  "--gpu-module-to-binary=\"format=isa toolkit=" + toolkit + "\"",
                  [&](mlir::PassManager &pm) {
                    mlir::GpuModuleToBinaryPassOptions binary;
                    binary.compilationTarget = "isa";
                    binary.toolkitPath = toolkit;
                    pm.addPass(mlir::createGpuModuleToBinaryPass(binary));
                  }))
    return CompileStatus::Internal;
  std::optional<std::string> ptx = extractPtx(*module);
  if (!ptx) {
    error = "internal error: gpu-module-to-binary produced no PTX";
    return CompileStatus::Internal;
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
    return CompileStatus::BadInput;

  if (stage == Stage::Cubin) {
    CompileStatus status = runPtxas(options, result, error);
    if (status != CompileStatus::Ok)
      return status;
  }
  result.manifestJson = manifestJson(spec, options, result);
  return CompileStatus::Ok;
}

CompileStatus ptxasVersion(const NvptxCompileOptions &options,
                           std::string &version, std::string &error) {
  std::string ptxas = findPtxas(options, error);
  if (ptxas.empty())
    return CompileStatus::BadInput;
  llvm::SmallString<128> output;
  if (llvm::sys::fs::createTemporaryFile("moegen-ptxas-version", "txt",
                                         output)) {
    error = "cannot create a temporary file for ptxas --version";
    return CompileStatus::Internal;
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
    return CompileStatus::ToolFailed;
  }
  // The last line: "Build cuda_13.0.r13.0/compiler.36424714_0".
  llvm::StringRef lines = llvm::StringRef((*text)->getBuffer()).trim();
  auto [head, last] = lines.rsplit('\n');
  version = (last.empty() ? head : last).trim().str();
  return CompileStatus::Ok;
}

bool writeKernelDirectory(const RoutingSpec &spec,
                          const NvptxCompileResult &result,
                          const std::string &dir, std::string &error) {
  if (std::error_code ec = llvm::sys::fs::create_directories(dir)) {
    error = dir + ": error: cannot create the output directory: " + ec.message();
    return false;
  }
  // Atomic: the JIT compiles from several threads at once.
  static std::atomic<int> counter{0};
  std::string staging = dir + "/.moegen-compile-" + std::to_string(getpid()) +
                        "-" + std::to_string(counter++);
  if (std::error_code ec = llvm::sys::fs::create_directory(staging)) {
    error = dir + ": error: cannot write into the output directory: " +
            ec.message();
    return false;
  }
  std::vector<std::pair<std::string, const std::string *>> files;
  std::string specText = printRoutingSpec(spec);
  files.emplace_back("spec.yaml", &specText);
  files.emplace_back("kernels.ptx", &result.ptx);
  if (!result.cubin.empty())
    files.emplace_back("kernels.cubin", &result.cubin);
  files.emplace_back("manifest.json", &result.manifestJson);
  for (auto &[name, text] : files) {
    if (!writeFile(staging + "/" + name, *text, error)) {
      llvm::sys::fs::remove_directories(staging);
      return false;
    }
  }
  // A stale cubin from an earlier --emit=cubin must not outlive a PTX-only
  // compile next to a new manifest.
  if (result.cubin.empty())
    llvm::sys::fs::remove(dir + "/kernels.cubin");
  for (auto &[name, text] : files) {
    if (std::error_code ec =
            llvm::sys::fs::rename(staging + "/" + name, dir + "/" + name)) {
      error = dir + "/" + name + ": error: cannot write: " + ec.message();
      llvm::sys::fs::remove_directories(staging);
      return false;
    }
  }
  llvm::sys::fs::remove_directories(staging);
  return true;
}

} // namespace moegen::nvptx
