//===- CpuRouter.cpp - Run a routing spec on the host ---------------------===//

#include "compiler/backend/cpu/CpuRouter.h"

#include "compiler/Registration.h"
#include "compiler/backend/cpu/CpuPipeline.h"
#include "compiler/spec/SpecToMoE.h"
#include "runtime/KernelError.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/ExecutionEngine/ExecutionEngine.h"
#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"

#include "llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h"
#include "llvm/ExecutionEngine/Orc/Mangling.h"
#include "llvm/ExecutionEngine/Orc/Shared/ExecutorAddress.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/ThreadPool.h"
#include "llvm/Support/raw_ostream.h"

#include <array>
#include <deque>
#include <functional>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>

namespace moegen::cpu {

namespace {

/// A strided memref descriptor as MLIR's C interface passes it (by
/// pointer), for any element type: MLIR's StridedMemRefType<T, N> without T.
template <int Rank>
struct Descriptor {
  void *allocated = nullptr;
  void *aligned = nullptr;
  int64_t offset = 0;
  int64_t sizes[Rank] = {};
  int64_t strides[Rank] = {};

  Descriptor() = default;
  /// A dense row-major view of `data`.
  Descriptor(const void *data, std::array<int64_t, Rank> shape) {
    allocated = aligned = const_cast<void *>(data);
    int64_t stride = 1;
    for (int d = Rank - 1; d >= 0; --d) {
      sizes[d] = shape[d];
      strides[d] = stride;
      stride *= shape[d];
    }
  }
};

using KernelFn = void (*)(void **);
using ErrorRecord = std::array<int64_t, kKernelErrorWords>;

std::once_flag nativeTargetOnce;

void initializeNativeTarget() {
  std::call_once(nativeTargetOnce, [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
  });
}

/// bf16 conversions for the JIT. LLVM lowers f32 <-> bf16 to these
/// compiler-rt builtins on hosts without AVX512-BF16, and Debian 12's libgcc
/// (GCC 12) lacks them. bf16 travels in an XMM register like _Float16, so
/// that is the carrier type here.
_Float16 truncFloatToBf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  uint16_t result;
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) {
    result = static_cast<uint16_t>((bits >> 16) | 0x40); // quiet NaN
  } else {
    // Round to nearest, ties to even.
    bits += 0x7FFFu + ((bits >> 16) & 1u);
    result = static_cast<uint16_t>(bits >> 16);
  }
  _Float16 carrier;
  std::memcpy(&carrier, &result, sizeof carrier);
  return carrier;
}

float extendBf16ToFloat(_Float16 carrier) {
  uint16_t half;
  std::memcpy(&half, &carrier, sizeof half);
  uint32_t bits = static_cast<uint32_t>(half) << 16;
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

} // namespace

struct CpuRouter::Impl {
  RoutingSpec spec;
  int64_t vectorWidth = 1;
  int64_t tokensPerTask = 1;
  mlir::MLIRContext context;
  std::unique_ptr<mlir::ExecutionEngine> engine;
  KernelFn route = nullptr; // route or route_hash
  KernelFn replay = nullptr;
  KernelFn dispatch = nullptr;
  std::unique_ptr<llvm::StdThreadPool> pool;

