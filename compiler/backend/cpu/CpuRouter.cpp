//===- CpuRouter.cpp - Run a routing spec on the host ---------------------===//

#include "compiler/backend/cpu/CpuRouter.h"
#include "compiler/backend/cpu/CpuHostRouter.h"

#include "compiler/Registration.h"
#include "compiler/backend/cpu/CpuPipeline.h"
#include "compiler/backend/cpu/HostJit.h"
#include "compiler/spec/SpecToMoE.h"
#include "dialects/moe/IR/MoEAttrs.h"

#include "abi/KernelAbi.h"
#include "abi/KernelError.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/ExecutionEngine/ExecutionEngine.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/ThreadPool.h"
#include "llvm/Support/raw_ostream.h"

#include <array>
#include <atomic>
#include <map>
#include <algorithm>
#include <cmath>
#include <limits>

#include <unistd.h>

namespace moegen::cpu {

namespace {

/// A strided memref descriptor as MLIR's C interface passes it (by
/// pointer), for any element type and rank up to 3: {allocated, aligned,
/// offset, sizes[rank], strides[rank]}, every field 8 bytes.
struct Descriptor {
  static constexpr int kMaxRank = 3;
  std::array<int64_t, 3 + 2 * kMaxRank> words{};

  Descriptor() = default;
  /// A dense row-major view of `data` with `shape`.
  Descriptor(const void *data, const std::vector<int64_t> &shape) {
    const auto rank = shape.size();
    const auto address =
        static_cast<int64_t>(reinterpret_cast<uintptr_t>(data));
    words[0] = words[1] = address;
    int64_t stride = 1;
    for (size_t d = rank; d-- > 0;) {
      words[3 + d] = shape[d];
      words[3 + rank + d] = stride;
      stride *= shape[d];
    }
  }
};

/// One argument of a host kernel as convert-moe-to-loops stamped it.
struct KernelArg {
  std::string name;
  moegen::abi::ArgRole role = moegen::abi::ArgRole::Tensor;
  /// Extents, or a symbol (T, V, L, T*k) for dynamic dimensions.
  std::vector<moegen::abi::Dim> shape;
};

/// A compiled kernel and its arguments in call order.
struct HostKernel {
  moegen::abi::EntryKind entry = moegen::abi::EntryKind::Route;
  void (*fn)(void **) = nullptr;
  std::vector<KernelArg> args;
  /// Tokens per thread-pool task, from the kernel's moe.kernel_config.
  int64_t tokensPerTask = 1;

  bool takes(std::string_view name) const {
    return std::any_of(args.begin(), args.end(),
                       [&](const KernelArg &arg) { return arg.name == name; });
  }
};

/// The caller's buffers for one call, by ABI name, and the run-time sizes
/// the shapes' symbols stand for.
struct Bindings {
  std::map<std::string, const void *, std::less<>> tensors;
  int64_t tokens = 0, hashRows = 0, layers = 0, topK = 0, hidden = 0;
  int64_t layer = 0;

  int64_t resolve(const moegen::abi::Dim &dim) const {
    using Symbol = moegen::abi::Dim::Symbol;
    switch (dim.symbol) {
    case Symbol::None:
      return dim.extent;
    case Symbol::T:
      return tokens;
    case Symbol::V:
      return hashRows;
    case Symbol::L:
      return layers;
    case Symbol::TK:
      return tokens * topK;
    case Symbol::H:
      return hidden;
    }
    return 0;
  }
};

using ErrorRecord = std::array<int64_t, kKernelErrorWords>;

} // namespace

struct CpuRouter::Impl {
  RoutingSpec spec;
  int64_t vectorWidth = 1;
  int64_t tokensPerTask = 1;
  mlir::MLIRContext context;
  std::unique_ptr<mlir::ExecutionEngine> engine;
  HostKernel route; // route or route_hash
  HostKernel replay;
  HostKernel dispatch;
  HostKernel permute;
  HostKernel combine;
  HostKernel updateBias;
  std::unique_ptr<llvm::StdThreadPool> pool;

