//===- Module.cpp - moegen._moegen, the Python extension -----------------===//
//
// The native half of the `moegen` Python package (python/moegen/): a
// Router over a routing spec, compiled on construction by the CPU backend
// (in-process JIT) or through the kernel JIT cache for a CUDA device, and
// called on DLPack tensors (PyTorch, NumPy, anything with __dlpack__) in
// place: the caller allocates the outputs (python/moegen/_router.py does),
// so nothing is copied and CUDA tensors stay on their device and stream.
//
// Every tensor is checked here (dtype, shape, row-major layout, device)
// before any kernel runs, and a bad one raises moegen.InputError (a
// ValueError) with one line naming the tensor, the dimension or index and
// the rule, worded as `moegen run` words it. Errors that are not the
// input's fault (compile, driver) raise moegen.Error (a RuntimeError).
//
// The same source builds a runtime-only extension (no LLVM, no MLIR, no
// compiler: python/runtime-only/CMakeLists.txt) for GPU machines without
// the compiler: it loads compiled kernel directories (Router.load) and has
// no CPU backend. MOEGEN_PYTHON_COMPILER marks the full build.
//
// The full build also has backend "gpu-emu": the NVPTX kernels on the
// host's GPU emulator, launched through the runtime's CudaRouter exactly as
// on a GPU, over CPU tensors registered with the emulated driver for the
// call. It runs the CUDA launch path of this file where no GPU is.
//
//===----------------------------------------------------------------------===//

#include "runtime/Error.h"
#include "runtime/HostRouter.h"
#include "runtime/Manifest.h"
#ifdef MOEGEN_PYTHON_COMPILER
#include "compiler/backend/cpu/CpuHostRouter.h"
#include "compiler/backend/cpu/CpuRouter.h"
#include "compiler/spec/MoEToProgram.h"
#include "compiler/spec/SpecParser.h"
#include "compiler/tune/TuningDb.h"
#include "llvm/Support/Error.h"
#ifdef MOEGEN_HAVE_CUDA_RUNTIME
#include "compiler/jit/KernelJit.h"
#endif
#ifdef MOEGEN_HAVE_GPU_EMU
#include "compiler/backend/gpuemu/EmuCudaDriver.h"
#include "compiler/backend/gpuemu/GpuEmuRouter.h"
#endif
#endif
#ifdef MOEGEN_HAVE_CUDA_RUNTIME
#include "runtime/cuda/CudaRouter.h"
#endif

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace nb = nanobind;