  std::string compile(const CpuCompileOptions &options);
  void readChosenConfig(mlir::ModuleOp module);
  std::string runRowKernel(KernelFn kernel, int64_t numTokens,
                           std::vector<void *> &args,
                           const std::string &biasError);
  std::string run(const RouterCall &call);
};

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
  for (const Stage &stage : stages) {
    mlir::PassManager pm(&context);
    stage.add(pm);
    if (mlir::failed(pm.run(*module))) {
      std::string where =
          options.dumpDir.empty()
              ? std::string("rerun with --dump-ir DIR to see every stage")
              : "the input of this stage is in " + options.dumpDir;
      return "internal compiler error in the CPU pipeline before " +
             std::string(stage.file) + ": " + diagnostics + " (" + where +
             "; repro: moegen compile SPEC | moegen-opt --moe-cpu-to-llvm)";
    }
    if (std::string error = dump(stage.file); !error.empty())
      return error;
    if (&stage == &stages[0])
      readChosenConfig(*module);
  }

  initializeNativeTarget();
  auto machineBuilder = llvm::orc::JITTargetMachineBuilder::detectHost();
  if (!machineBuilder)
    return "cannot target the host: " +
           llvm::toString(machineBuilder.takeError());
  auto targetMachine = machineBuilder->createTargetMachine();
  if (!targetMachine)
    return "cannot target the host: " +
           llvm::toString(targetMachine.takeError());

  // ExecutionEngineOptions::transformer is a function_ref: the transformer
  // itself must outlive create().
  std::function<llvm::Error(llvm::Module *)> optimize =
      mlir::makeOptimizingTransformer(3, 0, targetMachine->get());
  mlir::ExecutionEngineOptions engineOptions;
  engineOptions.transformer = optimize;
  engineOptions.jitCodeGenOptLevel = llvm::CodeGenOptLevel::Aggressive;
  auto created = mlir::ExecutionEngine::create(*module, engineOptions);
  if (!created)
    return "internal compiler error: JIT compilation failed: " +
           llvm::toString(created.takeError());
  engine = std::move(*created);
  engine->registerSymbols([](llvm::orc::MangleAndInterner interner) {
    llvm::orc::SymbolMap symbols;
    symbols[interner("__truncsfbf2")] = {
        llvm::orc::ExecutorAddr::fromPtr(&truncFloatToBf16),
        llvm::JITSymbolFlags::Exported};
    symbols[interner("__extendbfsf2")] = {
        llvm::orc::ExecutorAddr::fromPtr(&extendBf16ToFloat),
        llvm::JITSymbolFlags::Exported};
    return symbols;
  });

  auto lookup = [&](const char *name, KernelFn &fn) -> std::string {
    auto found = engine->lookupPacked(std::string("_mlir_ciface_") + name);
    if (!found)
      return "internal compiler error: no kernel '" + std::string(name) +
             "': " + llvm::toString(found.takeError());
    fn = *found;
    return {};
  };
  std::string error = lookup(
      spec.selection == Selection::Hash ? entry::kRouteHash : entry::kRoute,
      route);
  if (error.empty() && spec.replay)
    error = lookup(entry::kReplay, replay);
  if (error.empty() && spec.dispatch)
    error = lookup(entry::kDispatch, dispatch);
  if (!error.empty())
    return error;

  unsigned threads = options.threads;
  pool = std::make_unique<llvm::StdThreadPool>(
      threads ? llvm::heavyweight_hardware_concurrency(threads)
              : llvm::heavyweight_hardware_concurrency());
  return {};
}

/// The configuration the heuristics chose for the row kernels, as they will
/// be built.
void CpuRouter::Impl::readChosenConfig(mlir::ModuleOp module) {
  for (auto func : module.getOps<mlir::func::FuncOp>()) {
    auto config =
        func->getAttrOfType<mlir::DictionaryAttr>(mlir::moe::kKernelConfigAttrName);
    if (!config || func.getName() == entry::kDispatch)
      continue;
    vectorWidth = config.getAs<mlir::IntegerAttr>("vector_width").getInt();
    tokensPerTask = std::max<int64_t>(
        1, config.getAs<mlir::IntegerAttr>("tokens_per_task").getInt());
  }
}

