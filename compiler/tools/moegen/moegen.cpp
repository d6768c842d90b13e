//===- moegen.cpp - The moegen command-line tool --------------------------===//
//
// Exit codes: 0 success; 2 bad input or usage (one line on stderr naming the
// file, key or option and the rule); 1 an internal compiler error (with a
// repro command). Output files are written atomically, so a failed command
// leaves nothing half-written.
//
//===----------------------------------------------------------------------===//

#include "compiler/Registration.h"
#include "compiler/backend/cpu/CpuRouter.h"
#include "compiler/backend/nvptx/NvptxCompiler.h"
#include "compiler/jit/KernelJit.h"
#include "compiler/spec/SpecParser.h"
#include "compiler/spec/SpecToMoE.h"
#include "runtime/Error.h"
#include "runtime/JitCache.h"
#include "abi/KernelError.h"
#include "runtime/Manifest.h"
#ifdef MOEGEN_HAVE_CUDA_RUNTIME
#include "runtime/cuda/CudaRouter.h"
#endif
#include "runtime/npy/Npy.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"

#include "llvm/Support/Error.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/raw_ostream.h"

#include <CLI/CLI.hpp>

#include <array>
#include <cmath>
#include <unistd.h>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace {

constexpr int kExitOk = 0;
constexpr int kExitInternal = 1;
constexpr int kExitBadInput = 2;

struct CompileOptions {
  std::string specPath;
  std::string emit = "mlir";
  std::string output = "-";
  std::string arch = "sm_90";
  int64_t tokensPerBlock = 0;
  std::string dumpDir;
  std::string overrideDir;
  /// The command as typed, for the repro line of an internal error.
  std::string commandLine;
};

std::string quotePath(std::string_view text);

/// Writes `text` to `path` ("-" is stdout) through a temporary file and a
/// rename, so that readers never see a partial file.
int writeOutput(const std::string &path, const std::string &text) {
  llvm::Error error =
      llvm::writeToOutput(path, [&](llvm::raw_ostream &os) -> llvm::Error {
        os << text;
        return llvm::Error::success();
      });
  if (error) {
    llvm::errs() << path << ": error: cannot write output: "
                 << llvm::toString(std::move(error)) << "\n";
    return kExitBadInput;
  }
  return kExitOk;
}

/// --emit=gpu|llvm|ptx|cubin: the NVPTX backend. IR goes to a file or
/// stdout; PTX and cubin go to a kernel directory with its manifest.
int runCompileNvptx(const moegen::RoutingSpec &spec,
                    const CompileOptions &options) {
  namespace nvptx = moegen::nvptx;
  bool binaries = options.emit == "ptx" || options.emit == "cubin";
  if (binaries && options.output == "-") {
    llvm::errs() << "moegen: error: --emit=" << options.emit
                 << " writes a kernel directory: give it with -o DIR\n";
    return kExitBadInput;
  }
  nvptx::NvptxCompileOptions compileOptions;
  compileOptions.arch = options.arch;
  compileOptions.tokensPerBlock = options.tokensPerBlock;
  compileOptions.dumpDir = options.dumpDir;
  if (compileOptions.dumpDir.empty())
    if (const char *dump = std::getenv("MOEGEN_DUMP_DIR"); dump && *dump)
      compileOptions.dumpDir = dump;
  compileOptions.overrideDir = options.overrideDir;
  if (compileOptions.overrideDir.empty())
    if (const char *dir = std::getenv("MOEGEN_OVERRIDE_DIR"); dir && *dir)
      compileOptions.overrideDir = dir;

  nvptx::Stage stage = options.emit == "gpu"    ? nvptx::Stage::Gpu
                       : options.emit == "llvm" ? nvptx::Stage::Llvm
                       : options.emit == "ptx"  ? nvptx::Stage::Ptx
                                                : nvptx::Stage::Cubin;
  nvptx::NvptxCompileResult result;
  std::string error;
  nvptx::CompileStatus status =
      nvptx::compile(spec, compileOptions, stage, result, error);
  switch (status) {
  case nvptx::CompileStatus::Ok:
    break;
  case nvptx::CompileStatus::BadInput:
    llvm::errs() << "moegen: error: " << error << "\n";
    return kExitBadInput;
  case nvptx::CompileStatus::ToolFailed:
  case nvptx::CompileStatus::Internal:
    llvm::errs() << quotePath(options.specPath) << ": " << error << "\n";
    if (compileOptions.dumpDir.empty())
      llvm::errs() << "every stage: " << options.commandLine
                   << " --dump-dir DIR\n";
    return kExitInternal;
  }
  if (stage == nvptx::Stage::Gpu)
    return writeOutput(options.output, result.gpuIR + "\n");
  if (stage == nvptx::Stage::Llvm)
    return writeOutput(options.output, result.llvmIR + "\n");
  if (!nvptx::writeKernelDirectory(spec, result, options.output, error)) {
    llvm::errs() << error << "\n";
    return kExitBadInput;
  }
  return kExitOk;
}