namespace moegen::python {
namespace {

/// A bad argument or tensor: moegen.InputError (a ValueError).
struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
/// Anything else moegen reports: moegen.Error (a RuntimeError).
struct MoegenError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Outputs (and the capture buffer, which the kernels write) must be
/// writable; inputs may be read-only (np.load(mmap_mode='r'), broadcasts).
using Tensor = nb::ndarray<>;
using OptTensor = std::optional<Tensor>;
using Input = nb::ndarray<nb::ro>;
using OptInput = std::optional<Input>;

/// The address a kernel gets for a tensor. An empty tensor's data pointer
/// may be null (PyTorch's are), which the routers read as "not given":
/// given-but-empty tensors point here instead (nothing is read or written).
alignas(64) char emptyTensorAddress[64];
template <typename T> void *addressOf(const T &t) {
  void *data = const_cast<void *>(static_cast<const void *>(t.data()));
  return data ? data : emptyTensorAddress;
}

std::string dtypeName(nb::dlpack::dtype dtype) {
  using Code = nb::dlpack::dtype_code;
  std::string base;
  switch (Code(dtype.code)) {
  case Code::Int:
    base = "int";
    break;
  case Code::UInt:
    base = "uint";
    break;
  case Code::Float:
    base = "float";
    break;
  case Code::Bfloat:
    base = "bfloat";
    break;
  case Code::Complex:
    base = "complex";
    break;
  case Code::Bool:
    return "bool";
  default:
    return "DLPack dtype (code " + std::to_string(dtype.code) + ", " +
           std::to_string(dtype.bits) + " bits)";
  }
  return base + std::to_string(dtype.bits);
}

template <typename T>
bool isDType(const T &t, nb::dlpack::dtype_code code, int bits) {
  nb::dlpack::dtype d = t.dtype();
  return d.code == uint8_t(code) && d.bits == bits && d.lanes == 1;
}

template <typename T> std::string shapeRepr(const T &t) {
  std::string s = "(";
  for (size_t i = 0; i < t.ndim(); ++i)
    s += (i ? ", " : "") + std::to_string(t.shape(i));
  return s + (t.ndim() == 1 ? ",)" : ")");
}

std::string deviceRepr(int type, int id) {
  if (type == nb::device::cpu::value)
    return "cpu";
  if (type == nb::device::cuda::value)
    return "cuda:" + std::to_string(id);
  return "device type " + std::to_string(type) + ":" + std::to_string(id);
}

/// One dimension a tensor must have: its symbol, its size (nullopt: any)
/// and what fixes it, as runtime/RouterInputs.cpp words its checks.
struct Dim {
  std::string symbol;
  std::optional<int64_t> size;
  std::string reason;
};

/// Where every tensor of a call must live.
struct Placement {
  int deviceType = nb::device::cpu::value;
  int deviceId = 0;
  std::string backend; // for messages
};

/// Checks dtype, shape, dense row-major layout and device of `t`, named
/// `name`; `allowed` lists (code, bits) pairs and `why` explains them.
template <typename T>
void checkTensor(const std::string &name, const T &t,
                 const std::vector<std::pair<nb::dlpack::dtype_code, int>> &allowed,
                 const std::string &why, const std::vector<Dim> &dims,
                 const Placement &placement) {
  bool dtypeOk = false;
  for (auto [code, bits] : allowed)
    dtypeOk |= isDType(t, code, bits);
  if (!dtypeOk) {
    std::string expected;
    for (size_t i = 0; i < allowed.size(); ++i)
      expected += (i ? " or " : "") +
                  dtypeName({uint8_t(allowed[i].first), uint8_t(allowed[i].second), 1});
    throw InputError(name + ": dtype " + dtypeName(t.dtype()) + " must be " +
                     expected + why);
  }
  std::string symbols, sizes;
  for (size_t i = 0; i < dims.size(); ++i) {
    symbols += (i ? ", " : "") + dims[i].symbol;
    sizes += (i ? ", " : "") +
             (dims[i].size ? std::to_string(*dims[i].size) : dims[i].symbol);
  }
  std::string prefix = name + ": shape " + shapeRepr(t) + " must be [" +
                       symbols + "] = [" + sizes + "]: ";
  if (t.ndim() != dims.size())
    throw InputError(prefix + "it has " + std::to_string(t.ndim()) +
                     (t.ndim() == 1 ? " dimension" : " dimensions") +
                     ", not " + std::to_string(dims.size()));
  for (size_t i = 0; i < dims.size(); ++i)
    if (dims[i].size && int64_t(t.shape(i)) != *dims[i].size)
      throw InputError(prefix + "dimension " + std::to_string(i) + " is " +
                       std::to_string(t.shape(i)) + ", not " + dims[i].symbol +
                       " = " + std::to_string(*dims[i].size) + " (" +
                       dims[i].reason + ")");
  // Dense row-major: strides (in elements) as a contiguous tensor's, where
  // a dimension of size 1 may have any stride.
  int64_t expected = 1;
  bool empty = false;
  for (size_t i = 0; i < t.ndim(); ++i)
    empty |= t.shape(i) == 0;
  for (size_t i = t.ndim(); !empty && i-- > 0;) {
    if (t.shape(i) != 1 && t.stride(i) != expected)
      throw InputError(name + ": must be contiguous (dense, row-major); "
                              "dimension " +
                       std::to_string(i) + " has stride " +
                       std::to_string(t.stride(i)) + ", not " +
                       std::to_string(expected) + " (call .contiguous())");
    expected *= int64_t(t.shape(i));
  }
  if (int(t.device_type()) != placement.deviceType ||
      (placement.deviceType != nb::device::cpu::value &&
       int(t.device_id()) != placement.deviceId))
    throw InputError(name + ": on " +
                     deviceRepr(t.device_type(), t.device_id()) +
                     ", but this router runs on " + placement.backend + " (" +
                     deviceRepr(placement.deviceType, placement.deviceId) +
                     ")");
}

using Code = nb::dlpack::dtype_code;
const std::vector<std::pair<Code, int>> kInt32 = {{Code::Int, 32}};
const std::vector<std::pair<Code, int>> kFloat32 = {{Code::Float, 32}};

/// The facts as a dict, for Python.
nb::dict factsDict(const rt::RouterFacts &f, const std::string &specHashText) {
  auto dtype = [](rt::RouterFacts::Logits l) {
    return l == rt::RouterFacts::Logits::F32    ? "f32"
           : l == rt::RouterFacts::Logits::BF16 ? "bf16"
                                                : "f16";
  };
  nb::dict d;
  d["name"] = f.name;
  d["num_experts"] = f.numExperts;
  d["top_k"] = f.topK;
  d["logits_dtype"] = dtype(f.logits);
  d["score_bias"] = f.scoreBias;
  d["hash_selection"] = f.hashSelection;
  d["capture"] = f.capture;
  d["shared_gate"] = f.sharedGate;
  d["replay"] = f.replay;
  d["dispatch"] = f.dispatch;
  d["unused_slots"] = f.unusedSlots;
  d["capacity_factor"] = f.capacityFactor;
  d["update_bias"] = f.updateBias;
  d["permute"] = f.permute;
  d["hidden_dtype"] = dtype(f.hidden);
  d["hidden_size"] = f.hiddenSize;
  d["capture_dtype"] = f.captureElementBytes() == 2 ? "int16" : "int32";
  d["spec_hash"] = specHashText;
  return d;
}

class Router {
public:
#ifdef MOEGEN_PYTHON_COMPILER
  /// `spec` is a file path when `isPath`, else YAML text named `name`.
  Router(const std::string &spec, bool isPath, const std::string &name,
         const std::string &backend, unsigned threads, int device,
         const std::string &tuningDbPath)
      : backendName(backend), threads(threads) {
    std::string error;
    std::optional<RoutingSpec> parsed =
        isPath ? parseRouterFile(spec, error)
               : parseRoutingSpec(spec, name, error);
    if (!parsed)
      throw InputError(error);
    routingSpec = std::move(*parsed);
    facts = cpu::routerFactsOf(routingSpec);
    hash = specHash(routingSpec);
    canonical = routingSpec.isProgram() ? routingSpec.program
                                        : printRoutingSpec(routingSpec);
    if (backend == "cpu") {
      cpu::CpuCompileOptions options;
      options.threads = threads;
      auto compiled = cpu::CpuRouter::compile(routingSpec, options);
      if (!compiled)
        throw MoegenError(routingSpec.name +
                          ": internal error: the CPU backend cannot compile "
                          "this spec: " +
                          llvm::toString(compiled.takeError()));
      cpuRouter = std::move(*compiled);
      placement = {nb::device::cpu::value, 0, "the cpu backend"};
      if (!tuningDbPath.empty()) {
        std::optional<tune::TuningDb> db =
            tune::TuningDb::load(tuningDbPath, error);
        if (!db)
          throw InputError(error);
        tuning = std::move(*db);
        tuningPath = tuningDbPath;
        // Once: it reads /proc/cpuinfo.
        tuningOrigin = tune::cpuOrigin(
            threads, std::string(MOEGEN_VERSION) + "+codegen." +
                         jit::codegenFingerprint());
      }
      return;
    }
    if (backend == "cuda") {
#ifdef MOEGEN_HAVE_CUDA_RUNTIME
      try {
        rt::LoadOptions load;
        load.device = device;
        jit::JitOptions jit;
        if (!tuningDbPath.empty()) {
          const rt::CudaDriver &driver = rt::CudaDriver::get();
          jit.compile.arch = deviceArch(driver, device);
          gpuTuning(tuningDbPath, "cuda", deviceName(driver, device),
                    jit.compile.arch, jit.compile, jit.buckets);
        }
        cudaRouter = jit::loadRouter(routingSpec, jit, load);
      } catch (const rt::Error &e) {
        throw MoegenError(std::string("backend cuda: ") + e.what());
      }
      placement = {nb::device::cuda::value, device,
                   "the cuda backend on device " + std::to_string(device)};
      return;
#else
      throw InputError("backend 'cuda': this moegen was built without the "
                       "CUDA runtime (cuda.h was not found; set CUDA_HOME "
                       "and rebuild)");
#endif
    }
    if (backend == "gpu-emu") {
#ifdef MOEGEN_HAVE_GPU_EMU
      gpuemu::GpuEmuOptions emu;
      if (!tuningDbPath.empty())
        gpuTuning(tuningDbPath, "gpu-emu",
                  deviceName(gpuemu::emulatedDriver(), 0), "sm_90", emu.nvptx,
                  emu.buckets);
      auto compiled = gpuemu::compileEmulatedRouter(routingSpec, emu);
      if (!compiled)
        throw MoegenError(
            routingSpec.name +
            ": internal error: the GPU emulator cannot run this spec: " +
            nvptx::takeCompileError(compiled.takeError()).second);
      emulated = std::move(*compiled);
      placement = {nb::device::cpu::value, 0, "the gpu-emu backend"};
      return;
#else
      throw InputError("backend 'gpu-emu': this moegen was built without "
                       "the CUDA runtime (cuda.h was not found)");
#endif
    }
    throw InputError("backend '" + backend +
                     "': unknown backend (available: cpu, cuda, gpu-emu)");
  }

