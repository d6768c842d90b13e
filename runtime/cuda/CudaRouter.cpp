//===- CudaRouter.cpp - Launch moegen routing kernels on a stream ---------===//
//
// The manifest drives every launch: a kernel's parameters are bound by name
// from RouteInputs / RouteOutputs, sizes come from the call's T, V, L and
// T*k, and the grid from the launch rule. Everything the host can check
// without touching device memory is checked before the first launch, so a
// bad call launches nothing.
//
//===----------------------------------------------------------------------===//

#include "runtime/cuda/CudaRouter.h"
#include "runtime/Error.h"
#include "runtime/HostRouter.h"
#include "abi/KernelError.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <vector>

namespace moegen::rt {

namespace {

using abi::ArgRole;
using abi::ArgSpec;
using abi::findArg;

constexpr size_t kErrorRecordBytes = moegen::kGpuKernelErrorWords * sizeof(int64_t);
/// Above this, a kernel must opt in to more dynamic shared memory.
constexpr int64_t kDefaultDynamicSharedLimit = 48 * 1024;
constexpr size_t kMaxParams = 64;

[[noreturn]] void invalid(std::string_view entry, const std::string &message) {
  throw Error(Error::Kind::InvalidArgument,
              std::string(entry) + ": " + message);
}

std::string hexPointer(uint64_t value) {
  std::ostringstream os;
  os << "0x" << std::hex << value;
  return os.str();
}

/// The largest kernel binary read; real ones are a few MiB.
constexpr uintmax_t kMaxBinaryBytes = uintmax_t(1) << 30;

/// A kernel binary's bytes; nullopt, with `why` (": ..." or empty), when it
/// cannot be read. Only regular files of at most 1 GiB are read: a FIFO
/// would block or never end, a device never end.
std::optional<std::vector<char>> readFile(const std::string &path,
                                          std::string &why) {
  std::error_code ec;
  std::filesystem::file_status status = std::filesystem::status(path, ec);
  if (!ec && !std::filesystem::is_regular_file(status)) {
    why = ": not a regular file";
    return std::nullopt;
  }
  if (uintmax_t size = std::filesystem::file_size(path, ec);
      !ec && size > kMaxBinaryBytes) {
    why = ": it is larger than 1 GiB";
    return std::nullopt;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return std::nullopt;
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)),
                          std::istreambuf_iterator<char>());
  if (in.bad())
    return std::nullopt;
  return bytes;
}

/// How the catalogue passes a kernel's parameter (the manifest reader has
/// checked every pointer's name against it).
ArgRole argRole(const Kernel &kernel, const Param &param) {
  const ArgSpec *spec = findArg(kernel.entry, param.name);
  return spec ? spec->role : ArgRole::Tensor;
}

/// a * b when it fits in int64 (both >= 0).
std::optional<int64_t> multiply(int64_t a, int64_t b) {
  if (a != 0 && b > std::numeric_limits<int64_t>::max() / a)
    return std::nullopt;
  return a * b;
}

/// The values the symbolic dimensions take in one call.
struct Extents {
  int64_t tokens = 0;
  int64_t vocab = 0;
  int64_t layers = 0;
  int64_t slots = 0;
  int64_t hidden = 0;

  int64_t resolve(const Dim &dim) const {
    switch (dim.symbol) {
    case Dim::Symbol::None:
      return dim.extent;
    case Dim::Symbol::T:
      return tokens;
    case Dim::Symbol::V:
      return vocab;
    case Dim::Symbol::L:
      return layers;
    case Dim::Symbol::TK:
      return slots;
    case Dim::Symbol::H:
      return hidden;
    }
    return 0;
  }
};

/// One checked launch: the parameter values and the grid (0: no launch).
struct LaunchPlan {
  const Kernel *kernel = nullptr;
  std::array<uint64_t, 64> values{};
  int64_t grid = 0;
};

/// The tensors of one launch by their manifest names.
struct Binding {
  std::string_view name;
  CUdeviceptr pointer;
};

} // namespace

//===----------------------------------------------------------------------===//
// DeviceBuffer and RouteBuffers
//===----------------------------------------------------------------------===//

DeviceBuffer::DeviceBuffer(const CudaDriver &driver, CUcontext context,
                           size_t bytes)
    : driver(&driver), context(context), bytes(bytes) {
  if (bytes == 0)
    return;
  ScopedContext scope(driver, context);
  CUresult result = driver.memAlloc(&pointer, bytes);
  if (result != CUDA_SUCCESS)
    throw Error(Error::Kind::Driver, "cuMemAlloc(" + std::to_string(bytes) +
                                         " bytes): " + driver.describe(result));
}

DeviceBuffer::~DeviceBuffer() { release(); }

DeviceBuffer::DeviceBuffer(DeviceBuffer &&other) noexcept
    : driver(other.driver), context(other.context), pointer(other.pointer),
      bytes(other.bytes) {
  other.pointer = 0;
  other.bytes = 0;
}

DeviceBuffer &DeviceBuffer::operator=(DeviceBuffer &&other) noexcept {
  if (this != &other) {
    release();
    driver = other.driver;
    context = other.context;
    pointer = other.pointer;
    bytes = other.bytes;
    other.pointer = 0;
    other.bytes = 0;
  }
  return *this;
}