int runCompile(const CompileOptions &options) {
  std::string error;
  std::optional<moegen::RoutingSpec> spec =
      moegen::parseRoutingSpecFile(options.specPath, error);
  if (!spec) {
    llvm::errs() << error << "\n";
    return kExitBadInput;
  }
  if (options.emit == "spec")
    return writeOutput(options.output, moegen::printRoutingSpec(*spec));
  if (options.emit != "mlir")
    return runCompileNvptx(*spec, options);

  mlir::DialectRegistry registry;
  moegen::registerMoEGenDialects(registry);
  mlir::MLIRContext context(registry);
  context.loadAllAvailableDialects();
  mlir::OwningOpRef<mlir::ModuleOp> module =
      moegen::buildRouterModule(*spec, context);

  // A valid spec must give valid IR; anything else is a compiler bug.
  std::string diagnostics;
  {
    mlir::ScopedDiagnosticHandler capture(
        &context, [&](mlir::Diagnostic &diag) {
          llvm::raw_string_ostream os(diagnostics);
          os << diag.getLocation() << ": " << diag << "\n";
          return mlir::success();
        });
    if (mlir::failed(mlir::verify(*module))) {
      llvm::errs() << options.specPath
                   << ": internal error: the IR built from this spec does "
                      "not verify:\n"
                   << diagnostics << "IR:\n";
      module->getOperation()->print(
          llvm::errs(), mlir::OpPrintingFlags().printGenericOpForm());
      llvm::errs() << "\nrepro: moegen compile " << options.specPath
                   << " --emit=mlir\n";
      return kExitInternal;
    }
  }

  std::string text;
  llvm::raw_string_ostream os(text);
  module->print(os);
  os << "\n";
  return writeOutput(options.output, text);
}

//===----------------------------------------------------------------------===//
// moegen run
//===----------------------------------------------------------------------===//

namespace fs = std::filesystem;
namespace npy = moegen::npy;

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
  /// The command as typed, for the repro line of an internal error.
  std::string commandLine;
};

/// The tensors `run` reads, in the order the kernels check them
/// (docs/semantics.md §2), so that input errors come out in the same order.
constexpr std::array<std::string_view, 6> kInputNames = {
    "logits", "bias", "token_ids", "hash_table", "forced_ids", "capture"};

struct Input {
  std::string path;
  npy::Array array;
};

int reportUsage(const std::string &message) {
  llvm::errs() << "moegen: error: " << message << "\n";
  return kExitBadInput;
}

/// A path or argument inside a one-line message: escaped, but long paths
/// are kept whole since their end names the file.
std::string quotePath(std::string_view text) {
  return moegen::quoteForDiagnostic(text, 4096);
}

int reportFile(const std::string &path, const std::string &message) {
  llvm::errs() << quotePath(path) << ": error: " << message << "\n";
  return kExitBadInput;
}

/// A shape as Python prints it, so it reads like the file's own header:
/// "(3,)", "(3, 4)".
std::string shapeRepr(const std::vector<int64_t> &shape) {
  std::string text = "(";
  for (size_t i = 0; i < shape.size(); ++i)
    text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + (shape.size() == 1 ? ",)" : ")");
}

/// One dimension a tensor must have: its symbol in the docs, its size
/// (nullopt: any size of at least `minSize`) and what fixes that size.
struct ExpectedDim {
  std::string symbol;
  std::optional<int64_t> size;
  std::string reason;
  int64_t minSize = 0;
};

/// "NAME: shape (3, 5) must be [T, E] = [3, 4]: dimension 1 is 5, not E = 4
/// (num_experts)", or nullopt when the shape fits.
std::optional<std::string> checkShape(std::string_view name,
                                      const npy::Array &array,
                                      const std::vector<ExpectedDim> &dims) {
  std::string symbols, sizes;
  for (size_t i = 0; i < dims.size(); ++i) {
    symbols += (i ? ", " : "") + dims[i].symbol;
    sizes += (i ? ", " : "") +
             (dims[i].size ? std::to_string(*dims[i].size) : dims[i].symbol);
  }
  std::string prefix = std::string(name) + ": shape " + shapeRepr(array.shape) +
                       " must be [" + symbols + "] = [" + sizes + "]: ";
  if (array.shape.size() != dims.size())
    return prefix + "it has " + std::to_string(array.shape.size()) +
           (array.shape.size() == 1 ? " dimension" : " dimensions") + ", not " +
           std::to_string(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) {
    const ExpectedDim &dim = dims[i];
    int64_t actual = array.shape[i];
    std::string at = "dimension " + std::to_string(i) + " is " +
                     std::to_string(actual) + ", not " + dim.symbol;
    if (dim.size && actual != *dim.size)
      return prefix + at + " = " + std::to_string(*dim.size) + " (" +
             dim.reason + ")";
    if (!dim.size && actual < dim.minSize)
      return prefix + at + " >= " + std::to_string(dim.minSize) + " (" +
             dim.reason + ")";
  }
  return std::nullopt;
}

/// "NAME: dtype '<f8' must be '<f4'", or nullopt when the dtype is allowed.
std::optional<std::string> checkDType(std::string_view name,
                                      const npy::Array &array,
                                      std::vector<npy::DType> allowed,
                                      std::string_view why = "") {
  for (npy::DType dtype : allowed)
    if (array.dtype == dtype)
      return std::nullopt;
  std::string message = std::string(name) + ": dtype '" +
                        std::string(npy::descr(array.dtype)) + "' must be ";
  for (size_t i = 0; i < allowed.size(); ++i)
    message += (i ? " or '" : "'") + std::string(npy::descr(allowed[i])) + "'";
  return message + std::string(why);
}

/// An int64 id that does not fit the kernels' int32, e.g. forced_ids[3][1]
/// = 5000000000. The kernels get -1 in its place, which is outside both
/// [0, num_experts) and [0, vocab), so they still report the first bad id in
/// their usual order; when that is this one, its real value is put back.
struct WideId {
  std::string element; ///< "forced_ids[3][1]"
  int64_t value = 0;
};