  /// The configuration a call of `t` tokens runs with, and where it came
  /// from: the CPU's (the heuristic's, or the tuning database's entry), or
  /// the GPU route kernel's schedule from the manifest (a kernel per token
  /// bucket when the database's schedules differ).
  nb::dict configFor(int64_t t) {
#ifdef MOEGEN_HAVE_CUDA_RUNTIME
    if (const rt::CudaRouter *gpu = device()) {
      const rt::Manifest &manifest = gpu->manifest();
      const rt::Kernel *route = manifest.findFor(rt::EntryKind::Route, t);
      if (!route)
        route = manifest.findFor(rt::EntryKind::RouteHash, t);
      nb::dict d;
      d["lanes_per_token"] = route ? route->launch.lanesPerToken : 0;
      d["tokens_per_block"] = route ? route->launch.tokensPerBlock : 0;
      d["topk"] = route ? route->topk : std::string();
      d["source"] = route && !route->scheduleSource.empty()
                        ? route->scheduleSource
                        : std::string("heuristic");
      return d;
    }
#endif
    if (!cpuRouter)
      throw InputError("config: this backend has no configuration to report");
    cpu::CpuRouter &router = *cpuRouterFor(t);
    nb::dict d;
    d["vector_width"] = router.vectorWidth();
    d["tokens_per_task"] = router.tokensPerTask();
    d["source"] = lastSource;
    return d;
  }
#endif

  /// A kernel directory compiled ahead (`moegen compile --emit=cubin -o
  /// DIR`, or a kernel cache entry), loaded for CUDA device `device`.
  static std::unique_ptr<Router> load(const std::string &directory,
                                      int device) {
#ifdef MOEGEN_HAVE_CUDA_RUNTIME
    auto router = std::unique_ptr<Router>(new Router());
    router->backendName = "cuda";
    try {
      rt::LoadOptions load;
      load.device = device;
      router->cudaRouter = rt::CudaRouter::load(directory, load);
    } catch (const rt::Error &e) {
      if (e.kind() == rt::Error::Kind::Manifest)
        throw InputError(e.what());
      throw MoegenError(e.what());
    }
    const rt::Manifest &manifest = router->cudaRouter->manifest();
    router->facts = rt::routerFactsOf(manifest);
    router->hash = manifest.specHash;
    router->canonical = directory;
    router->placement = {nb::device::cuda::value, device,
                         "the cuda backend on device " + std::to_string(device)};
    return router;
#else
    (void)device;
    throw InputError(directory + ": loading kernels needs the CUDA runtime, "
                                 "and this moegen was built without it "
                                 "(cuda.h was not found)");
#endif
  }

  nb::dict factsAsDict() const { return factsDict(facts, hash); }

  /// The logits' checks alone, before the caller allocates outputs sized
  /// by them (a bad shape must not first cost an allocation).
  void checkLogits(Input logits) const {
    auto [types, why] = logitsRule();
    checkTensor("logits", logits, types, why,
                {{"T", std::nullopt, "tokens"},
                 {"E", facts.numExperts, "num_experts"}},
                placement);
  }
  const std::string &backend() const { return backendName; }
  const std::string &spec() const { return canonical; }