void DeviceBuffer::release() {
  if (!pointer)
    return;
  try {
    ScopedContext scope(*driver, context);
    driver->memFree(pointer);
  } catch (...) {
    // A destructor must not throw; the context is gone with its memory.
  }
  pointer = 0;
}

void DeviceBuffer::upload(const void *host, size_t size,
                          CUstream stream) const {
  if (size > bytes)
    throw Error(Error::Kind::InvalidArgument,
                "upload of " + std::to_string(size) +
                    " bytes into a buffer of " + std::to_string(bytes));
  if (!size)
    return;
  ScopedContext scope(*driver, context);
  driver->check(driver->memcpyHtoDAsync(pointer, host, size, stream),
                "cuMemcpyHtoDAsync");
  driver->check(driver->streamSynchronize(stream), "cuStreamSynchronize");
}

void DeviceBuffer::download(void *host, size_t size, CUstream stream) const {
  if (size > bytes)
    throw Error(Error::Kind::InvalidArgument,
                "download of " + std::to_string(size) +
                    " bytes from a buffer of " + std::to_string(bytes));
  if (!size)
    return;
  ScopedContext scope(*driver, context);
  driver->check(driver->memcpyDtoHAsync(host, pointer, size, stream),
                "cuMemcpyDtoHAsync");
  driver->check(driver->streamSynchronize(stream), "cuStreamSynchronize");
}

RouteOutputs RouteBuffers::outputs() const {
  RouteOutputs out;
  out.topkIds = ids.get();
  out.topkWeights = weights.get();
  out.sharedGate = sharedGate.get();
  out.expertCounts = counts.get();
  out.expertOffsets = offsets.get();
  out.sortedSlots = slots.get();
  out.slotPositions = positions.get();
  out.error = error.get();
  return out;
}

//===----------------------------------------------------------------------===//
// CudaRouter
//===----------------------------------------------------------------------===//

struct CudaRouter::Impl {
  const CudaDriver *driver = nullptr;
  Manifest manifest;
  CUcontext context = nullptr;
  CUdevice device = 0;
  bool retainedPrimary = false;
  int major = 0, minor = 0;
  CUmodule module = nullptr;
  const char *binaryKind = "";
  /// One per manifest kernel, in its order (an entry point may have a
  /// kernel per token bucket).
  std::vector<CUfunction> functions;
  DeviceBuffer ownError;
  /// The cooperative kernels' scratch (abi::dispatchScratchWords,
  /// abi::expertChoiceScratchWords), as large as the largest, allocated
  /// and zeroed once at load; the grid barrier leaves it ready for the
  /// next call.
  DeviceBuffer scratch;
  size_t scratchBytes = 0;
  int multiprocessors = 0;
  bool checkBounds = true;
  bool fusedDispatch = true;

  ~Impl();
  void loadModule(const LoadOptions &options);
  /// The entry point's kernel for `tokens` tokens (its bucket's, when it
  /// has several); throws when the manifest has none.
  const Kernel &kernelFor(EntryKind entry, int64_t tokens = 0) const;
  CUfunction functionOf(const Kernel &kernel) const {
    return functions[size_t(&kernel - manifest.kernels.data())];
  }
  void checkStream(std::string_view entry, CUstream stream) const;
  void checkPointer(std::string_view entry, std::string_view name,
                    CUdeviceptr pointer, DType dtype, int64_t elements) const;
  LaunchPlan prepare(const Kernel &kernel, const std::vector<Binding> &tensors,
                     const Extents &extents, int64_t layer,
                     CUdeviceptr error) const;
  void submit(LaunchPlan &plan, CUstream stream) const;
  void checkRowCall(EntryKind entry, const RouteInputs &in,
                    const RouteOutputs &out, Extents &extents) const;
  void run(EntryKind entry, const RouteInputs &in, const RouteOutputs &out,
           CUstream stream) const;
  std::vector<Binding> dispatchBindings(CUdeviceptr ids,
                                        const RouteOutputs &out) const;
  /// The kernel with a fused dispatch that serves `tokens` tokens, or null.
  const Kernel *fusedKernel(EntryKind entry, int64_t tokens) const {
    const Kernel *fused = fusedDispatch ? manifest.findFused(entry) : nullptr;
    return fused && tokens > 0 &&
                   tokens <= fused->fusedDispatchMaxSlots / manifest.topK
               ? fused
               : nullptr;
  }
  /// Permute or combine: checks, zeroes the record, launches once.
  void runRowMovement(EntryKind entry, int64_t numTokens, int64_t hiddenSize,
                      const std::vector<Binding> &tensors, CUdeviceptr record,
                      CUstream stream) const;
};

CudaRouter::Impl::~Impl() {
  try {
    if (module) {
      ScopedContext scope(*driver, context);
      driver->moduleUnload(module);
    }
    ownError = DeviceBuffer();
    scratch = DeviceBuffer();
  } catch (...) {
  }
  if (retainedPrimary)
    driver->devicePrimaryCtxRelease(device);
}