/// The ids of an int32 or int64 tensor as int32; the first id outside int32
/// (in row-major order) goes to `firstWide`. `rowLength` is 0 for 1-D.
std::vector<int32_t> idsAsInt32(std::string_view name, const npy::Array &array,
                                int64_t rowLength,
                                std::optional<WideId> &firstWide) {
  int64_t count = array.numElements();
  std::vector<int32_t> ids(static_cast<size_t>(count));
  if (array.dtype == npy::DType::I32) {
    if (count > 0)
      std::memcpy(ids.data(), array.data.data(), ids.size() * sizeof(int32_t));
    return ids;
  }
  const int64_t *wide = array.as<int64_t>();
  for (int64_t i = 0; i < count; ++i) {
    int64_t value = wide[i];
    if (value >= std::numeric_limits<int32_t>::min() &&
        value <= std::numeric_limits<int32_t>::max()) {
      ids[i] = static_cast<int32_t>(value);
      continue;
    }
    ids[i] = -1;
    if (!firstWide) {
      std::string element = std::string(name);
      if (rowLength > 0)
        element += "[" + std::to_string(i / rowLength) + "][" +
                   std::to_string(i % rowLength) + "]";
      else
        element += "[" + std::to_string(i) + "]";
      firstWide = WideId{element, value};
    }
  }
  return ids;
}

/// Why input `name` plays no role in this call, or nullopt when it does.
/// Inputs that would be silently ignored are errors, as spec keys are.
std::optional<std::string>
whyUnused(std::string_view name, const moegen::RoutingSpec &spec, bool replay) {
  bool hash = spec.selection == moegen::Selection::Hash;
  if (name == "forced_ids")
    return spec.replay ? std::nullopt
                       : std::optional<std::string>(
                             "the spec has no replay entry point (set "
                             "replay: true to replay forced ids)");
  if (name == "bias" || name == "token_ids" || name == "hash_table") {
    if (replay)
      return "replay (forced_ids given) takes no selection inputs";
    if (name == "bias" && !spec.scoreBias)
      return std::string("the spec has score_bias: false");
    if (name != "bias" && !hash)
      return std::string("the spec has selection: topk");
    return std::nullopt;
  }
  if (name == "capture") {
    if (!spec.capture)
      return std::string("the spec has capture: false");
    if (replay)
      return std::string("replay (forced_ids given) does not capture");
  }
  return std::nullopt;
}

/// Splits `--in NAME=FILE` arguments into NAME -> FILE, rejecting malformed,
/// unknown and repeated names.
std::optional<std::map<std::string, std::string>>
parseInputArguments(const std::vector<std::string> &arguments) {
  std::map<std::string, std::string> paths;
  for (const std::string &argument : arguments) {
    size_t equals = argument.find('=');
    std::string quoted = quotePath(argument);
    if (equals == std::string::npos || equals + 1 == argument.size()) {
      reportUsage("--in " + quoted + ": expected NAME=FILE.npy");
      return std::nullopt;
    }
    std::string name = argument.substr(0, equals);
    std::string path = argument.substr(equals + 1);
    if (std::find(kInputNames.begin(), kInputNames.end(), name) ==
        kInputNames.end()) {
      std::string known;
      for (std::string_view input : kInputNames)
        known += (known.empty() ? "" : ", ") + std::string(input);
      reportUsage("--in " + quoted + ": unknown input '" +
                  moegen::quoteForDiagnostic(name) + "' (inputs: " + known +
                  ")");
      return std::nullopt;
    }
    auto [it, inserted] = paths.emplace(name, path);
    if (!inserted) {
      reportUsage("--in " + quoted + ": input '" + name +
                  "' given twice (first as --in " + name + "=" +
                  quotePath(it->second) + ")");
      return std::nullopt;
    }
  }
  return paths;
}

/// The shape, dtype and T checks of every input; the values are the
/// kernels' to check. Returns false after reporting the first error.
bool checkInputs(const moegen::RoutingSpec &spec,
                 const std::map<std::string, Input> &inputs,
                 const RunOptions &options, int64_t &numTokens) {
  using npy::DType;
  const int64_t e = spec.numExperts;
  const int64_t k = spec.topK;
  auto fail = [&](const std::string &name, const std::string &message) {
    reportFile(inputs.at(name).path, message);
    return false;
  };

  const npy::Array &logits = inputs.at("logits").array;
  DType logitsDType = DType::F32;
  std::string why = " (logits_dtype: f32)";
  if (spec.logitsDType == moegen::LogitsDType::F16) {
    logitsDType = DType::F16;
    why = " (logits_dtype: f16)";
  } else if (spec.logitsDType == moegen::LogitsDType::BF16) {
    logitsDType = DType::U16;
    why = " (logits_dtype: bf16, stored as raw bits since NumPy has no bf16)";
  }
  if (auto error = checkDType("logits", logits, {logitsDType}, why))
    return fail("logits", *error);
  if (auto error =
          checkShape("logits", logits,
                     {{"T", std::nullopt, "tokens"}, {"E", e, "num_experts"}}))
    return fail("logits", *error);
  numTokens = logits.shape[0];
  // Slot indices t*k+j and every dispatch tensor are int32.
  if (numTokens > std::numeric_limits<int32_t>::max() / k)
    return fail("logits",
                "logits: T = " + std::to_string(numTokens) +
                    " tokens: T * top_k = " + std::to_string(numTokens * k) +
                    " must fit in int32 (slot indices are int32)");

  const ExpectedDim tokens{"T", numTokens, "the token count of logits"};
  const ExpectedDim experts{"E", e, "num_experts"};
  const ExpectedDim topK{"k", k, "top_k"};
  const std::vector<DType> ids = {DType::I32, DType::I64};
  for (std::string_view input : kInputNames) {
    std::string name(input);
    if (!inputs.count(name))
      continue;
    const npy::Array &array = inputs.at(name).array;
    std::optional<std::string> error;
    if (name == "bias") {
      error = checkDType(name, array, {DType::F32});
      if (!error)
        error = checkShape(name, array, {experts});
    } else if (name == "token_ids") {
      error = checkDType(name, array, ids);
      if (!error)
        error = checkShape(name, array, {tokens});
    } else if (name == "hash_table") {
      error = checkDType(name, array, {DType::I32});
      if (!error)
        error =
            checkShape(name, array, {{"V", std::nullopt, "vocabulary"}, topK});
    } else if (name == "forced_ids") {
      error = checkDType(name, array, ids);
      if (!error)
        error = checkShape(name, array, {tokens, topK});
    } else if (name == "capture") {
      // The vLLM routed_experts layout: int16 while expert ids fit.
      DType captureDType = e <= 32767 ? DType::I16 : DType::I32;
      error = checkDType(name, array, {captureDType},
                         " (expert ids of num_experts = " + std::to_string(e) +
                             " experts)");
      if (!error)
        error = checkShape(
            name, array, {tokens, {"L", std::nullopt, "MoE layers", 1}, topK});
      if (!error && (options.layer < 0 || options.layer >= array.shape[1]))
        error = "capture: --layer " + std::to_string(options.layer) +
                " is outside the buffer's layers [0, " +
                std::to_string(array.shape[1]) + ")";
    }
    if (error)
      return fail(name, *error);
  }
  return true;
}