  /// route, route_hash or replay (forced_ids given), then dispatch when
  /// its four outputs are given. `check` (CUDA): wait for the stream and
  /// raise the kernels' first input error; off inside CUDA graph capture.
  void run(Input logits, OptInput bias, OptInput tokenIds,
           OptInput hashTable, OptInput forcedIds, OptTensor capture,
           int64_t captureLayer, Tensor topkIds, Tensor topkWeights,
           OptTensor counts, OptTensor offsets, OptTensor sortedSlots,
           OptTensor slotPositions, uintptr_t stream, bool check,
           OptInput sharedGateLogits, OptTensor sharedGate) {
    const int64_t e = facts.numExperts, k = facts.topK;
    auto [logitTypes, logitWhy] = logitsRule();
    checkTensor("logits", logits, logitTypes, logitWhy,
                {{"T", std::nullopt, "tokens"}, {"E", e, "num_experts"}},
                placement);
    const int64_t t = int64_t(logits.shape(0));
    if (t > std::numeric_limits<int32_t>::max() / k)
      throw InputError("logits: T = " + std::to_string(t) +
                       " tokens: T * top_k = " + std::to_string(t * k) +
                       " must fit in int32 (slot indices are int32)");
    const Dim tokens{"T", t, "the token count of logits"};
    const Dim topK{"k", k, "top_k"};
    const bool replay = forcedIds.has_value();
    if (replay) {
      if (!facts.replay)
        throw InputError("forced_ids: the spec has no replay entry point "
                         "(set replay: true)");
      if (bias || tokenIds || hashTable)
        throw InputError(std::string(bias ? "bias" : tokenIds ? "token_ids"
                                                              : "hash_table") +
                         ": replay (forced_ids given) takes no selection "
                         "inputs");
      if (capture)
        throw InputError("capture: replay (forced_ids given) does not "
                         "capture");
      checkTensor("forced_ids", *forcedIds, kInt32, "", {tokens, topK},
                  placement);
    } else {
      if (facts.scoreBias && !bias)
        throw InputError("bias: required by score_bias: true ([E] float32)");
      if (!facts.scoreBias && bias)
        throw InputError("bias: not used: the spec has score_bias: false");
      if (bias)
        checkTensor("bias", *bias, kFloat32, "", {{"E", e, "num_experts"}},
                    placement);
      if (facts.hashSelection && (!tokenIds || !hashTable))
        throw InputError(std::string(!tokenIds ? "token_ids" : "hash_table") +
                         ": required by selection: hash");
      if (!facts.hashSelection && (tokenIds || hashTable))
        throw InputError(std::string(tokenIds ? "token_ids" : "hash_table") +
                         ": not used: the spec has selection: topk");
      if (tokenIds)
        checkTensor("token_ids", *tokenIds, kInt32, "", {tokens}, placement);
      if (hashTable)
        checkTensor("hash_table", *hashTable, kInt32, "",
                    {{"V", std::nullopt, "vocabulary"}, topK}, placement);
      if (capture && !facts.capture)
        throw InputError("capture: not used: the spec has capture: false");
      if (capture) {
        const bool narrow = facts.captureElementBytes() == 2;
        checkTensor("capture", *capture,
                    {{Code::Int, narrow ? 16 : 32}},
                    narrow ? " (expert ids fit in int16)"
                           : " (num_experts > 32767)",
                    {tokens, {"L", std::nullopt, "layers"}, topK}, placement);
        const int64_t layers = int64_t(capture->shape(1));
        if (captureLayer < 0 || captureLayer >= layers)
          throw InputError("capture: layer " + std::to_string(captureLayer) +
                           " is outside the buffer's " +
                           std::to_string(layers) + " layers");
      }
    }
    checkTensor("topk_ids", topkIds, kInt32, "", {tokens, topK}, placement);
    checkTensor("topk_weights", topkWeights, kFloat32, "", {tokens, topK},
                placement);
    // The shared expert's gate, in every entry point of a spec that has it.
    const Dim one{"1", 1, "one logit per token"};
    if (facts.sharedGate) {
      if (!sharedGateLogits)
        throw InputError("shared_gate_logits: required by shared_expert_gate: "
                         "true ([T, 1] of the logits' dtype)");
      checkTensor("shared_gate_logits", *sharedGateLogits, logitTypes,
                  logitWhy, {tokens, one}, placement);
      if (!sharedGate)
        throw InputError("shared_gate: output buffer required by "
                         "shared_expert_gate: true ([T, 1] float32)");
      checkTensor("shared_gate", *sharedGate, kFloat32, "", {tokens, one},
                  placement);
    } else if (sharedGateLogits || sharedGate) {
      throw InputError("shared_gate_logits: not used: the spec has no shared "
                       "expert gate (set shared_expert_gate: true)");
    }
    const int given = int(bool(counts)) + bool(offsets) + bool(sortedSlots) +
                      bool(slotPositions);
    if (given != 0 && given != 4)
      throw InputError("expert_counts, expert_offsets, sorted_slots, "
                       "slot_positions: give all four dispatch outputs or "
                       "none");
    if (given && !facts.dispatch)
      throw InputError("expert_counts: the spec has no dispatch entry point "
                       "(set dispatch: true)");
    if (given)
      checkDispatchOutputs(t, *counts, *offsets, *sortedSlots, *slotPositions);

#ifdef MOEGEN_PYTHON_COMPILER
    if (cpuRouter) {
      cpu::CpuRouter *router = cpuRouterFor(t);
      rt::HostRouteCall call;
      call.numTokens = t;
      call.logits = addressOf(logits);
      call.bias = bias ? static_cast<const float *>(addressOf(*bias)) : nullptr;
      call.tokenIds = tokenIds
                          ? static_cast<const int32_t *>(addressOf(*tokenIds))
                          : nullptr;
      call.hashTable = hashTable
                           ? static_cast<const int32_t *>(addressOf(*hashTable))
                           : nullptr;
      call.hashVocab = hashTable ? int64_t(hashTable->shape(0)) : 0;
      call.forcedIds = forcedIds
                           ? static_cast<const int32_t *>(addressOf(*forcedIds))
                           : nullptr;
      call.captureBuffer = capture ? addressOf(*capture) : nullptr;
      call.captureLayers = capture ? int64_t(capture->shape(1)) : 0;
      call.captureLayer = captureLayer;
      call.topkIds = static_cast<int32_t *>(addressOf(topkIds));
      call.topkWeights = static_cast<float *>(addressOf(topkWeights));
      if (sharedGateLogits) {
        call.sharedGateLogits = addressOf(*sharedGateLogits);
        call.sharedGate = static_cast<float *>(addressOf(*sharedGate));
      }
      if (given) {
        call.expertCounts = static_cast<int32_t *>(addressOf(*counts));
        call.expertOffsets = static_cast<int32_t *>(addressOf(*offsets));
        call.sortedSlots = static_cast<int32_t *>(addressOf(*sortedSlots));
        call.slotPositions = static_cast<int32_t *>(addressOf(*slotPositions));
      }
      hostCall([&] { return router->run(call); });
      return;
    }
#endif
#ifdef MOEGEN_HAVE_CUDA_RUNTIME
    rt::RouteInputs in;
    in.numTokens = t;
    in.logits = devicePtr(logits);
    in.bias = bias ? devicePtr(*bias) : 0;
    in.tokenIds = tokenIds ? devicePtr(*tokenIds) : 0;
    in.hashTable = hashTable ? devicePtr(*hashTable) : 0;
    in.hashVocab = hashTable ? int64_t(hashTable->shape(0)) : 0;
    in.forcedIds = forcedIds ? devicePtr(*forcedIds) : 0;
    in.capture = capture ? devicePtr(*capture) : 0;
    in.captureLayers = capture ? int64_t(capture->shape(1)) : 0;
    in.captureLayer = captureLayer;
    in.sharedGateLogits = sharedGateLogits ? devicePtr(*sharedGateLogits) : 0;
    rt::RouteOutputs out;
    out.topkIds = devicePtr(topkIds);
    out.topkWeights = devicePtr(topkWeights);
    out.sharedGate = sharedGate ? devicePtr(*sharedGate) : 0;
    if (given) {
      out.expertCounts = devicePtr(*counts);
      out.expertOffsets = devicePtr(*offsets);
      out.sortedSlots = devicePtr(*sortedSlots);
      out.slotPositions = devicePtr(*slotPositions);
    }
    auto launch = [&](const rt::CudaRouter &router, CUstream s) {
      if (replay)
        router.replay(in, out, s);
      else if (facts.hashSelection)
        router.routeHash(in, out, s);
      else
        router.route(in, out, s);
    };
    deviceCall(stream, check, launch, logits, bias, tokenIds, hashTable,
               forcedIds, capture, topkIds, topkWeights, counts, offsets,
               sortedSlots, slotPositions, sharedGateLogits, sharedGate);
#else
    (void)stream;
    (void)check;
#endif
  }