/// Runs a row kernel over [0, numTokens) in tasks of tokensPerTask tokens.
/// `args` holds the kernel's packed arguments up to (excluding) the error
/// record, t0 and t1, which each task appends for itself.
/// `biasError` is the host's verdict on the bias, reported in its place in
/// the order of semantics.md §2 (after logits, before everything else).
std::string CpuRouter::Impl::runRowKernel(KernelFn kernel, int64_t numTokens,
                                          std::vector<void *> &args,
                                          const std::string &biasError) {
  const int64_t numTasks = (numTokens + tokensPerTask - 1) / tokensPerTask;
  std::vector<ErrorRecord> records(static_cast<size_t>(numTasks),
                                   ErrorRecord{});
  auto runTask = [&](int64_t task) {
    ErrorRecord &record = records[task];
    Descriptor<1> recordDesc(record.data(), {kKernelErrorWords});
    void *recordPtr = &recordDesc;
    int64_t first = task * tokensPerTask;
    int64_t last = std::min(numTokens, first + tokensPerTask);
    std::vector<void *> taskArgs = args;
    taskArgs.push_back(&recordPtr);
    taskArgs.push_back(&first);
    taskArgs.push_back(&last);
    kernel(taskArgs.data());
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
  return formatKernelError(first->data(), spec.numExperts);
}

std::string CpuRouter::Impl::run(const RouterCall &call) {
  const int64_t t = call.numTokens, e = spec.numExperts, k = spec.topK;
  if (t < 0)
    return "num_tokens = " + std::to_string(t) + ": must not be negative";
  if (t > std::numeric_limits<int32_t>::max() / k)
    return "num_tokens = " + std::to_string(t) +
           ": num_tokens * top_k must fit in int32";
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

  // Every kernel argument before the error record, in ABI order.
  std::vector<void *> args;
  std::vector<std::unique_ptr<Descriptor<1>>> d1;
  std::vector<std::unique_ptr<Descriptor<2>>> d2;
  std::vector<std::unique_ptr<Descriptor<3>>> d3;
  // What args point at; a deque keeps their addresses stable as it grows.
  std::deque<void *> pointers;
  auto addPointer = [&](void *descriptor) {
    pointers.push_back(descriptor);
    args.push_back(&pointers.back());
  };
  auto add1 = [&](const void *data, int64_t n) {
    d1.push_back(std::make_unique<Descriptor<1>>(data, std::array{n}));
    addPointer(d1.back().get());
  };
  auto add2 = [&](const void *data, int64_t rows, int64_t cols) {
    d2.push_back(std::make_unique<Descriptor<2>>(data, std::array{rows, cols}));
    addPointer(d2.back().get());
  };

  KernelFn kernel = route;
  int64_t layer = call.captureLayer;
  std::string biasError;
  add2(call.logits, t, e);
  if (call.forcedIds) {
    if (!spec.replay)
      return "forced_ids: the spec has no replay entry point (set replay: "
             "true)";
    kernel = replay;
    add2(call.forcedIds, t, k);
  } else if (spec.selection == Selection::Hash) {
    if (t > 0 && !call.tokenIds)
      return "token_ids: required by selection: hash";
    if (!call.hashTable && call.hashVocab != 0)
      return "hash_table: required by selection: hash";
    if (call.hashVocab < 0)
      return "hash_table: vocabulary size " + std::to_string(call.hashVocab) +
             " must not be negative";
    add1(call.tokenIds, t);
    add2(call.hashTable, call.hashVocab, k);
  } else if (spec.scoreBias) {
    if (!call.bias)
      return "bias: required by score_bias";
    // Reported after the kernels' logits checks (semantics.md §2 order); a
    // non-finite bias only makes keys NaN, which no access depends on.
    for (int64_t x = 0; x < e && biasError.empty(); ++x)
      if (!std::isfinite(call.bias[x]))
        biasError = "bias[" + std::to_string(x) + "] = " +
                    formatFloatForMessage(call.bias[x]) + ": must be finite";
    add1(call.bias, e);
  }
  // Capture belongs to route only (replay re-runs recorded ids).
  std::vector<uint8_t> scratchCapture;
  if (kernel == route && spec.capture) {
    int64_t layers = call.captureLayers;
    const void *buffer = call.captureBuffer;
    if (!buffer) {
      // No buffer given: capture into a private one-layer buffer.
      layers = 1;
      layer = 0;
      scratchCapture.resize(static_cast<size_t>(t * k) *
                            (e <= 32767 ? 2 : 4));
      buffer = scratchCapture.data();
    } else if (layers < 1) {
      return "capture: buffer of " + std::to_string(layers) +
             " layers; it needs at least one";
    }
    d3.push_back(
        std::make_unique<Descriptor<3>>(buffer, std::array{t, layers, k}));
    addPointer(d3.back().get());
    args.push_back(&layer);
  }
  add2(call.topkIds, t, k);
  add2(call.topkWeights, t, k);

  if (std::string error = runRowKernel(kernel, t, args, biasError);
      !error.empty())
    return error;
  if (!wantsDispatch)
    return {};

  args.clear();
  pointers.clear();
  add2(call.topkIds, t, k);
  add1(call.expertCounts, e);
  add1(call.expertOffsets, e + 1);
  add1(call.sortedSlots, t * k);
  add1(call.slotPositions, t * k);
  ErrorRecord record{};
  Descriptor<1> recordDesc(record.data(), {kKernelErrorWords});
  void *recordPtr = &recordDesc;
  args.push_back(&recordPtr);
  dispatch(args.data());
  if (record[kErrorCode] != 0)
    return formatKernelError(record.data(), e, "topk_ids");
  return {};
}

CpuRouter::CpuRouter(std::unique_ptr<Impl> impl) : impl(std::move(impl)) {}
CpuRouter::~CpuRouter() = default;

std::unique_ptr<CpuRouter> CpuRouter::compile(const RoutingSpec &spec,
                                              const CpuCompileOptions &options,
                                              std::string &error) {
  if (std::optional<SpecViolation> violation = validateRoutingSpec(spec)) {
    error = "spec: " + violation->key + ": " + violation->message;
    return nullptr;
  }
  auto impl = std::make_unique<Impl>();
  impl->spec = spec;
  error = impl->compile(options);
  if (!error.empty())
    return nullptr;
  return std::unique_ptr<CpuRouter>(new CpuRouter(std::move(impl)));
}

const RoutingSpec &CpuRouter::spec() const { return impl->spec; }
int64_t CpuRouter::vectorWidth() const { return impl->vectorWidth; }
int64_t CpuRouter::tokensPerTask() const { return impl->tokensPerTask; }

std::string CpuRouter::run(const RouterCall &call) { return impl->run(call); }

} // namespace moegen::cpu