/// Creates `dir` and any missing parents, recording each one created so a
/// failed run can remove them again.
bool createDirectories(const fs::path &dir, std::vector<fs::path> &created,
                       std::string &error) {
  fs::path path = dir.lexically_normal();
  if (!path.has_filename())
    path = path.parent_path();
  std::vector<fs::path> missing;
  std::error_code ec;
  for (fs::path p = path; !p.empty() && !fs::exists(p, ec);
       p = p.parent_path()) {
    missing.push_back(p);
    if (p == p.parent_path())
      break;
  }
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    if (!fs::create_directory(*it, ec) && ec) {
      error = ec.message();
      return false;
    }
    created.push_back(*it);
  }
  return true;
}

template <typename T>
npy::Array makeArray(npy::DType dtype, std::vector<int64_t> shape,
                     const std::vector<T> &values) {
  npy::Array array;
  array.dtype = dtype;
  array.shape = std::move(shape);
  array.data.resize(values.size() * sizeof(T));
  if (!values.empty())
    std::memcpy(array.data.data(), values.data(), array.data.size());
  return array;
}

/// Writes every output, each atomically; on a failure removes what this run
/// wrote and the directories it created, so DIR holds all outputs or none.
int writeOutputs(
    const std::string &outDir,
    const std::vector<std::pair<std::string, npy::Array>> &outputs) {
  std::vector<fs::path> createdDirs;
  std::string error;
  auto fail = [&](const std::string &message) {
    std::error_code ignored;
    for (auto it = createdDirs.rbegin(); it != createdDirs.rend(); ++it)
      fs::remove_all(*it, ignored);
    llvm::errs() << message << "\n";
    return kExitBadInput;
  };
  if (!createDirectories(outDir, createdDirs, error))
    return fail(quotePath(outDir) +
                ": error: cannot create the output directory: " + error);

  // Every output is first written into a private staging directory; only
  // when all of them are complete do they replace what DIR held, so a
  // failure leaves DIR exactly as it was.
  std::error_code ec;
  for (const auto &[name, array] : outputs) {
    fs::path target = fs::path(outDir) / (name + ".npy");
    if (fs::is_directory(target, ec))
      return fail(quotePath(target.string()) +
                  ": error: cannot write the output: a directory is in "
                  "the way");
  }
  fs::path staging;
  for (unsigned attempt = 0; attempt < 64; ++attempt) {
    fs::path candidate = fs::path(outDir) /
                         (".moegen-run-" + std::to_string(::getpid()) + "-" +
                          std::to_string(attempt));
    if (fs::create_directory(candidate, ec)) {
      staging = candidate;
      break;
    }
  }
  if (staging.empty())
    return fail(quotePath(outDir) +
                ": error: cannot create a staging directory in it: " +
                ec.message());
  createdDirs.push_back(staging);
  for (const auto &[name, array] : outputs) {
    fs::path path = staging / (name + ".npy");
    if (!npy::writeNpy(path.string(), array, error))
      return fail(quotePath(outDir) + ": error: cannot write " + name +
                  ".npy: " +
                  error.substr(std::min(error.size(), path.string().size() + 2)));
  }
  for (const auto &[name, array] : outputs) {
    fs::rename(staging / (name + ".npy"), fs::path(outDir) / (name + ".npy"),
               ec);
    if (ec)
      return fail(quotePath(outDir) + ": error: cannot move " + name +
                  ".npy into place: " + ec.message());
  }
  fs::remove(staging, ec);
  return kExitOk;
}

/// Prefixes a kernel's error ("forced_ids[3][1] = 300: ...") with the file
/// of the tensor it names, giving a wide id its real value back.
std::string locateRunError(std::string error,
                           const std::map<std::string, Input> &inputs,
                           const std::optional<WideId> &wide) {
  if (wide) {
    std::string placeholder = wide->element + " = -1:";
    if (error.compare(0, placeholder.size(), placeholder) == 0)
      error = wide->element + " = " + std::to_string(wide->value) + ":" +
              error.substr(placeholder.size());
  }
  std::string tensor = error.substr(0, error.find_first_of("[: "));
  auto it = inputs.find(tensor);
  if (it != inputs.end())
    return quotePath(it->second.path) + ": error: " + error;
  return "moegen: error: " + error;
}