  /// Dispatch metadata alone from [T, k] int32 ids.
  void dispatch(Input topkIds, Tensor counts, Tensor offsets,
                Tensor sortedSlots, Tensor slotPositions, uintptr_t stream,
                bool check) {
    if (!facts.dispatch)
      throw InputError("topk_ids: the spec has no dispatch entry point (set "
                       "dispatch: true)");
    const int64_t k = facts.topK;
    checkTensor("topk_ids", topkIds, kInt32, "",
                {{"T", std::nullopt, "tokens"}, {"k", k, "top_k"}}, placement);
    const int64_t t = int64_t(topkIds.shape(0));
    if (t > std::numeric_limits<int32_t>::max() / k)
      throw InputError("topk_ids: T = " + std::to_string(t) +
                       " tokens: T * top_k must fit in int32");
    checkDispatchOutputs(t, counts, offsets, sortedSlots, slotPositions);
#ifdef MOEGEN_PYTHON_COMPILER
    if (cpuRouter) {
      cpu::CpuRouter *router = cpuRouterFor(t);
      hostCall([&] {
        return router->dispatch(
            static_cast<const int32_t *>(addressOf(topkIds)), t,
            static_cast<int32_t *>(addressOf(counts)),
            static_cast<int32_t *>(addressOf(offsets)),
            static_cast<int32_t *>(addressOf(sortedSlots)),
            static_cast<int32_t *>(addressOf(slotPositions)));
      });
      return;
    }
#endif
#ifdef MOEGEN_HAVE_CUDA_RUNTIME
    rt::RouteOutputs out;
    out.expertCounts = devicePtr(counts);
    out.expertOffsets = devicePtr(offsets);
    out.sortedSlots = devicePtr(sortedSlots);
    out.slotPositions = devicePtr(slotPositions);
    auto launch = [&](const rt::CudaRouter &router, CUstream s) {
      router.dispatch(devicePtr(topkIds), t, out, s);
    };
    deviceCall(stream, check, launch, topkIds, counts, offsets, sortedSlots,
               slotPositions);
#else
    (void)stream;
    (void)check;
#endif
  }

  /// permute (spec permute: true): rows of `hidden` [T, H] into expert
  /// order by dispatch's sorted_slots [T * k], into `permuted` [T * k, H].
  void permute(Input hidden, Input sortedSlots, Tensor permuted,
               uintptr_t stream, bool check) {
    const auto [t, h] = checkRows("hidden", hidden);
    const int64_t k = facts.topK;
    checkTensor("sorted_slots", sortedSlots, kInt32, "",
                {{"T * k", t * k, "slots"}}, placement);
    checkTensor("permuted", permuted, hiddenTypes(), hiddenWhy(),
                {{"T * k", t * k, "slots"}, {"H", h, "the row size of hidden"}},
                placement);
#ifdef MOEGEN_PYTHON_COMPILER
    if (cpuRouter) {
      rt::HostPermuteCall call;
      call.numTokens = t;
      call.hiddenSize = h;
      call.hidden = addressOf(hidden);
      call.sortedSlots = static_cast<const int32_t *>(addressOf(sortedSlots));
      call.permuted = addressOf(permuted);
      cpu::CpuRouter *router = cpuRouterFor(t);
      hostCall([&] { return router->permute(call); });
      return;
    }
#endif
#ifdef MOEGEN_HAVE_CUDA_RUNTIME
    rt::PermuteArgs args;
    args.numTokens = t;
    args.hiddenSize = h;
    args.hidden = devicePtr(hidden);
    args.sortedSlots = devicePtr(sortedSlots);
    args.permuted = devicePtr(permuted);
    auto launch = [&](const rt::CudaRouter &router, CUstream s) {
      router.permute(args, s);
    };
    deviceCall(stream, check, launch, hidden, sortedSlots, permuted);
#else
    (void)stream;
    (void)check;
#endif
  }