void CudaRouter::Impl::loadModule(const LoadOptions &options) {
  const Arch &arch = manifest.arch;
  char name[256] = {0};
  if (driver->deviceGetName(name, sizeof name - 1, device) != CUDA_SUCCESS)
    std::strcpy(name, "unknown device");
  const std::string deviceText =
      std::string(name) + ", sm_" + std::to_string(major) +
      std::to_string(minor) + " (compute capability " + std::to_string(major) +
      "." + std::to_string(minor) + ")";
  const bool cubinOk = !manifest.cubinPath.empty() && !options.preferPtx &&
                       arch.cubinRunsOn(major, minor);
  const bool ptxOk = !manifest.ptxPath.empty() && arch.ptxRunsOn(major, minor);
  if (!cubinOk && !ptxOk) {
    std::string why;
    if (manifest.ptxPath.empty())
      why = "the cubin runs only on compute capability " +
            std::to_string(arch.major) + "." +
            (arch.suffix == 'a' ? std::to_string(arch.minor)
                                : "x with x >= " + std::to_string(arch.minor)) +
            ", and the manifest has no PTX for the driver to JIT-compile";
    else if (manifest.cubinPath.empty() || options.preferPtx)
      why = "PTX for " + manifest.archText +
            " JIT-compiles only for the same or a newer compute capability" +
            (arch.suffix ? std::string(" of the same architecture") : "");
    else
      why = "neither the cubin nor the PTX for " + manifest.archText +
            " runs on it";
    throw Error(Error::Kind::Arch,
                manifest.path + ": arch: the kernels are for " +
                    manifest.archText + ", but the device is " + deviceText +
                    ": " + why + " (recompile with --arch sm_" +
                    std::to_string(major) + std::to_string(minor) + ")");
  }

  CUresult result = CUDA_ERROR_UNKNOWN;
  std::string cubinFailure;
  if (cubinOk) {
    std::string why;
    std::optional<std::vector<char>> image = readFile(manifest.cubinPath, why);
    if (!image)
      throw Error(Error::Kind::Io,
                  manifest.cubinPath + ": cannot read the cubin" + why);
    // An ELF cubin carries its size; the NUL makes a text image (PTX saved
    // as "cubin") terminated too, as cuModuleLoadData requires.
    image->push_back('\0');
    result = driver->moduleLoadData(&module, image->data());
    if (result == CUDA_SUCCESS) {
      binaryKind = "cubin";
      return;
    }
    cubinFailure =
        manifest.cubinPath + ": cuModuleLoadData: " + driver->describe(result);
    if (!ptxOk)
      throw Error(Error::Kind::Driver, cubinFailure);
  }
  std::string why;
  std::optional<std::vector<char>> ptx = readFile(manifest.ptxPath, why);
  if (!ptx)
    throw Error(Error::Kind::Io,
                manifest.ptxPath + ": cannot read the PTX" + why);
  ptx->push_back('\0');
  std::vector<char> log(16384, '\0');
  std::array<CUjit_option, 2> keys = {CU_JIT_ERROR_LOG_BUFFER,
                                      CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
  std::array<void *, 2> values = {
      log.data(), reinterpret_cast<void *>(uintptr_t(log.size() - 1))};
  result = driver->moduleLoadDataEx(&module, ptx->data(), unsigned(keys.size()),
                                    keys.data(), values.data());
  if (result != CUDA_SUCCESS) {
    std::string text(log.data());
    for (char &c : text)
      if (c == '\n')
        c = ' ';
    if (text.size() > 400)
      text = text.substr(0, 400) + "...";
    throw Error(
        Error::Kind::Driver,
        manifest.ptxPath + ": the driver's PTX JIT failed for " + deviceText +
            ": " + driver->describe(result) +
            (text.empty() ? "" : ": " + text) +
            (cubinFailure.empty() ? "" : " (after " + cubinFailure + ")"));
  }
  binaryKind = "ptx";
}

const Kernel &CudaRouter::Impl::kernelFor(EntryKind entry,
                                          int64_t tokens) const {
  const Kernel *kernel = manifest.findFor(entry, tokens);
  if (!kernel) {
    std::string entries;
    for (const Kernel &k : manifest.kernels)
      entries += std::string(entries.empty() ? "" : ", ") +
                 std::string(toString(k.entry));
    invalid(toString(entry), "the kernels of spec '" + manifest.specName +
                                 "' (" + manifest.path + ") have no " +
                                 std::string(toString(entry)) +
                                 " entry point (they have " + entries + ")");
  }
  return *kernel;
}

void CudaRouter::Impl::checkStream(std::string_view entry,
                                   CUstream stream) const {
  CUcontext streamContext = nullptr;
  CUresult result = driver->streamGetCtx(stream, &streamContext);
  if (result != CUDA_SUCCESS)
    invalid(entry, "cannot query the stream's context (cuStreamGetCtx: " +
                       driver->describe(result) + ")");
  if (streamContext != context)
    invalid(entry, "the stream belongs to CUDA context " +
                       hexPointer(uintptr_t(streamContext)) +
                       ", not to the context the kernels were loaded in (" +
                       hexPointer(uintptr_t(context)) + ")");
}

void CudaRouter::Impl::checkPointer(std::string_view entry,
                                    std::string_view name, CUdeviceptr pointer,
                                    DType dtype, int64_t elements) const {
  if (!pointer) {
    if (elements == 0)
      return;
    invalid(entry, std::string(name) + " is required (null device pointer)");
  }
  if (pointer % byteSize(dtype))
    invalid(entry, std::string(name) + " = " + hexPointer(pointer) +
                       " is not aligned to its " +
                       std::to_string(byteSize(dtype)) + "-byte elements");
  if (!checkBounds || elements == 0)
    return;
  const uint64_t bytes = uint64_t(elements) * byteSize(dtype);
  unsigned memoryType = 0;
  CUdeviceptr start = 0;
  size_t size = 0;
  std::array<CUpointer_attribute, 3> attributes = {
      CU_POINTER_ATTRIBUTE_MEMORY_TYPE, CU_POINTER_ATTRIBUTE_RANGE_START_ADDR,
      CU_POINTER_ATTRIBUTE_RANGE_SIZE};
  std::array<void *, 3> data = {&memoryType, &start, &size};
  CUresult result = driver->pointerGetAttributes(
      unsigned(attributes.size()), attributes.data(), data.data(), pointer);
  if (result != CUDA_SUCCESS)
    invalid(entry, std::string(name) + " = " + hexPointer(pointer) +
                       ": cuPointerGetAttributes: " + driver->describe(result));
  if (memoryType == 0)
    invalid(entry, std::string(name) + " = " + hexPointer(pointer) +
                       " is not memory the CUDA driver knows (pass device "
                       "pointers)");
  if (size == 0) // The driver cannot tell the allocation's extent.
    return;
  if (pointer < start || pointer - start + bytes > size)
    invalid(entry,
            std::string(name) + " needs " + std::to_string(bytes) +
                " bytes from " + hexPointer(pointer) +
                ", but its allocation holds only " +
                std::to_string(pointer < start ? 0 : size - (pointer - start)) +
                " from there");
}

LaunchPlan CudaRouter::Impl::prepare(const Kernel &kernel,
                                     const std::vector<Binding> &tensors,
                                     const Extents &extents, int64_t layer,
                                     CUdeviceptr error) const {
  const std::string_view entry = toString(kernel.entry);
  LaunchPlan plan;
  plan.kernel = &kernel;
  for (size_t i = 0; i < kernel.params.size(); ++i) {
    const Param &param = kernel.params[i];
    switch (param.kind) {
    case ParamKind::Pointer: {
      CUdeviceptr pointer = 0;
      const ArgRole role = argRole(kernel, param);
      if (role == ArgRole::ErrorRecord) {
        pointer = error;
      } else if (role == ArgRole::Scratch) {
        pointer = scratch.get();
      } else {
        for (const Binding &binding : tensors)
          if (binding.name == param.name)
            pointer = binding.pointer;
      }
      int64_t elements = 1;
      for (const Dim &dim : param.shape) {
        std::optional<int64_t> product =
            multiply(elements, extents.resolve(dim));
        if (!product || *product > std::numeric_limits<int64_t>::max() / 8)
          invalid(entry, param.name + " is too large");
        elements = *product;
      }
      checkPointer(entry, param.name, pointer, param.dtype, elements);
      plan.values[i] = pointer;
      break;
    }
    case ParamKind::Size:
      plan.values[i] = uint64_t(
          extents.resolve(kernel.params[param.ofParam].shape[param.dim]));
      break;
    case ParamKind::Scalar:
      plan.values[i] = uint64_t(layer);
      break;
    }
  }
  if (kernel.launch.cooperative)
    plan.grid = abi::cooperativeGridDim(extents.slots,
                                        kernel.launch.slotsPerBlock,
                                        kernel.launch.maxGridDim,
                                        multiprocessors);
  else if (kernel.launch.tokensPerBlock > 0)
    plan.grid = (extents.tokens + kernel.launch.tokensPerBlock - 1) /
                kernel.launch.tokensPerBlock;
  else
    plan.grid = 1;
  return plan;
}

void CudaRouter::Impl::submit(LaunchPlan &plan, CUstream stream) const {
  if (plan.grid == 0)
    return;
  const Kernel &kernel = *plan.kernel;
  std::array<void *, kMaxParams> pointers{};
  for (size_t i = 0; i < kernel.params.size(); ++i)
    pointers[i] = &plan.values[i];
  const bool cooperative = kernel.launch.cooperative;
  CUresult result =
      cooperative
          ? driver->launchCooperativeKernel(
                functionOf(kernel), unsigned(plan.grid), 1, 1,
                unsigned(kernel.launch.blockDim), 1, 1,
                unsigned(kernel.launch.dynamicSharedMemoryBytes), stream,
                pointers.data())
          : driver->launchKernel(
                functionOf(kernel), unsigned(plan.grid), 1, 1,
                unsigned(kernel.launch.blockDim), 1, 1,
                unsigned(kernel.launch.dynamicSharedMemoryBytes), stream,
                pointers.data(), nullptr);
  if (result != CUDA_SUCCESS)
    throw Error(Error::Kind::Driver,
                std::string(toString(kernel.entry)) +
                    (cooperative ? ": cuLaunchCooperativeKernel("
                                 : ": cuLaunchKernel(") +
                    kernel.symbol + ", grid " + std::to_string(plan.grid) +
                    ", block " + std::to_string(kernel.launch.blockDim) +
                    "): " + driver->describe(result));
}

void CudaRouter::Impl::checkRowCall(EntryKind entry, const RouteInputs &in,
                                    const RouteOutputs &out,
                                    Extents &extents) const {
  const std::string_view name = toString(entry);
  const Kernel &kernel = kernelFor(entry);
  const int64_t k = manifest.topK;
  if (in.numTokens < 0)
    invalid(name,
            "num_tokens = " + std::to_string(in.numTokens) + " must be >= 0");
  if (in.numTokens > std::numeric_limits<int32_t>::max() / k)
    invalid(name, "num_tokens * top_k = " + std::to_string(in.numTokens) +
                      " * " + std::to_string(k) + " must fit in int32");
  auto unused = [&](bool given, const char *tensor, const std::string &why) {
    if (given)
      invalid(name, std::string(tensor) + " given, but " + why);
  };
  const bool takesBias = kernel.findParam("bias") >= 0;
  const bool takesCapture = kernel.findParam("capture") >= 0;
  const bool takesSharedGate = kernel.findParam("shared_gate_logits") >= 0;
  unused((in.sharedGateLogits || out.sharedGate) && !takesSharedGate,
         "shared_gate_logits / shared_gate",
         "this " + std::string(name) +
             " kernel gates no shared expert (the spec has no "
             "shared_expert_gate: true)");
  // Empty tensors (T = 0) may have null pointers.
  if (takesSharedGate && in.numTokens > 0 &&
      (!in.sharedGateLogits || !out.sharedGate))
    invalid(name, "shared_gate_logits and shared_gate are required: this "
                  "kernel gates the shared expert (the spec has "
                  "shared_expert_gate: true)");
  unused(
      in.bias && !takesBias, "bias",
      "this " + std::string(name) + " kernel takes none" +
          (entry == EntryKind::Route ? " (the spec has no score_bias)" : ""));
  unused((in.tokenIds || in.hashTable) && entry != EntryKind::RouteHash,
         "token_ids / hash_table",
         "only route_hash takes them (call routeHash)");
  unused(in.forcedIds && entry != EntryKind::Replay, "forced_ids",
         "only replay takes them (call replay)");
  unused(in.capture && !takesCapture, "capture",
         "this " + std::string(name) +
             " kernel writes no capture (the spec "
             "has no capture: true)");
  if (entry == EntryKind::RouteHash && in.hashVocab < 0)
    invalid(name,
            "hash_vocab = " + std::to_string(in.hashVocab) + " must be >= 0");
  if (takesCapture) {
    // An empty buffer (T = 0) may have a null pointer, as any empty tensor.
    if (!in.capture && in.numTokens > 0)
      invalid(name, "capture is required: this kernel writes the chosen ids "
                    "to a [T, layers, k] capture buffer (the spec has "
                    "capture: true)");
    if (in.captureLayers < 1)
      invalid(name, "capture_layers = " + std::to_string(in.captureLayers) +
                        " must be >= 1");
  }
  if (out.hasDispatch()) {
    // The [T * k] outputs of an empty call may be null, as any empty tensor.
    if (!out.expertCounts || !out.expertOffsets ||
        (in.numTokens > 0 && (!out.sortedSlots || !out.slotPositions)))
      invalid(name, "expert_counts, expert_offsets, sorted_slots and "
                    "slot_positions go together: give all four or none");
    kernelFor(EntryKind::Dispatch);
  }
  extents.tokens = in.numTokens;
  extents.vocab = entry == EntryKind::RouteHash ? in.hashVocab : 0;
  extents.layers = takesCapture ? in.captureLayers : 0;
  extents.slots = in.numTokens * k;
}

std::vector<Binding>
CudaRouter::Impl::dispatchBindings(CUdeviceptr ids,
                                   const RouteOutputs &out) const {
  return {{"topk_ids", ids},
          {"expert_counts", out.expertCounts},
          {"expert_offsets", out.expertOffsets},
          {"sorted_slots", out.sortedSlots},
          {"slot_positions", out.slotPositions}};
}

void CudaRouter::Impl::run(EntryKind entry, const RouteInputs &in,
                           const RouteOutputs &out, CUstream stream) const {
  Extents extents;
  checkRowCall(entry, in, out, extents);
  const Kernel &kernel = kernelFor(entry, in.numTokens);
  ScopedContext scope(*driver, context);
  checkStream(toString(entry), stream);
  const CUdeviceptr error = out.error ? out.error : ownError.get();
  const std::vector<Binding> tensors = {
      {"logits", in.logits},        {"bias", in.bias},
      {"token_ids", in.tokenIds},   {"hash_table", in.hashTable},
      {"forced_ids", in.forcedIds}, {"capture", in.capture},
      {"topk_ids", out.topkIds},    {"topk_weights", out.topkWeights},
      {"shared_gate_logits", in.sharedGateLogits},
      {"shared_gate", out.sharedGate}};
  // A small call that also dispatches: one kernel routes and sorts.
  if (out.hasDispatch())
    if (const Kernel *fused = fusedKernel(entry, in.numTokens)) {
      std::vector<Binding> both = tensors;
      for (const Binding &binding : dispatchBindings(out.topkIds, out))
        if (binding.name != "topk_ids")
          both.push_back(binding);
      LaunchPlan plan = prepare(*fused, both, extents, in.captureLayer, error);
      submit(plan, stream);
      return;
    }
  // Both launches are checked before either is submitted.
  LaunchPlan plan = prepare(kernel, tensors, extents, in.captureLayer, error);
  std::optional<LaunchPlan> dispatchPlan;
  if (out.hasDispatch())
    dispatchPlan =
        prepare(kernelFor(EntryKind::Dispatch),
                dispatchBindings(out.topkIds, out), extents, 0, error);
  submit(plan, stream);
  if (dispatchPlan)
    submit(*dispatchPlan, stream);
}

CudaRouter::CudaRouter(std::unique_ptr<Impl> impl) : impl(std::move(impl)) {}
CudaRouter::~CudaRouter() = default;

std::unique_ptr<CudaRouter> CudaRouter::load(const std::string &directory,
                                             const LoadOptions &options) {
  auto impl = std::make_unique<Impl>();
  impl->driver = options.driver ? options.driver : &CudaDriver::get();
  impl->checkBounds = options.checkBufferBounds;
  impl->fusedDispatch = options.fusedDispatch;
  impl->manifest = loadManifest(directory);
  const CudaDriver &driver = *impl->driver;
  for (size_t i = 0; i < impl->manifest.kernels.size(); ++i)
    if (impl->manifest.kernels[i].params.size() > kMaxParams)
      throw Error(Error::Kind::Manifest,
                  impl->manifest.path + ": kernels[" + std::to_string(i) +
                      "].params: more than " + std::to_string(kMaxParams) +
                      " parameters");

  CUcontext current = nullptr;
  driver.check(driver.ctxGetCurrent(&current), "cuCtxGetCurrent");
  if (current) {
    impl->context = current;
    driver.check(driver.ctxGetDevice(&impl->device), "cuCtxGetDevice");
  } else {
    if (options.device < 0 || options.device >= driver.deviceCount())
      throw Error(Error::Kind::InvalidArgument,
                  "CudaRouter::load: device " + std::to_string(options.device) +
                      " does not exist (the driver sees " +
                      std::to_string(driver.deviceCount()) + ")");
    driver.check(driver.deviceGet(&impl->device, options.device),
                 "cuDeviceGet");
    driver.check(driver.devicePrimaryCtxRetain(&impl->context, impl->device),
                 "cuDevicePrimaryCtxRetain");
    impl->retainedPrimary = true;
  }
  ScopedContext scope(driver, impl->context);
  driver.check(driver.deviceGetAttribute(
                   &impl->major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                   impl->device),
               "cuDeviceGetAttribute(compute capability)");
  driver.check(driver.deviceGetAttribute(
                   &impl->minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                   impl->device),
               "cuDeviceGetAttribute(compute capability)");
  impl->loadModule(options);

  const std::string binary = std::string(impl->binaryKind) == "cubin"
                                 ? impl->manifest.cubinPath
                                 : impl->manifest.ptxPath;
  for (size_t i = 0; i < impl->manifest.kernels.size(); ++i) {
    const Kernel &kernel = impl->manifest.kernels[i];
    const std::string key =
        impl->manifest.path + ": kernels[" + std::to_string(i) + "]";
    CUfunction function = nullptr;
    CUresult result = driver.moduleGetFunction(&function, impl->module,
                                               kernel.symbol.c_str());
    if (result != CUDA_SUCCESS)
      throw Error(Error::Kind::Manifest,
                  key + ".symbol: '" + kernel.symbol + "' is not in " + binary +
                      " (cuModuleGetFunction: " + driver.describe(result) +
                      ")");
    const int64_t shared = kernel.launch.dynamicSharedMemoryBytes;
    if (shared > kDefaultDynamicSharedLimit) {
      result = driver.funcSetAttribute(
          function, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
          int(shared));
      if (result != CUDA_SUCCESS) {
        int limit = 0;
        driver.deviceGetAttribute(
            &limit, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
            impl->device);
        throw Error(Error::Kind::Arch,
                    key + ".launch.dynamic_shared_memory_bytes: " +
                        std::to_string(shared) +
                        " bytes, but the device allows at most " +
                        std::to_string(limit) + " per block (" +
                        driver.describe(result) + ")");
      }
    }
    impl->functions.push_back(function);
    if (kernel.launch.cooperative) {
      int supported = 0;
      driver.check(driver.deviceGetAttribute(
                       &supported, CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH,
                       impl->device),
                   "cuDeviceGetAttribute(cooperative launch)");
      if (!supported)
        throw Error(Error::Kind::Arch,
                    key + ".launch.grid_dim: the device does not support "
                          "cooperative launches");
      driver.check(driver.deviceGetAttribute(
                       &impl->multiprocessors,
                       CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, impl->device),
                   "cuDeviceGetAttribute(multiprocessor count)");
    }
    // One buffer serves every kernel with a scratch buffer (the dispatch,
    // an expert-choice route, a route with a fused dispatch): they run one
    // after another on a stream, and each leaves the grid barrier's and
    // the ticket's words as it found them.
    for (const Param &param : kernel.params) {
      if (param.kind != ParamKind::Pointer ||
          argRole(kernel, param) != ArgRole::Scratch)
        continue;
      const size_t bytes =
          size_t(param.shape.at(0).extent) * byteSize(DType::I32);
      if (bytes > impl->scratchBytes) {
        impl->scratch = DeviceBuffer(driver, impl->context, bytes);
        impl->scratchBytes = bytes;
        driver.check(
            driver.memsetD8Async(impl->scratch.get(), 0, bytes, nullptr),
            "cuMemsetD8Async(scratch)");
      }
    }
  }
  impl->ownError = DeviceBuffer(driver, impl->context, kErrorRecordBytes);
  driver.check(
      driver.memsetD8Async(impl->ownError.get(), 0, kErrorRecordBytes, nullptr),
      "cuMemsetD8Async(error record)");
  driver.check(driver.streamSynchronize(nullptr), "cuStreamSynchronize");
  return std::unique_ptr<CudaRouter>(new CudaRouter(std::move(impl)));
}

const Manifest &CudaRouter::manifest() const { return impl->manifest; }
CUcontext CudaRouter::context() const { return impl->context; }
int CudaRouter::deviceMajor() const { return impl->major; }
int CudaRouter::deviceMinor() const { return impl->minor; }
const char *CudaRouter::loadedBinaryKind() const { return impl->binaryKind; }
const CudaDriver &CudaRouter::driver() const { return *impl->driver; }
bool CudaRouter::fusesDispatch(EntryKind entry, int64_t numTokens) const {
  return impl->fusedKernel(entry, numTokens) != nullptr;
}

bool CudaRouter::hasEntry(EntryKind entry) const {
  return impl->manifest.find(entry) != nullptr;
}

void CudaRouter::route(const RouteInputs &inputs, const RouteOutputs &outputs,
                       CUstream stream) const {
  impl->run(EntryKind::Route, inputs, outputs, stream);
}
void CudaRouter::routeHash(const RouteInputs &inputs,
                           const RouteOutputs &outputs, CUstream stream) const {
  impl->run(EntryKind::RouteHash, inputs, outputs, stream);
}
void CudaRouter::replay(const RouteInputs &inputs, const RouteOutputs &outputs,
                        CUstream stream) const {
  impl->run(EntryKind::Replay, inputs, outputs, stream);
}

void CudaRouter::dispatch(CUdeviceptr topkIds, int64_t numTokens,
                          const RouteOutputs &outputs, CUstream stream) const {
  const Kernel &kernel = impl->kernelFor(EntryKind::Dispatch);
  const int64_t k = impl->manifest.topK;
  if (numTokens < 0)
    invalid("dispatch",
            "num_tokens = " + std::to_string(numTokens) + " must be >= 0");
  if (numTokens > std::numeric_limits<int32_t>::max() / k)
    invalid("dispatch", "num_tokens * top_k = " + std::to_string(numTokens) +
                            " * " + std::to_string(k) + " must fit in int32");
  Extents extents;
  extents.tokens = numTokens;
  extents.slots = numTokens * k;
  ScopedContext scope(*impl->driver, impl->context);
  impl->checkStream("dispatch", stream);
  const CUdeviceptr error =
      outputs.error ? outputs.error : impl->ownError.get();
  LaunchPlan plan = impl->prepare(
      kernel, impl->dispatchBindings(topkIds, outputs), extents, 0, error);
  impl->submit(plan, stream);
}

void CudaRouter::Impl::runRowMovement(EntryKind entry, int64_t numTokens,
                                      int64_t hiddenSize,
                                      const std::vector<Binding> &tensors,
                                      CUdeviceptr record,
                                      CUstream stream) const {
  const Kernel &kernel = kernelFor(entry); // throws if the entry is missing
  const std::string name(toString(entry));
  // Only the sizes are left to check: the entry point is there.
  RouterFacts facts;
  facts.topK = manifest.topK;
  facts.permute = true;
  facts.hidden = manifest.hiddenDType == DType::F32   ? RouterFacts::Logits::F32
                 : manifest.hiddenDType == DType::F16 ? RouterFacts::Logits::F16
                                                      : RouterFacts::Logits::BF16;
  if (std::string error =
          checkRowMovementSizes(facts, name.c_str(), numTokens, hiddenSize);
      !error.empty())
    invalid(name, error);
  Extents extents;
  extents.tokens = numTokens;
  extents.slots = numTokens * manifest.topK;
  extents.hidden = hiddenSize;
  ScopedContext scope(*driver, context);
  checkStream(name, stream);
  const CUdeviceptr error = record ? record : ownError.get();
  LaunchPlan plan = prepare(kernel, tensors, extents, 0, error);
  submit(plan, stream);
}

void CudaRouter::permute(const PermuteArgs &args, CUstream stream) const {
  impl->runRowMovement(EntryKind::Permute, args.numTokens, args.hiddenSize,
                       {{"hidden", args.hidden},
                        {"sorted_slots", args.sortedSlots},
                        {"permuted", args.permuted}},
                       args.error, stream);
}

void CudaRouter::combine(const CombineArgs &args, CUstream stream) const {
  impl->runRowMovement(EntryKind::Combine, args.numTokens, args.hiddenSize,
                       {{"topk_weights", args.topkWeights},
                        {"slot_positions", args.slotPositions},
                        {"expert_output", args.expertOutput},
                        {"combined", args.combined}},
                       args.error, stream);
}

void CudaRouter::updateBias(const UpdateBiasArgs &args, CUstream stream) const {
  const Kernel &kernel = impl->kernelFor(EntryKind::UpdateBias);
  ScopedContext scope(*impl->driver, impl->context);
  impl->checkStream("update_bias", stream);
  const CUdeviceptr error = args.error ? args.error : impl->ownError.get();
  LaunchPlan plan = impl->prepare(kernel,
                                  {{"bias", args.bias},
                                   {"expert_counts", args.expertCounts},
                                   {"updated_bias", args.updatedBias}},
                                  Extents{}, 0, error);
  impl->submit(plan, stream);
}

namespace {
void checkCapacity(std::string_view entry, const RouteInputs &inputs,
                   const RouteBuffers &buffers) {
  if (inputs.numTokens > buffers.maxTokens())
    invalid(entry, "num_tokens = " + std::to_string(inputs.numTokens) +
                       " exceeds the buffers' capacity of " +
                       std::to_string(buffers.maxTokens()) + " tokens");
}
} // namespace

RouteOutputs CudaRouter::route(const RouteInputs &inputs,
                               const RouteBuffers &buffers,
                               CUstream stream) const {
  checkCapacity("route", inputs, buffers);
  RouteOutputs outputs = buffers.outputs();
  route(inputs, outputs, stream);
  return outputs;
}
RouteOutputs CudaRouter::routeHash(const RouteInputs &inputs,
                                   const RouteBuffers &buffers,
                                   CUstream stream) const {
  checkCapacity("route_hash", inputs, buffers);
  RouteOutputs outputs = buffers.outputs();
  routeHash(inputs, outputs, stream);
  return outputs;
}
RouteOutputs CudaRouter::replay(const RouteInputs &inputs,
                                const RouteBuffers &buffers,
                                CUstream stream) const {
  checkCapacity("replay", inputs, buffers);
  RouteOutputs outputs = buffers.outputs();
  replay(inputs, outputs, stream);
  return outputs;
}

DeviceBuffer CudaRouter::allocate(size_t bytes) const {
  return DeviceBuffer(*impl->driver, impl->context, bytes);
}

RouteBuffers CudaRouter::allocateBuffers(int64_t maxTokens,
                                         bool withDispatch) const {
  const int64_t k = impl->manifest.topK, e = impl->manifest.numExperts;
  if (maxTokens < 0 || maxTokens > std::numeric_limits<int32_t>::max() / k)
    invalid("allocateBuffers",
            "max_tokens = " + std::to_string(maxTokens) + " must be in [0, " +
                std::to_string(std::numeric_limits<int32_t>::max() / k) +
                "] (num_tokens * top_k must fit in int32)");
  const size_t slots = size_t(maxTokens * k);
  RouteBuffers buffers;
  buffers.capacity = maxTokens;
  buffers.ids = allocate(slots * 4);
  buffers.weights = allocate(slots * 4);
  if (routerFactsOf(impl->manifest).sharedGate)
    buffers.sharedGate = allocate(size_t(maxTokens) * 4);
  if (withDispatch && hasEntry(EntryKind::Dispatch)) {
    buffers.counts = allocate(size_t(e) * 4);
    buffers.offsets = allocate(size_t(e + 1) * 4);
    buffers.slots = allocate(slots * 4);
    buffers.positions = allocate(slots * 4);
  }
  // Records start at zero; the kernels leave them so unless they report.
  buffers.error = allocate(kErrorRecordBytes);
  const CudaDriver &driver = *impl->driver;
  ScopedContext scope(driver, impl->context);
  driver.check(
      driver.memsetD8Async(buffers.error.get(), 0, kErrorRecordBytes, nullptr),
      "cuMemsetD8Async(error record)");
  driver.check(driver.streamSynchronize(nullptr), "cuStreamSynchronize");
  return buffers;
}

std::string CudaRouter::readError(CUstream stream, CUdeviceptr record,
                                  std::string_view context) const {
  const CudaDriver &driver = *impl->driver;
  ScopedContext scope(driver, impl->context);
  CUstreamCaptureStatus status = CU_STREAM_CAPTURE_STATUS_NONE;
  driver.check(driver.streamIsCapturing(stream, &status),
               "cuStreamIsCapturing");
  if (status != CU_STREAM_CAPTURE_STATUS_NONE)
    throw Error(Error::Kind::InvalidArgument,
                "readError: the stream is being captured into a CUDA graph; "
                "read the error record after the graph has run");
  int64_t words[moegen::kGpuKernelErrorWords] = {};
  const CUdeviceptr from = record ? record : impl->ownError.get();
  driver.check(driver.memcpyDtoHAsync(words, from, sizeof words, stream),
               "cuMemcpyDtoHAsync(error record)");
  driver.check(driver.streamSynchronize(stream), "cuStreamSynchronize");
  if (words[kErrorCode] == 0)
    return {};
  // Reported: the record starts again from zero for the calls that follow
  // on this stream (no call zeroes it; the kernels only ever move it
  // towards the earliest violation).
  driver.check(driver.memsetD8Async(from, 0, kErrorRecordBytes, stream),
               "cuMemsetD8Async(error record)");
  std::string message =
      formatKernelError(words, impl->manifest.numExperts, "topk_ids");
  return context.empty() ? message : std::string(context) + ": " + message;
}

void CudaRouter::checkErrors(CUstream stream, CUdeviceptr record,
                             std::string_view context) const {
  std::string message = readError(stream, record, context);
  if (!message.empty())
    throw Error(Error::Kind::Kernel, message);
}

} // namespace moegen::rt