#ifdef MOEGEN_HAVE_CUDA_RUNTIME
/// Runs `call` with the NVPTX kernels through the runtime: takes the spec's
/// kernels for device 0 from the JIT cache (compiling them on first use),
/// copies the inputs to the device, and the outputs (and capture buffer)
/// back into the call's host buffers. Returns the kernels' one-line error,
/// or ""; throws moegen::rt::Error when there is no driver or device, and
/// Error(Kind::Compile) when the backend cannot compile the spec.
std::string runOnCuda(const moegen::RoutingSpec &spec,
                      const moegen::cpu::RouterCall &call,
                      const std::string &dumpDir) {
  namespace rt = moegen::rt;
  const rt::CudaDriver &driver = rt::CudaDriver::get();
  // Compiled for GPU 0 on first use, then taken from the JIT cache.
  moegen::jit::JitOptions jit;
  jit.compile.dumpDir = dumpDir;
  std::unique_ptr<rt::CudaRouter> router =
      moegen::jit::loadRouter(spec, jit, rt::LoadOptions{});

  const int64_t t = call.numTokens, e = spec.numExperts, k = spec.topK;
  const size_t logitBytes = spec.logitsDType == moegen::LogitsDType::F32 ? 4 : 2;
  const size_t captureBytes = e <= 32767 ? 2 : 4;
  std::vector<rt::DeviceBuffer> buffers;
  auto upload = [&](const void *host, size_t bytes) -> CUdeviceptr {
    buffers.push_back(router->allocate(std::max<size_t>(bytes, 8)));
    if (host && bytes)
      buffers.back().upload(host, bytes, nullptr);
    return buffers.back().get();
  };
  rt::RouteInputs inputs;
  inputs.numTokens = t;
  inputs.logits = upload(call.logits, t * e * logitBytes);
  if (call.bias)
    inputs.bias = upload(call.bias, e * 4);
  if (call.tokenIds) {
    inputs.tokenIds = upload(call.tokenIds, t * 4);
    inputs.hashTable = upload(call.hashTable, call.hashVocab * k * 4);
    inputs.hashVocab = call.hashVocab;
  }
  if (call.forcedIds)
    inputs.forcedIds = upload(call.forcedIds, t * k * 4);
  size_t captureSize = t * call.captureLayers * k * captureBytes;
  if (call.captureBuffer) {
    inputs.capture = upload(call.captureBuffer, captureSize);
    inputs.captureLayers = call.captureLayers;
    inputs.captureLayer = call.captureLayer;
  }
  rt::RouteOutputs outputs;
  outputs.topkIds = upload(nullptr, t * k * 4);
  outputs.topkWeights = upload(nullptr, t * k * 4);
  if (call.expertCounts) {
    outputs.expertCounts = upload(nullptr, e * 4);
    outputs.expertOffsets = upload(nullptr, (e + 1) * 4);
    outputs.sortedSlots = upload(nullptr, t * k * 4);
    outputs.slotPositions = upload(nullptr, t * k * 4);
  }
  outputs.error = upload(nullptr, 6 * 8);
  if (call.forcedIds)
    router->replay(inputs, outputs, nullptr);
  else if (call.tokenIds)
    router->routeHash(inputs, outputs, nullptr);
  else
    router->route(inputs, outputs, nullptr);
  std::string message = router->readError(nullptr, outputs.error);
  // The bias is checked on the host, as the CPU router does, and reported
  // after the logits (docs/semantics.md §2).
  if (message.empty() || message.rfind("logits[", 0) != 0)
    for (int64_t x = 0; call.bias && x < e; ++x)
      if (!std::isfinite(call.bias[x]))
        return "bias[" + std::to_string(x) + "] = " +
               moegen::formatFloatForMessage(call.bias[x]) + ": must be finite";
  if (!message.empty())
    return message;
  // The router makes its context current only around its own calls.
  rt::ScopedContext scope(driver, router->context());
  auto download = [&](CUdeviceptr from, void *to, size_t bytes) {
    if (to && bytes)
      driver.check(driver.memcpyDtoHAsync(to, from, bytes, nullptr),
                   "cuMemcpyDtoHAsync");
  };
  download(outputs.topkIds, call.topkIds, t * k * 4);
  download(outputs.topkWeights, call.topkWeights, t * k * 4);
  if (call.expertCounts) {
    download(outputs.expertCounts, call.expertCounts, e * 4);
    download(outputs.expertOffsets, call.expertOffsets, (e + 1) * 4);
    download(outputs.sortedSlots, call.sortedSlots, t * k * 4);
    download(outputs.slotPositions, call.slotPositions, t * k * 4);
  }
  if (call.captureBuffer)
    download(inputs.capture, call.captureBuffer, captureSize);
  driver.check(driver.streamSynchronize(nullptr), "cuStreamSynchronize");
  return "";
}
#endif // MOEGEN_HAVE_CUDA_RUNTIME

struct CacheOptions {
  std::vector<std::string> specPaths;
  std::vector<std::string> archs;
  int64_t tokensPerBlock = 0;
  std::string commandLine;
};

/// `moegen cache dir|list|warm|clear`: the JIT cache that `run --backend
/// cuda` and engines using compiler/jit read (docs/cli.md).
int runCacheDir() {
  try {
    llvm::outs() << moegen::rt::cacheDirectory() << "\n";
  } catch (const std::exception &e) {
    return reportUsage(e.what());
  }
  return kExitOk;
}

int runCacheList() {
  try {
    moegen::rt::JitCache cache;
    for (const auto &entry : cache.entries()) {
      llvm::outs() << entry.key << "  ";
      if (!entry.problem.empty()) {
        llvm::outs() << "invalid: " << entry.problem << "\n";
        continue;
      }
      moegen::rt::Manifest manifest = moegen::rt::loadManifest(entry.directory);
      llvm::outs() << manifest.specName << " " << manifest.archText;
      const char *separator = " ";
      for (const moegen::rt::Kernel &kernel : manifest.kernels) {
        llvm::outs() << separator << kernel.symbol;
        separator = ",";
      }
      llvm::outs() << "\n";
    }
  } catch (const std::exception &e) {
    return reportUsage(e.what());
  }
  return kExitOk;
}