  /// combine (spec permute: true): `combined` [T, H] = the routing weights
  /// [T, k] times the experts' rows [T * k, H] found by slot_positions,
  /// summed in f32 in slot order and rounded once.
  void combine(Input expertOutput, Input topkWeights, Input slotPositions,
               Tensor combined, uintptr_t stream, bool check) {
    const int64_t k = facts.topK;
    checkTensor("topk_weights", topkWeights, kFloat32, "",
                {{"T", std::nullopt, "tokens"}, {"k", k, "top_k"}}, placement);
    const int64_t t = int64_t(topkWeights.shape(0));
    if (t > std::numeric_limits<int32_t>::max() / k)
      throw InputError("topk_weights: T = " + std::to_string(t) +
                       " tokens: T * top_k must fit in int32");
    checkTensor("expert_output", expertOutput, hiddenTypes(), hiddenWhy(),
                {{"T * k", t * k, "slots"}, {"H", std::nullopt, "hidden size"}},
                placement);
    const int64_t h = int64_t(expertOutput.shape(1));
    checkTensor("slot_positions", slotPositions, kInt32, "",
                {{"T * k", t * k, "slots"}}, placement);
    checkTensor("combined", combined, hiddenTypes(), hiddenWhy(),
                {{"T", t, "the token count of topk_weights"},
                 {"H", h, "the row size of expert_output"}},
                placement);
    if (!facts.permute)
      throw InputError("expert_output: the spec has no permute and combine "
                       "entry points (set permute: true)");
#ifdef MOEGEN_PYTHON_COMPILER
    if (cpuRouter) {
      rt::HostCombineCall call;
      call.numTokens = t;
      call.hiddenSize = h;
      call.topkWeights = static_cast<const float *>(addressOf(topkWeights));
      call.slotPositions =
          static_cast<const int32_t *>(addressOf(slotPositions));
      call.expertOutput = addressOf(expertOutput);
      call.combined = addressOf(combined);
      cpu::CpuRouter *router = cpuRouterFor(t);
      hostCall([&] { return router->combine(call); });
      return;
    }
#endif
#ifdef MOEGEN_HAVE_CUDA_RUNTIME
    rt::CombineArgs args;
    args.numTokens = t;
    args.hiddenSize = h;
    args.topkWeights = devicePtr(topkWeights);
    args.slotPositions = devicePtr(slotPositions);
    args.expertOutput = devicePtr(expertOutput);
    args.combined = devicePtr(combined);
    auto launch = [&](const rt::CudaRouter &router, CUstream s) {
      router.combine(args, s);
    };
    deviceCall(stream, check, launch, topkWeights, slotPositions, expertOutput,
               combined);
#else
    (void)stream;
    (void)check;
#endif
  }

  /// update_bias (a gating program's update_bias entry): `updated` [E] =
  /// bias [E] moved by the rate against the loads `counts` [E].
  void updateBias(Input bias, Input counts, Tensor updated, uintptr_t stream,
                  bool check) {
    const int64_t e = facts.numExperts;
    if (!facts.updateBias)
      throw InputError("bias: the router has no update_bias entry point (a "
                       "gating program's update_bias(bias, expert_counts))");
    checkTensor("bias", bias, kFloat32, "", {{"E", e, "num_experts"}},
                placement);
    checkTensor("expert_counts", counts, kInt32, "", {{"E", e, "num_experts"}},
                placement);
    checkTensor("updated_bias", updated, kFloat32, "",
                {{"E", e, "num_experts"}}, placement);
#ifdef MOEGEN_PYTHON_COMPILER
    if (cpuRouter) {
      rt::HostUpdateBiasCall call;
      call.bias = static_cast<const float *>(addressOf(bias));
      call.expertCounts = static_cast<const int32_t *>(addressOf(counts));
      call.updatedBias = static_cast<float *>(addressOf(updated));
      hostCall([&] { return cpuRouter->updateBias(call); });
      return;
    }
#endif
#ifdef MOEGEN_HAVE_CUDA_RUNTIME
    rt::UpdateBiasArgs args;
    args.bias = devicePtr(bias);
    args.expertCounts = devicePtr(counts);
    args.updatedBias = devicePtr(updated);
    auto launch = [&](const rt::CudaRouter &router, CUstream s) {
      router.updateBias(args, s);
    };
    deviceCall(stream, check, launch, bias, counts, updated);
#else
    (void)stream;
    (void)check;
#endif
  }

  /// CUDA: waits for `stream` and raises the first input error its kernels
  /// recorded since the last launch (after calls made with check=False).
  void checkErrors(uintptr_t stream) {
#ifdef MOEGEN_HAVE_CUDA_RUNTIME
    if (const rt::CudaRouter *router = device())
      cudaCall([&] { router->checkErrors(reinterpret_cast<CUstream>(stream)); });
#else
    (void)stream;
#endif
  }

private:
  Router() = default;

  std::vector<std::pair<Code, int>> hiddenTypes() const {
    switch (facts.hidden) {
    case rt::RouterFacts::Logits::F32:
      return kFloat32;
    case rt::RouterFacts::Logits::F16:
      return {{Code::Float, 16}};
    case rt::RouterFacts::Logits::BF16:
      return {{Code::Bfloat, 16}, {Code::UInt, 16}};
    }
    return kFloat32;
  }
  std::string hiddenWhy() const {
    return facts.hidden == rt::RouterFacts::Logits::F32   ? " (hidden_dtype: f32)"
           : facts.hidden == rt::RouterFacts::Logits::F16 ? " (hidden_dtype: f16)"
                                                          : " (hidden_dtype: bf16, or its bits as uint16)";
  }

  /// The checks of a [T, H] hidden tensor, and (T, H).
  std::pair<int64_t, int64_t> checkRows(const std::string &name,
                                        const Input &rows) const {
    if (!facts.permute)
      throw InputError(name + ": the spec has no permute and combine entry "
                              "points (set permute: true)");
    checkTensor(name, rows, hiddenTypes(), hiddenWhy(),
                {{"T", std::nullopt, "tokens"}, {"H", std::nullopt, "hidden size"}},
                placement);
    const int64_t t = int64_t(rows.shape(0)), h = int64_t(rows.shape(1));
    if (t > std::numeric_limits<int32_t>::max() / facts.topK)
      throw InputError(name + ": T = " + std::to_string(t) +
                       " tokens: T * top_k must fit in int32");
    return {t, h};
  }