  std::string compile(const CpuCompileOptions &options);
  void readChosenConfig(mlir::ModuleOp module);
  std::string readSignatures(mlir::ModuleOp module);
  std::string runKernel(const HostKernel &kernel, const Bindings &bindings,
                        const std::string &biasError,
                        int64_t tokensPerTaskOverride = 0);
  /// Tokens per task for permute and combine, whose rows are H elements
  /// long, H known only now: about kRowBytesPerTask of rows per task.
  int64_t rowMovementTokensPerTask(int64_t hiddenSize) const;
  std::string run(const RouterCall &call);
  HostKernel &kernelOf(moegen::abi::EntryKind kind);
};

HostKernel &CpuRouter::Impl::kernelOf(moegen::abi::EntryKind kind) {
  using moegen::abi::EntryKind;
  switch (kind) {
  case EntryKind::Replay:
    return replay;
  case EntryKind::Dispatch:
    return dispatch;
  case EntryKind::Permute:
    return permute;
  case EntryKind::Combine:
    return combine;
  case EntryKind::UpdateBias:
    return updateBias;
  case EntryKind::Route:
  case EntryKind::RouteHash:
    break;
  }
  return route;
}

std::string CpuRouter::Impl::compile(const CpuCompileOptions &options) {
  mlir::DialectRegistry registry;
  registerMoEGenDialects(registry);
  mlir::registerBuiltinDialectTranslation(registry);
  mlir::registerLLVMDialectTranslation(registry);
  context.appendDialectRegistry(registry);
  context.loadAllAvailableDialects();

  std::string diagnostics;
  mlir::ScopedDiagnosticHandler handler(&context, [&](mlir::Diagnostic &diag) {
    if (diagnostics.empty())
      diagnostics = diag.str();
    return mlir::success();
  });

  mlir::OwningOpRef<mlir::ModuleOp> module = buildRouterModule(spec, context);
  auto dump = [&](llvm::StringRef file) -> std::string {
    if (options.dumpDir.empty())
      return {};
    llvm::SmallString<256> path(options.dumpDir);
    llvm::sys::path::append(path, file);
    std::error_code ec;
    llvm::raw_fd_ostream os(path, ec);
    if (ec)
      return "cannot write " + std::string(path) + ": " + ec.message();
    module->print(os);
    return {};
  };
  if (!options.dumpDir.empty()) {
    if (std::error_code ec = llvm::sys::fs::create_directories(options.dumpDir))
      return "--dump-ir " + options.dumpDir + ": " + ec.message();
  }
  if (std::string error = dump("01-moe.mlir"); !error.empty())
    return error;

  struct Stage {
    const char *file;
    std::function<void(mlir::OpPassManager &)> add;
  };
  CpuPipelineOptions pipeline{options.vectorWidth, options.tokensPerTask,
                              options.topk};
  const Stage stages[] = {
      {"02-config.mlir",
       [&](mlir::OpPassManager &pm) { addCpuConfigStage(pm, pipeline); }},
      {"03-loops.mlir", [](mlir::OpPassManager &pm) { addCpuLoopsStage(pm); }},
      {"04-llvm.mlir", [](mlir::OpPassManager &pm) { addCpuLLVMStage(pm); }},
  };
  static std::atomic<unsigned> reproducers{0};
  for (const Stage &stage : stages) {
    mlir::PassManager pm(&context);
    stage.add(pm);
    // On a failure MLIR writes the stage's input and pipeline there, for
    // `moegen-opt --run-reproducer FILE`; nothing is written otherwise.
    llvm::SmallString<256> reproducer(options.dumpDir);
    if (reproducer.empty())
      llvm::sys::path::system_temp_directory(/*ErasedOnReboot=*/true,
                                             reproducer);
    llvm::sys::path::append(
        reproducer, "moegen-cpu-" + std::string(stage.file) + "-" +
                        std::to_string(::getpid()) + "-" +
                        std::to_string(reproducers++) + ".reproducer.mlir");
    pm.enableCrashReproducerGeneration(reproducer);
    if (mlir::failed(pm.run(*module)))
      return "internal compiler error in the CPU pipeline before " +
             std::string(stage.file) + ": " + diagnostics +
             " (repro: moegen-opt --run-reproducer " + std::string(reproducer) +
             ")";
    if (std::string error = dump(stage.file); !error.empty())
      return error;
    if (&stage == &stages[0])
      readChosenConfig(*module);
    if (&stage == &stages[1])
      if (std::string error = readSignatures(*module); !error.empty())
        return error;
  }

  auto created = createHostEngine(*module);
  if (!created)
    return "internal compiler error: JIT compilation failed: " +
           llvm::toString(created.takeError());
  engine = std::move(*created);

  for (HostKernel *kernel :
       {&route, &replay, &dispatch, &permute, &combine, &updateBias}) {
    if (kernel->args.empty())
      continue;
    std::string name(moegen::abi::toString(kernel->entry));
    auto found = engine->lookupPacked("_mlir_ciface_" + name);
    if (!found)
      return "internal compiler error: no kernel '" + name +
             "': " + llvm::toString(found.takeError());
    kernel->fn = *found;
  }
  if (!route.fn || (spec.replay && !replay.fn) ||
      (spec.dispatch && !dispatch.fn) ||
      (spec.permute && (!permute.fn || !combine.fn)) ||
      (spec.updateBias && !updateBias.fn))
    return "internal compiler error: the CPU pipeline lost an entry point";

  unsigned threads = options.threads;
  pool = std::make_unique<llvm::StdThreadPool>(
      threads ? llvm::heavyweight_hardware_concurrency(threads)
              : llvm::heavyweight_hardware_concurrency());
  return {};
}

/// The configuration the heuristics chose for each kernel, as they will be
/// built; vectorWidth() and tokensPerTask() report the routing kernels'.
void CpuRouter::Impl::readChosenConfig(mlir::ModuleOp module) {
  for (auto func : module.getOps<mlir::func::FuncOp>()) {
    mlir::moe::KernelConfigAttr config = mlir::moe::getKernelConfig(func);
    auto entryName =
        func->getAttrOfType<mlir::StringAttr>(mlir::moe::kEntryAttrName);
    std::optional<moegen::abi::EntryKind> kind =
        entryName ? moegen::abi::parseEntryKind(entryName.getValue().str())
                  : std::nullopt;
    if (!config || !kind)
      continue;
    const int64_t perTask = std::max<int64_t>(1, config.getTokensPerTask());
    kernelOf(*kind).tokensPerTask = perTask;
    if (*kind == moegen::abi::EntryKind::Dispatch ||
        *kind == moegen::abi::EntryKind::Permute ||
        *kind == moegen::abi::EntryKind::Combine ||
        *kind == moegen::abi::EntryKind::UpdateBias)
      continue;
    vectorWidth = config.getVectorWidth();
    tokensPerTask = perTask;
  }
}

/// Each kernel's arguments as convert-moe-to-loops stamped them: the
/// bindings by name that run() fills.
std::string CpuRouter::Impl::readSignatures(mlir::ModuleOp module) {
  using namespace moegen::abi;
  for (auto func : module.getOps<mlir::func::FuncOp>()) {
    auto entryName =
        func->getAttrOfType<mlir::StringAttr>(mlir::moe::kEntryAttrName);
    std::optional<EntryKind> kind =
        entryName ? parseEntryKind(entryName.getValue().str()) : std::nullopt;
    if (!kind)
      continue;
    HostKernel &kernel = kernelOf(*kind);
    kernel.entry = *kind;
    for (unsigned i = 0; i < func.getNumArguments(); ++i) {
      auto stamp = func.getArgAttrOfType<mlir::moe::KernelArgAttr>(
          i, mlir::moe::kKernelArgAttrName);
      if (!stamp)
        return "internal compiler error: argument #" + std::to_string(i) +
               " of kernel '" + func.getName().str() + "' has no ABI stamp";
      KernelArg arg{stamp.getName().str(), static_cast<ArgRole>(stamp.getRole()),
                    {}};
      for (mlir::Attribute dim : stamp.getShape())
        arg.shape.push_back(mlir::moe::toAbiDim(dim));
      // The host hands over int32 ids and the spec's float types; an IR
      // that asks for anything else cannot be bound.
      const ArgSpec *want = findArg(*kind, arg.name);
      std::optional<DType> dtype = mlir::moe::toAbiDType(stamp.getDtype());
      if (!want || !dtype ||
          (want->dtypeRule == DTypeRule::Fixed && *dtype != want->dtype))
        return "internal compiler error: kernel '" + func.getName().str() +
               "' takes '" + arg.name + "' as " +
               (dtype ? std::string(toString(*dtype)) : "an unknown type") +
               ", which the host cannot bind";
      // Scratch belongs to the GPU's parallel dispatch; the host's is serial.
      if (arg.shape.size() > size_t(Descriptor::kMaxRank) ||
          (arg.role == ArgRole::Scalar && arg.name != "layer") ||
          arg.role == ArgRole::Scratch)
        return "internal compiler error: kernel '" + func.getName().str() +
               "' takes '" + arg.name + "' in a form the host cannot bind";
      kernel.args.push_back(std::move(arg));
    }
  }
  return {};
}

/// Enough rows per task to pay for the hand-off to the pool, few enough
/// that both cores get work at a few dozen tokens of thousands of elements.
constexpr int64_t kRowBytesPerTask = 256 * 1024;

int64_t CpuRouter::Impl::rowMovementTokensPerTask(int64_t hiddenSize) const {
  const int64_t bytes = spec.hiddenDType == LogitsDType::F32 ? 4 : 2;
  // Elements of one hidden column over a token's k rows that fit a task;
  // divided, not multiplied, since H may be anything when T = 0.
  const int64_t columnsPerTask = kRowBytesPerTask / (spec.topK * bytes);
  if (hiddenSize >= columnsPerTask)
    return 1;
  return std::clamp<int64_t>(
      columnsPerTask / std::max<int64_t>(1, hiddenSize), 1, 4096);
}

/// Calls `kernel` with the caller's buffers bound to its arguments by name.
/// A row kernel runs over [0, tokens) in tasks of tokensPerTask tokens, each
/// with its own token range and error record; dispatch runs once.
/// `biasError` is the host's verdict on the bias, reported in its place in
/// the order of semantics.md §2 (after logits, before everything else).
std::string CpuRouter::Impl::runKernel(const HostKernel &kernel,
                                       const Bindings &bindings,
                                       const std::string &biasError,
                                       int64_t tokensPerTaskOverride) {
  using moegen::abi::ArgRole;
  // Kernels without a token range span all tokens or experts (dispatch,
  // update_bias, an expert-choice route): one task.
  const bool rowKernel =
      std::any_of(kernel.args.begin(), kernel.args.end(),
                  [](const KernelArg &arg) {
                    return arg.role == ArgRole::TokenBegin;
                  });
  const int64_t numTokens = bindings.tokens;
  const int64_t tokensPerTask =
      tokensPerTaskOverride > 0 ? tokensPerTaskOverride : kernel.tokensPerTask;
  const int64_t numTasks =
      rowKernel ? (numTokens + tokensPerTask - 1) / tokensPerTask : 1;
  std::vector<ErrorRecord> records(static_cast<size_t>(numTasks),
                                   ErrorRecord{});

  // What every task shares: descriptors of the tensors, and the layer.
  std::vector<Descriptor> descriptors(kernel.args.size());
  std::vector<void *> shared(kernel.args.size(), nullptr);
  for (size_t i = 0; i < kernel.args.size(); ++i) {
    const KernelArg &arg = kernel.args[i];
    if (arg.role != ArgRole::Tensor)
      continue;
    auto found = bindings.tensors.find(arg.name);
    // Every tensor a kernel takes was bound by run(); one that is not is a
    // kernel this router does not know how to call.
    if (found == bindings.tensors.end())
      return "internal compiler error: no buffer for '" + arg.name +
             "' of kernel '" + std::string(moegen::abi::toString(kernel.entry)) +
             "'";
    std::vector<int64_t> shape;
    for (const moegen::abi::Dim &dim : arg.shape)
      shape.push_back(bindings.resolve(dim));
    descriptors[i] = Descriptor(found->second, shape);
    shared[i] = descriptors[i].words.data();
  }

  auto runTask = [&](int64_t task) {
    ErrorRecord &record = records[task];
    Descriptor recordDesc(record.data(), {kKernelErrorWords});
    void *recordPtr = recordDesc.words.data();
    int64_t first = task * tokensPerTask;
    int64_t last = std::min(numTokens, first + tokensPerTask);
    int64_t layer = bindings.layer;
    std::vector<void *> pointers = shared;
    std::vector<void *> args(kernel.args.size());
    for (size_t i = 0; i < kernel.args.size(); ++i) {
      switch (kernel.args[i].role) {
      case ArgRole::Tensor:
        args[i] = &pointers[i];
        break;
      case ArgRole::ErrorRecord:
        args[i] = &recordPtr;
        break;
      case ArgRole::Scalar:
        args[i] = &layer;
        break;
      case ArgRole::TokenBegin:
        args[i] = &first;
        break;
      case ArgRole::TokenEnd:
        args[i] = &last;
        break;
      case ArgRole::Scratch: // refused when the kernels were bound
        break;
      }
    }
    kernel.fn(args.data());
  };
  if (numTasks <= 1 || pool->getMaxConcurrency() <= 1) {
    for (int64_t task = 0; task < numTasks; ++task)
      runTask(task);
  } else {
    llvm::ThreadPoolTaskGroup group(*pool);
    for (int64_t task = 0; task < numTasks; ++task)
      group.async([&runTask, task] { runTask(task); });
    group.wait();
  }
  // Tasks cover increasing token ranges: among the records of the first
  // category that failed, the first task's holds the lowest token.
  const ErrorRecord *first = nullptr;
  for (const ErrorRecord &record : records)
    if (record[kErrorCode] != 0 &&
        (!first || kernelErrorCategory(record[kErrorCode]) <
                       kernelErrorCategory((*first)[kErrorCode])))
      first = &record;
  if (!first)
    return biasError;
  if (!biasError.empty() &&
      kBiasErrorCategory < kernelErrorCategory((*first)[kErrorCode]))
    return biasError;
  return formatKernelError(first->data(), spec.numExperts,
                           rowKernel ? "ids" : "topk_ids");
}

/// "" or why a call of `t` tokens cannot run: negative, or slot indices
/// (t * k) past int32.
static std::string checkTokenCount(int64_t t, int64_t k) {
  if (t < 0)
    return "num_tokens = " + std::to_string(t) + ": must not be negative";
  if (t > std::numeric_limits<int32_t>::max() / k)
    return "num_tokens = " + std::to_string(t) +
           ": num_tokens * top_k must fit in int32";
  return {};
}

std::string CpuRouter::Impl::run(const RouterCall &call) {
  const int64_t t = call.numTokens, e = spec.numExperts, k = spec.topK;
  if (std::string error = checkTokenCount(t, k); !error.empty())
    return error;
  if (t > 0 && !call.logits)
    return "logits: required when num_tokens > 0";
  if (t > 0 && (!call.topkIds || !call.topkWeights))
    return "topk_ids, topk_weights: output buffers required";
  const bool wantsDispatch = call.expertCounts || call.expertOffsets ||
                             call.sortedSlots || call.slotPositions;
  if (wantsDispatch) {
    if (!spec.dispatch)
      return "expert_counts: the spec has no dispatch entry point (set "
             "dispatch: true)";
    if (!call.expertCounts || !call.expertOffsets ||
        (t > 0 && (!call.sortedSlots || !call.slotPositions)))
      return "expert_counts, expert_offsets, sorted_slots, slot_positions: "
             "give all four dispatch outputs or none";
  }

  Bindings bindings;
  bindings.tokens = t;
  bindings.topK = k;
  bindings.layer = call.captureLayer;
  bindings.tensors["logits"] = call.logits;
  bindings.tensors["topk_ids"] = call.topkIds;
  bindings.tensors["topk_weights"] = call.topkWeights;
  if (spec.sharedGate) {
    if (t > 0 && !call.sharedGateLogits)
      return "shared_gate_logits: required by shared_expert_gate";
    if (t > 0 && !call.sharedGate)
      return "shared_gate: output buffer required by shared_expert_gate";
    bindings.tensors["shared_gate_logits"] = call.sharedGateLogits;
    bindings.tensors["shared_gate"] = call.sharedGate;
  } else if (call.sharedGateLogits || call.sharedGate) {
    return "shared_gate_logits: the spec has no shared expert gate (set "
           "shared_expert_gate: true)";
  }

  const HostKernel *kernel = &route;
  std::string biasError;
  if (call.forcedIds) {
    if (!spec.replay)
      return "forced_ids: the spec has no replay entry point (set replay: "
             "true)";
    kernel = &replay;
    bindings.tensors["forced_ids"] = call.forcedIds;
  } else if (route.takes("hash_table")) {
    if (t > 0 && !call.tokenIds)
      return "token_ids: required by selection: hash";
    if (!call.hashTable && call.hashVocab != 0)
      return "hash_table: required by selection: hash";
    if (call.hashVocab < 0)
      return "hash_table: vocabulary size " + std::to_string(call.hashVocab) +
             " must not be negative";
    bindings.tensors["token_ids"] = call.tokenIds;
    bindings.tensors["hash_table"] = call.hashTable;
    bindings.hashRows = call.hashVocab;
  } else if (route.takes("bias")) {
    if (!call.bias)
      return "bias: required by score_bias";
    // Reported after the kernels' logits checks (semantics.md §2 order); a
    // non-finite bias only makes keys NaN, which no access depends on.
    for (int64_t x = 0; x < e && biasError.empty(); ++x)
      if (!std::isfinite(call.bias[x]))
        biasError = "bias[" + std::to_string(x) + "] = " +
                    formatFloatForMessage(call.bias[x]) + ": must be finite";
    bindings.tensors["bias"] = call.bias;
  }
  // Capture belongs to route only (replay re-runs recorded ids).
  std::vector<uint8_t> scratchCapture;
  if (kernel->takes("capture")) {
    int64_t layers = call.captureLayers;
    const void *buffer = call.captureBuffer;
    if (!buffer) {
      // No buffer given: capture into a private one-layer buffer.
      layers = 1;
      bindings.layer = 0;
      scratchCapture.resize(
          static_cast<size_t>(t * k) *
          moegen::abi::byteSize(moegen::abi::captureDType(e)));
      buffer = scratchCapture.data();
    } else if (layers < 1) {
      return "capture: buffer of " + std::to_string(layers) +
             " layers; it needs at least one";
    }
    bindings.tensors["capture"] = buffer;
    bindings.layers = layers;
  }

  if (std::string error = runKernel(*kernel, bindings, biasError);
      !error.empty())
    return error;
  if (!wantsDispatch)
    return {};

  bindings.tensors["expert_counts"] = call.expertCounts;
  bindings.tensors["expert_offsets"] = call.expertOffsets;
  bindings.tensors["sorted_slots"] = call.sortedSlots;
  bindings.tensors["slot_positions"] = call.slotPositions;
  return runKernel(dispatch, bindings, "");
}

std::string CpuRouter::dispatch(const int32_t *topkIds, int64_t numTokens,
                                int32_t *expertCounts, int32_t *expertOffsets,
                                int32_t *sortedSlots, int32_t *slotPositions) {
  const RoutingSpec &spec = impl->spec;
  const int64_t k = spec.topK;
  if (!spec.dispatch)
    return "topk_ids: the spec has no dispatch entry point (set dispatch: "
           "true)";
  if (std::string error = checkTokenCount(numTokens, k); !error.empty())
    return error;
  if (!expertCounts || !expertOffsets ||
      (numTokens > 0 && (!topkIds || !sortedSlots || !slotPositions)))
    return "topk_ids, expert_counts, expert_offsets, sorted_slots, "
           "slot_positions: every buffer is required";
  Bindings bindings;
  bindings.tokens = numTokens;
  bindings.topK = k;
  bindings.tensors["topk_ids"] = topkIds;
  bindings.tensors["expert_counts"] = expertCounts;
  bindings.tensors["expert_offsets"] = expertOffsets;
  bindings.tensors["sorted_slots"] = sortedSlots;
  bindings.tensors["slot_positions"] = slotPositions;
  return impl->runKernel(impl->dispatch, bindings, "");
}

std::string CpuRouter::updateBias(const rt::HostUpdateBiasCall &call) {
  if (std::string error =
          rt::checkUpdateBiasCall(routerFactsOf(impl->spec), call);
      !error.empty())
    return error;
  Bindings bindings;
  bindings.tokens = 0;
  bindings.topK = impl->spec.topK;
  bindings.tensors["bias"] = call.bias;
  bindings.tensors["expert_counts"] = call.expertCounts;
  bindings.tensors["updated_bias"] = call.updatedBias;
  return impl->runKernel(impl->updateBias, bindings, "");
}

CpuRouter::CpuRouter(std::unique_ptr<Impl> impl) : impl(std::move(impl)) {}
CpuRouter::~CpuRouter() = default;

llvm::Expected<std::unique_ptr<CpuRouter>>
CpuRouter::compile(const RoutingSpec &spec, const CpuCompileOptions &options) {
  if (std::optional<SpecViolation> violation = validateRoutingSpec(spec))
    return llvm::createStringError("spec: " + violation->key + ": " +
                                   violation->message);
  auto impl = std::make_unique<Impl>();
  impl->spec = spec;
  if (std::string error = impl->compile(options); !error.empty())
    return llvm::createStringError(error);
  return std::unique_ptr<CpuRouter>(new CpuRouter(std::move(impl)));
}

std::string CpuRouter::permute(const rt::HostPermuteCall &call) {
  if (std::string error =
          rt::checkPermuteCall(routerFactsOf(impl->spec), call);
      !error.empty())
    return error;
  Bindings bindings;
  bindings.tokens = call.numTokens;
  bindings.topK = impl->spec.topK;
  bindings.hidden = call.hiddenSize;
  bindings.tensors["hidden"] = call.hidden;
  bindings.tensors["sorted_slots"] = call.sortedSlots;
  bindings.tensors["permuted"] = call.permuted;
  return impl->runKernel(impl->permute, bindings, "",
                         impl->rowMovementTokensPerTask(call.hiddenSize));
}

std::string CpuRouter::combine(const rt::HostCombineCall &call) {
  if (std::string error =
          rt::checkCombineCall(routerFactsOf(impl->spec), call);
      !error.empty())
    return error;
  Bindings bindings;
  bindings.tokens = call.numTokens;
  bindings.topK = impl->spec.topK;
  bindings.hidden = call.hiddenSize;
  bindings.tensors["topk_weights"] = call.topkWeights;
  bindings.tensors["slot_positions"] = call.slotPositions;
  bindings.tensors["expert_output"] = call.expertOutput;
  bindings.tensors["combined"] = call.combined;
  return impl->runKernel(impl->combine, bindings, "",
                         impl->rowMovementTokensPerTask(call.hiddenSize));
}

const RoutingSpec &CpuRouter::spec() const { return impl->spec; }
int64_t CpuRouter::vectorWidth() const { return impl->vectorWidth; }
int64_t CpuRouter::tokensPerTask() const { return impl->tokensPerTask; }

std::string CpuRouter::run(const RouterCall &call) { return impl->run(call); }

} // namespace moegen::cpu