int runCacheClear() {
  try {
    moegen::rt::JitCache cache;
    size_t removed = 0;
    for (const auto &entry : cache.entries())
      removed += cache.remove(entry.key);
    llvm::outs() << "removed " << removed << (removed == 1 ? " entry" : " entries")
                 << " from " << cache.directory() << "\n";
  } catch (const std::exception &e) {
    return reportUsage(e.what());
  }
  return kExitOk;
}

/// Compiles every spec for every arch into the cache, as loadRouter would on
/// a device of that arch: a build host can fill a cache shared with GPU
/// machines running the same moegen build and CUDA toolkit. Every spec is
/// parsed before anything is compiled.
int runCacheWarm(const CacheOptions &options) {
  std::vector<moegen::RoutingSpec> specs;
  for (const std::string &path : options.specPaths) {
    std::string error;
    std::optional<moegen::RoutingSpec> spec =
        moegen::parseRoutingSpecFile(path, error);
    if (!spec) {
      llvm::errs() << error << "\n";
      return kExitBadInput;
    }
    specs.push_back(std::move(*spec));
  }
  std::vector<std::string> archs = options.archs;
  if (archs.empty())
    archs.push_back("sm_90");
  for (size_t i = 0; i < specs.size(); ++i) {
    for (const std::string &arch : archs) {
      moegen::jit::JitOptions jit;
      jit.compile.arch = arch;
      jit.compile.tokensPerBlock = options.tokensPerBlock;
      try {
        moegen::rt::CacheEntry entry = moegen::jit::compileCached(specs[i], jit);
        llvm::outs() << specs[i].name << " " << arch << " "
                     << (entry.compiled ? "compiled" : "cached") << " "
                     << entry.directory << "\n";
      } catch (const moegen::rt::Error &e) {
        if (e.kind() != moegen::rt::Error::Kind::Compile)
          return reportUsage(e.what());
        llvm::errs() << quotePath(options.specPaths[i])
                     << ": internal error: " << e.what()
                     << "\nrepro: " << options.commandLine << "\n";
        return kExitInternal;
      } catch (const std::exception &e) {
        return reportUsage(e.what());
      }
    }
  }
  return kExitOk;
}