  /// A host router call without the GIL: its one-line error, if any, raised.
  template <typename F> void hostCall(F &&f) {
    std::string error;
    {
      nb::gil_scoped_release release;
      error = f();
    }
    if (!error.empty())
      throw InputError(error);
  }

  std::pair<std::vector<std::pair<Code, int>>, std::string> logitsRule() const {
    switch (facts.logits) {
    case rt::RouterFacts::Logits::F32:
      return {kFloat32, " (logits_dtype: f32)"};
    case rt::RouterFacts::Logits::F16:
      return {{{Code::Float, 16}}, " (logits_dtype: f16)"};
    case rt::RouterFacts::Logits::BF16:
      // NumPy has no bfloat16: its raw bits as uint16 are accepted too.
      return {{{Code::Bfloat, 16}, {Code::UInt, 16}},
              " (logits_dtype: bf16, or its bits as uint16)"};
    }
    return {kFloat32, ""};
  }

  void checkDispatchOutputs(int64_t t, const Tensor &counts,
                            const Tensor &offsets, const Tensor &sortedSlots,
                            const Tensor &slotPositions) const {
    const int64_t e = facts.numExperts, k = facts.topK;
    checkTensor("expert_counts", counts, kInt32, "", {{"E", e, "num_experts"}},
                placement);
    checkTensor("expert_offsets", offsets, kInt32, "",
                {{"E + 1", e + 1, "num_experts + 1"}}, placement);
    checkTensor("sorted_slots", sortedSlots, kInt32, "",
                {{"T * k", t * k, "slots"}}, placement);
    checkTensor("slot_positions", slotPositions, kInt32, "",
                {{"T * k", t * k, "slots"}}, placement);
  }

#ifdef MOEGEN_HAVE_CUDA_RUNTIME
  template <typename T> static CUdeviceptr devicePtr(const T &t) {
    return reinterpret_cast<CUdeviceptr>(t.data());
  }
  /// Launches on the device router (the GPU's, or the emulator's with
  /// `tensors` registered as its memory for the call) on `stream`, then,
  /// when `check`, waits and raises the kernels' first input error.
  template <typename F, typename... Ts>
  void deviceCall(uintptr_t stream, bool check, F &&launch,
                  const Ts &...tensors) {
    const rt::CudaRouter &router = *device();
    EmulatorMemory memory(emulated != nullptr);
    (memory.add(tensors), ...);
    CUstream s = reinterpret_cast<CUstream>(stream);
    cudaCall([&] {
      launch(router, s);
      if (check)
        router.checkErrors(s);
    });
  }
  template <typename F> void cudaCall(F &&f) {
    std::string message;
    bool input = false;
    {
      nb::gil_scoped_release release;
      try {
        f();
      } catch (const rt::Error &e) {
        message = e.what();
        input = e.kind() == rt::Error::Kind::Kernel ||
                e.kind() == rt::Error::Kind::InvalidArgument;
      }
    }
    if (message.empty())
      return;
    if (input)
      throw InputError(message);
    throw MoegenError(message);
  }
  std::unique_ptr<rt::CudaRouter> cudaRouter;

  /// The CUDA router calls launch on: the device's, or the emulator's.
  const rt::CudaRouter *device() const {
#ifdef MOEGEN_HAVE_GPU_EMU
    if (emulated)
      return gpuemu::emulatedDevice(*emulated);
#endif
    return cudaRouter.get();
  }
#endif

  /// The emulator's view of a call's tensors: each registered as device
  /// memory while the call runs (gpu-emu only; a no-op otherwise).
  class EmulatorMemory {
  public:
    explicit EmulatorMemory(bool active) : active(active) {}
    template <typename T> EmulatorMemory &add(const T &t) {
#ifdef MOEGEN_HAVE_GPU_EMU
      if (active && t.data())
        ranges.push_back(std::make_unique<gpuemu::ScopedDeviceMemory>(
            t.data(), t.nbytes()));
#endif
      return *this;
    }
    template <typename T> EmulatorMemory &add(const std::optional<T> &t) {
      return t ? add(*t) : *this;
    }

  private:
    bool active;
#ifdef MOEGEN_HAVE_GPU_EMU
    std::vector<std::unique_ptr<gpuemu::ScopedDeviceMemory>> ranges;
#endif
  };

  /// gpu-emu: the emulated router (its kernels and the CudaRouter under it).
  std::unique_ptr<rt::HostRouter> emulated;

  std::string backendName;
  rt::RouterFacts facts;
  std::string hash;
  std::string canonical;
  Placement placement;
#ifdef MOEGEN_PYTHON_COMPILER
  RoutingSpec routingSpec;
  unsigned threads = 0;
  /// The heuristic's router, and the tuned ones by configuration.
  std::unique_ptr<cpu::CpuRouter> cpuRouter;
  std::map<std::string, std::unique_ptr<cpu::CpuRouter>> tunedRouters;
  std::optional<tune::TuningDb> tuning;
  tune::Origin tuningOrigin;
  std::string tuningPath;
  std::string lastSource = "the heuristic's";

#ifdef MOEGEN_HAVE_CUDA_RUNTIME
  static std::string deviceName(const rt::CudaDriver &driver, int ordinal) {
    return driver.deviceInfo(ordinal).name;
  }
  static std::string deviceArch(const rt::CudaDriver &driver, int ordinal) {
    const rt::CudaDriver::DeviceInfo info = driver.deviceInfo(ordinal);
    return nvptx::archForComputeCapability(info.major, info.minor);
  }
  /// The tuning database's GPU schedules for this spec on the device
  /// `deviceName` (arch `arch`) and this build: several as token buckets
  /// (a route kernel per bucket), one pinned in `compile`, none leaving
  /// the heuristic's. Throws InputError for a database that cannot be read.
  void gpuTuning(const std::string &path, const std::string &backend,
                 const std::string &deviceName, const std::string &arch,
                 nvptx::NvptxCompileOptions &compile,
                 std::vector<nvptx::BucketSchedule> &buckets) {
    std::string error;
    std::optional<tune::TuningDb> db = tune::TuningDb::load(path, error);
    if (!db)
      throw InputError(error);
    tune::Origin origin;
    origin.backend = backend;
    origin.machine = deviceName + ", " + arch;
    origin.compilerVersion =
        std::string(MOEGEN_VERSION) + "+codegen." + jit::codegenFingerprint();
    buckets = jit::bucketSchedules(db->gpuBuckets(hash, origin), routingSpec,
                                   path, error);
    if (!error.empty())
      throw InputError(error);
    if (buckets.size() == 1) {
      compile.lanesPerToken = buckets[0].lanesPerToken;
      compile.tokensPerBlock = buckets[0].tokensPerBlock;
      compile.topk = buckets[0].topk;
      compile.scheduleNote = buckets[0].note;
    }
  }
#endif

  /// The CPU router for a call of `t` tokens: the tuning database's
  /// configuration for its bucket (compiled on first use), else the
  /// heuristic's, as `moegen run --tuning-db` chooses.
  cpu::CpuRouter *cpuRouterFor(int64_t t) {
    lastSource = "the heuristic's";
    if (!tuning)
      return cpuRouter.get();
    const tune::Entry *entry = tuning->lookup(hash, tuningOrigin, t);
    if (!entry) {
      lastSource = "the heuristic's: " + tuningPath +
                   " has no entry for this spec on this machine and build";
      return cpuRouter.get();
    }
    if (std::string why =
            tune::checkCpuConfig(entry->config);
        !why.empty())
      throw InputError(tuningPath + ": error: the entry for " +
                       routingSpec.name + " at T = " +
                       std::to_string(entry->tokens) + ": " + why);
    lastSource = "tuned for T = " + std::to_string(entry->tokens) + " in " +
                 tuningPath;
    const std::string key = entry->config.describe();
    auto found = tunedRouters.find(key);
    if (found != tunedRouters.end())
      return found->second.get();
    cpu::CpuCompileOptions options;
    options.threads = threads;
    options.vectorWidth = entry->config.vectorWidth;
    options.tokensPerTask = entry->config.tokensPerTask;
    options.topk = entry->config.topk;
    auto compiled = cpu::CpuRouter::compile(routingSpec, options);
    if (!compiled)
      throw MoegenError(routingSpec.name +
                        ": internal error: the CPU backend cannot compile the "
                        "tuned configuration " + key + ": " +
                        llvm::toString(compiled.takeError()));
    return tunedRouters.emplace(key, std::move(*compiled)).first->second.get();
  }
#endif
};

} // namespace
} // namespace moegen::python

NB_MODULE(_moegen, m) {
  using namespace moegen::python;
  m.doc() = "moegen's native routers (use the moegen package, not this)";
  // Routers registered for the torch ops live until the interpreter exits,
  // after the module's types: not leaks worth a warning.
  nb::set_leak_warnings(false);
  nb::exception<MoegenError>(m, "Error", PyExc_RuntimeError);
  nb::exception<InputError>(m, "InputError", PyExc_ValueError);
  m.attr("version") = MOEGEN_VERSION;
#ifdef MOEGEN_HAVE_CUDA_RUNTIME
  m.attr("has_cuda") = true;
#else
  m.attr("has_cuda") = false;
#endif

#ifdef MOEGEN_PYTHON_COMPILER
  m.attr("has_compiler") = true;
#else
  m.attr("has_compiler") = false;
#endif

  nb::class_<Router>(m, "Router")
#ifdef MOEGEN_PYTHON_COMPILER
      .def(nb::init<const std::string &, bool, const std::string &,
                    const std::string &, unsigned, int, const std::string &>(),
           nb::arg("spec"), nb::arg("is_path"), nb::arg("name"),
           nb::arg("backend"), nb::arg("threads"), nb::arg("device"),
           nb::arg("tuning_db"))
      .def("config", &Router::configFor, nb::arg("tokens"))
#endif
      .def_static("load", &Router::load, nb::arg("directory"),
                  nb::arg("device"))
      .def_prop_ro("facts", &Router::factsAsDict)
      .def_prop_ro("backend", &Router::backend)
      .def_prop_ro("spec", &Router::spec)
      .def("run", &Router::run, nb::arg("logits"), nb::arg("bias").none(),
           nb::arg("token_ids").none(), nb::arg("hash_table").none(),
           nb::arg("forced_ids").none(), nb::arg("capture").none(),
           nb::arg("capture_layer"), nb::arg("topk_ids"),
           nb::arg("topk_weights"), nb::arg("expert_counts").none(),
           nb::arg("expert_offsets").none(), nb::arg("sorted_slots").none(),
           nb::arg("slot_positions").none(), nb::arg("stream"),
           nb::arg("check"), nb::arg("shared_gate_logits").none() = nb::none(),
           nb::arg("shared_gate").none() = nb::none())
      .def("dispatch", &Router::dispatch, nb::arg("topk_ids"),
           nb::arg("expert_counts"), nb::arg("expert_offsets"),
           nb::arg("sorted_slots"), nb::arg("slot_positions"),
           nb::arg("stream"), nb::arg("check"))
      .def("permute", &Router::permute, nb::arg("hidden"),
           nb::arg("sorted_slots"), nb::arg("permuted"), nb::arg("stream"),
           nb::arg("check"))
      .def("combine", &Router::combine, nb::arg("expert_output"),
           nb::arg("topk_weights"), nb::arg("slot_positions"),
           nb::arg("combined"), nb::arg("stream"), nb::arg("check"))
      .def("update_bias", &Router::updateBias, nb::arg("bias"),
           nb::arg("expert_counts"), nb::arg("updated_bias"),
           nb::arg("stream"), nb::arg("check"))
      .def("check_logits", &Router::checkLogits, nb::arg("logits"))
      .def("check_errors", &Router::checkErrors, nb::arg("stream"));
}