int runRun(const RunOptions &options) {
  if (options.backend != "cpu" && options.backend != "cuda")
    return reportUsage("--backend '" +
                       moegen::quoteForDiagnostic(options.backend) +
                       "': unknown backend (available: cpu, cuda)");
  const bool cuda = options.backend == "cuda";

  std::string error;
  std::optional<moegen::RoutingSpec> spec =
      moegen::parseRoutingSpecFile(options.specPath, error);
  if (!spec) {
    llvm::errs() << error << "\n";
    return kExitBadInput;
  }

  std::optional<std::map<std::string, std::string>> paths =
      parseInputArguments(options.inputs);
  if (!paths)
    return kExitBadInput;
  // forced_ids selects the replay entry point instead of route/route_hash.
  bool replay = paths->count("forced_ids") != 0;
  for (const auto &[name, path] : *paths)
    if (auto why = whyUnused(name, *spec, replay))
      return reportUsage("--in " + name + "=" + quotePath(path) + ": input '" +
                         name + "' is not used by this run: " + *why);
  bool hash = spec->selection == moegen::Selection::Hash;
  std::vector<std::pair<std::string, std::string>> required = {
      {"logits", "[T, E] logits, always required"}};
  if (!replay && spec->scoreBias)
    required.push_back({"bias", "[E] f32, required by score_bias: true"});
  if (!replay && hash) {
    required.push_back(
        {"token_ids", "[T] i32/i64, required by selection: hash"});
    required.push_back(
        {"hash_table", "[V, k] i32, required by selection: hash"});
  }
  for (const auto &[name, what] : required)
    if (!paths->count(name))
      return reportUsage("missing input '" + name + "' (" + what +
                         "); give --in " + name + "=FILE.npy");
  bool captures = spec->capture && !replay;
  if (options.layerGiven && !captures)
    return reportUsage("--layer " + std::to_string(options.layer) +
                       ": not used by this run: " +
                       (spec->capture
                            ? "replay (forced_ids given) does not capture"
                            : "the spec has capture: false"));
  if (captures && !paths->count("capture") && options.layer != 0)
    return reportUsage("--layer " + std::to_string(options.layer) +
                       ": without --in capture=FILE.npy the capture buffer "
                       "is [T, 1, k], so the layer must be 0");

  std::error_code ec;
  if (options.outDir.empty())
    return reportUsage("--out: the output directory must not be empty");
  if (fs::exists(options.outDir, ec) && !fs::is_directory(options.outDir, ec))
    return reportFile(options.outDir, "--out: exists and is not a directory");

  // Read every input before checking any, in the kernels' order.
  std::map<std::string, Input> inputs;
  for (std::string_view name : kInputNames) {
    auto it = paths->find(std::string(name));
    if (it == paths->end())
      continue;
    std::optional<npy::Array> array = npy::readNpy(it->second, error);
    if (!array) {
      // readNpy's one line is "PATH: MESSAGE"; name the tensor too.
      std::string message =
          error.substr(std::min(error.size(), it->second.size() + 2));
      return reportFile(it->second, std::string(name) + ": " + message);
    }
    inputs.emplace(name, Input{it->second, std::move(*array)});
  }
  int64_t numTokens = 0;
  if (!checkInputs(*spec, inputs, options, numTokens))
    return kExitBadInput;
  const int64_t e = spec->numExperts;
  const int64_t k = spec->topK;
  const int64_t slots = numTokens * k;

  std::optional<WideId> wide;
  std::vector<int32_t> tokenIds, forcedIds;
  if (inputs.count("token_ids"))
    tokenIds = idsAsInt32("token_ids", inputs.at("token_ids").array, 0, wide);
  if (inputs.count("forced_ids"))
    forcedIds =
        idsAsInt32("forced_ids", inputs.at("forced_ids").array, k, wide);

  moegen::cpu::CpuCompileOptions compileOptions;
  compileOptions.threads = options.threads;
  compileOptions.dumpDir = options.dumpDir;
  if (!options.dumpDir.empty()) {
    fs::create_directories(options.dumpDir, ec);
    if (ec)
      return reportFile(options.dumpDir, "--dump-ir: cannot create the "
                                         "directory: " +
                                             ec.message());
  }
  std::unique_ptr<moegen::cpu::CpuRouter> router;
  if (!cuda)
    router = moegen::cpu::CpuRouter::compile(*spec, compileOptions, error);
  // The spec parsed and validated, so a compile failure is moegen's bug.
  if (!cuda && !router) {
    llvm::errs() << options.specPath
                 << ": internal error: the CPU backend cannot compile this "
                    "spec: "
                 << error << "\nrepro: " << options.commandLine
                 << (options.dumpDir.empty() ? " --dump-ir DIR" : "") << "\n";
    return kExitInternal;
  }

  // Empty tensors (T = 0) still get a valid pointer: the backend treats a
  // null pointer as a missing tensor.
  alignas(8) std::array<std::byte, 8> empty{};
  auto pointer = [&](auto &vector) -> void * {
    return vector.empty() ? static_cast<void *>(empty.data())
                          : static_cast<void *>(vector.data());
  };

  moegen::cpu::RouterCall call;
  call.numTokens = numTokens;
  call.logits = pointer(inputs.at("logits").array.data);
  if (inputs.count("bias"))
    call.bias =
        static_cast<const float *>(pointer(inputs.at("bias").array.data));
  if (inputs.count("token_ids")) {
    npy::Array &table = inputs.at("hash_table").array;
    call.tokenIds = static_cast<const int32_t *>(pointer(tokenIds));
    call.hashTable = static_cast<const int32_t *>(pointer(table.data));
    call.hashVocab = table.shape[0];
  }
  if (inputs.count("forced_ids"))
    call.forcedIds = static_cast<const int32_t *>(pointer(forcedIds));

  npy::Array capture;
  if (captures) {
    if (inputs.count("capture")) {
      capture = std::move(inputs.at("capture").array);
    } else {
      capture.dtype = e <= 32767 ? npy::DType::I16 : npy::DType::I32;
      capture.shape = {numTokens, 1, k};
      capture.data.assign(slots * npy::itemSize(capture.dtype), std::byte{0});
    }
    call.captureBuffer = pointer(capture.data);
    call.captureLayers = capture.shape[1];
    call.captureLayer = options.layer;
  }

  std::vector<int32_t> topkIds(slots);
  std::vector<float> topkWeights(slots);
  call.topkIds = static_cast<int32_t *>(pointer(topkIds));
  call.topkWeights = static_cast<float *>(pointer(topkWeights));
  std::vector<int32_t> counts, offsets, sortedSlots, slotPositions;
  if (spec->dispatch) {
    counts.resize(e);
    offsets.resize(e + 1);
    sortedSlots.resize(slots);
    slotPositions.resize(slots);
    call.expertCounts = counts.data();
    call.expertOffsets = offsets.data();
    call.sortedSlots = static_cast<int32_t *>(pointer(sortedSlots));
    call.slotPositions = static_cast<int32_t *>(pointer(slotPositions));
  }

  if (cuda) {
#ifdef MOEGEN_HAVE_CUDA_RUNTIME
    try {
      error = runOnCuda(*spec, call, options.dumpDir);
    } catch (const moegen::rt::Error &e) {
      if (e.kind() != moegen::rt::Error::Kind::Compile)
        return reportUsage(std::string("--backend cuda: ") + e.what());
      llvm::errs() << options.specPath
                   << ": internal error: the NVPTX backend cannot compile "
                      "this spec: "
                   << e.what() << "\nrepro: " << options.commandLine
                   << (options.dumpDir.empty() ? " --dump-ir DIR" : "")
                   << "\n";
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
  } else {
    error = router->run(call);
  }
  if (!error.empty()) {
    llvm::errs() << locateRunError(error, inputs, wide) << "\n";
    return kExitBadInput;
  }
  // -1 stands in for every wide id and is always invalid, so the kernels
  // cannot have accepted it; refuse rather than write results built on it.
  if (wide)
    return reportFile(
        paths->at(wide->element.substr(0, wide->element.find('['))),
        wide->element + " = " + std::to_string(wide->value) +
            ": does not fit in int32");

  using npy::DType;
  std::vector<std::pair<std::string, npy::Array>> outputs;
  outputs.emplace_back("topk_ids",
                       makeArray(DType::I32, {numTokens, k}, topkIds));
  outputs.emplace_back("topk_weights",
                       makeArray(DType::F32, {numTokens, k}, topkWeights));
  if (spec->dispatch) {
    outputs.emplace_back("expert_counts", makeArray(DType::I32, {e}, counts));
    outputs.emplace_back("expert_offsets",
                         makeArray(DType::I32, {e + 1}, offsets));
    outputs.emplace_back("sorted_slots",
                         makeArray(DType::I32, {slots}, sortedSlots));
    outputs.emplace_back("slot_positions",
                         makeArray(DType::I32, {slots}, slotPositions));
  }
  if (captures)
    outputs.emplace_back("capture", std::move(capture));
  return writeOutputs(options.outDir, outputs);
}

} // namespace

int main(int argc, char **argv) {
  CLI::App app{"moegen: a compiler for Mixture-of-Experts routing kernels.\n"
               "A routing spec (YAML) describes one gating layer; moegen "
               "turns it into moe dialect IR and, in later stages, kernels."};
  app.set_version_flag("--version", "moegen " MOEGEN_VERSION);
  app.require_subcommand(1, 1);
  app.footer("Examples:\n"
             "  moegen compile templates/deepseek-v3.yaml\n"
             "  moegen compile templates/qwen3-30b-a3b.yaml -o qwen3.mlir\n"
             "  moegen compile my-router.yaml --emit=spec\n"
             "  moegen compile templates/deepseek-v3.yaml --emit=cubin "
             "--arch sm_90 -o ds3/\n"
             "  moegen run templates/mixtral-8x7b.yaml --backend cpu \\\n"
             "      --in logits=logits.npy --out out/\n"
             "  moegen cache warm templates/*.yaml --arch sm_90 --arch sm_80\n\n"
             "Spec keys and their rules: docs/spec-language.md\n"
             "moegen run inputs and outputs: docs/cli.md\n"
             "Routing math: docs/semantics.md\n"
             "Exit codes: 0 ok, 2 bad input or usage, 1 internal error.");

  CompileOptions compile;
  CLI::App *compileCmd = app.add_subcommand(
      "compile", "Compile a routing spec and print or write the result");
  compileCmd
      ->add_option("SPEC", compile.specPath,
                   "routing spec, e.g. templates/deepseek-v3.yaml")
      ->required();
  compileCmd
      ->add_option("--emit", compile.emit,
                   "what to produce: mlir (moe dialect IR), spec (the spec "
                   "with every default made explicit), gpu (gpu kernels), "
                   "llvm (NVVM/LLVM dialect), ptx or cubin (a kernel "
                   "directory with manifest.json; docs/kernel-abi.md)")
      ->check(CLI::IsMember({"mlir", "spec", "gpu", "llvm", "ptx", "cubin"}))
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
                   "warps (one token each) per block; 0 lets the heuristic "
                   "choose")
      ->check(CLI::Range(0, 32))
      ->capture_default_str();
  compileCmd->add_option("--dump-dir", compile.dumpDir,
                         "write the IR after every stage, the PTX and the "
                         "ptxas log to this directory (or set "
                         "MOEGEN_DUMP_DIR)");
  compileCmd->add_option("--override-dir", compile.overrideDir,
                         "use DIR/kernels.ptx instead of the generated PTX "
                         "when it exists (or set MOEGEN_OVERRIDE_DIR)");

  RunOptions run;
  CLI::App *runCmd = app.add_subcommand(
      "run", "Route tokens with a spec: read .npy inputs, write .npy outputs");
  runCmd
      ->add_option("SPEC", run.specPath,
                   "routing spec, e.g. templates/deepseek-v3.yaml")
      ->required();
  runCmd
      ->add_option("--backend", run.backend,
                   "where to run: cpu (JIT-compiled host kernels) or cuda "
                   "(NVPTX kernels on GPU 0 through the runtime)")
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
  CLI::Option *layerOption = runCmd->add_option(
      "--layer", run.layer,
      "layer of the capture buffer to write (specs with capture: true)");
  runCmd
      ->add_option("--threads", run.threads,
                   "worker threads; 0 is one per hardware thread")
      ->check(CLI::Range(0u, 4096u))
      ->capture_default_str();
  runCmd->add_option("--dump-ir", run.dumpDir,
                     "write the IR after every compiler stage to this "
                     "directory");

  CacheOptions cacheOptions;
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
  cacheWarmCmd
      ->add_option("SPEC", cacheOptions.specPaths, "routing specs")
      ->required();
  cacheWarmCmd
      ->add_option("--arch", cacheOptions.archs,
                   "GPU architecture; repeat for several (default sm_90)")
      ->check(CLI::IsMember({"sm_80", "sm_89", "sm_90", "sm_90a", "sm_100"}));
  cacheWarmCmd
      ->add_option("--tokens-per-block", cacheOptions.tokensPerBlock,
                   "warps per block; 0 lets the heuristic choose (engines "
                   "use 0)")
      ->check(CLI::Range(int64_t{0}, int64_t{32}))
      ->capture_default_str();

  // CLI11 would call an unknown command "a missing subcommand"; name it.
  if (argc > 1 && argv[1][0] != '-') {
    std::string commands;
    bool known = false;
    for (const CLI::App *sub : app.get_subcommands({})) {
      known |= sub->get_name() == argv[1];
      commands += (commands.empty() ? "" : ", ") + sub->get_name();
    }
    if (!known) {
      llvm::errs() << "moegen: error: unknown command '" << argv[1]
                   << "' (commands: " << commands << "; run 'moegen --help')\n";
      return kExitBadInput;
    }
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
    llvm::errs() << "moegen: error: " << e.what()
                 << " (run 'moegen --help')\n";
    return kExitBadInput;
  }

  if (compileCmd->parsed()) {
    compile.commandLine = "moegen";
    for (int i = 1; i < argc; ++i)
      compile.commandLine += std::string(" ") + argv[i];
    return runCompile(compile);
  }
  if (cacheCmd->parsed()) {
    if (cacheDirCmd->parsed())
      return runCacheDir();
    if (cacheListCmd->parsed())
      return runCacheList();
    if (cacheClearCmd->parsed())
      return runCacheClear();
    cacheOptions.commandLine = "moegen";
    for (int i = 1; i < argc; ++i)
      cacheOptions.commandLine += std::string(" ") + argv[i];
    return runCacheWarm(cacheOptions);
  }
  if (runCmd->parsed()) {
    run.layerGiven = layerOption->count() != 0;
    run.commandLine = "moegen";
    for (int i = 1; i < argc; ++i)
      run.commandLine += std::string(" ") + argv[i];
    return runRun(run);
  }
  return kExitBadInput;
}
