//===- EmuCudaDriver.cpp - The GPU emulator as a CUDA driver --------------===//
//
// Each cu* entry point below implements the CUDA 12.0 form of its namesake
// over host memory; see EmuCudaDriver.h for what is modelled. Tables
// (modules, functions, streams, allocations) are guarded by one mutex;
// launches run one at a time, outside it.
//
//===----------------------------------------------------------------------===//

#include "compiler/backend/gpuemu/EmuCudaDriver.h"

#include "runtime/cuda/CudaDriver.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <sstream>

#include <unistd.h>

namespace moegen::gpuemu {

namespace {

constexpr const char *kDriverName = "moegen GPU emulator";
constexpr int kDriverVersion = 12080;
constexpr const char *kDeviceName = "moegen GPU emulator (sm_90)";
constexpr int kComputeCapabilityMajor = 9;
constexpr int kComputeCapabilityMinor = 0;
constexpr int kWarpSize = 32;
constexpr int kMaxBlockThreads = 1024;
constexpr int kMaxGridBlocks = 0x7fffffff;
/// SMs of the emulated device: a cooperative launch may have this many
/// blocks (one resident per SM), each on its own OS thread.
constexpr int kMultiprocessors = 4;
/// What a kernel gets without cuFuncSetAttribute, and the sm_90 opt-in
/// maximum (227 KiB).
constexpr int kDefaultDynamicSharedBytes = 48 * 1024;
constexpr int kMaxDynamicSharedBytes = 227 * 1024;
constexpr size_t kAllocationAlignment = 256;
/// Fresh allocations are filled with this byte: device memory is not zeroed,
/// and a kernel that reads what nobody wrote should not see zeros by luck.
constexpr unsigned char kPoisonByte = 0xa5;
constexpr const char *kImageTag = "MOEGEN-EMU-MODULE";

struct Function {
  std::string symbol;
  int numParams = 0;
  EmuKernelFn fn = nullptr;
  int maxDynamicSharedBytes = kDefaultDynamicSharedBytes;
};

struct Module {
  std::vector<std::unique_ptr<Function>> functions;
};

struct Stream {
  CUcontext context = nullptr;
};

struct Event {
  std::chrono::steady_clock::time_point recordedAt;
  bool recorded = false;
};

struct Allocation {
  size_t bytes = 0;
  /// CU_POINTER_ATTRIBUTE_BUFFER_ID: never reused within the process.
  unsigned long long id = 0;
};

/// A random token per process: images name it, so that a kernels.ptx
/// written by one process (e.g. kept in a cache) is refused by another
/// instead of running whatever that one registered under the same number.
std::string makeProcessToken() {
  std::random_device device;
  uint64_t value =
      (uint64_t(device()) << 32) ^ device() ^ uint64_t(::getpid()) ^
      uint64_t(std::chrono::steady_clock::now().time_since_epoch().count());
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", (unsigned long long)value);
  return text;
}

struct Emulator {
  std::mutex mutex;
  std::vector<std::vector<EmuKernel>> registeredModules; // id - 1
  /// Ids whose code is gone (unregisterModule): loading them fails.
  std::set<size_t> unregistered;
  std::set<const Module *> modules;
  std::set<const Function *> functions;
  std::set<const Stream *> streams;
  std::set<const Event *> events;
  std::map<CUdeviceptr, Allocation> allocations;
  unsigned long long nextBufferId = 1;
  int primaryRetains = 0;
  EmuOptions options;
  /// Every fault text seen, so that the pointers cuGetErrorString returned
  /// stay valid; faults end runs, so there are few.
  std::set<std::string> faultTexts;
  const std::string *lastFault = nullptr;
  const std::string processToken = makeProcessToken();

  /// gpuemu::launch runs one grid at a time.
  std::mutex launchMutex;

  Emulator() { options.seed = seedFromEnvironment(1); }
};

/// Never destroyed: entry points may be called from static destructors.
Emulator &emulator() {
  static Emulator *instance = new Emulator();
  return *instance;
}

int primaryContextObject;
CUcontext primaryContext() {
  return reinterpret_cast<CUcontext>(&primaryContextObject);
}

/// The calling thread's context stack; back() is current.
thread_local std::vector<CUcontext> contextStack;

CUcontext currentContext() {
  return contextStack.empty() ? nullptr : contextStack.back();
}

bool isDefaultStream(CUstream stream) {
  return !stream || stream == CU_STREAM_LEGACY ||
         stream == CU_STREAM_PER_THREAD;
}

/// The checks of every call that works in the current context on a stream.
CUresult checkContextAndStream(CUstream stream) {
  if (!currentContext())
    return CUDA_ERROR_INVALID_CONTEXT;
  if (isDefaultStream(stream))
    return CUDA_SUCCESS;
  Emulator &emu = emulator();
  std::lock_guard<std::mutex> lock(emu.mutex);
  return emu.streams.count(reinterpret_cast<const Stream *>(stream))
             ? CUDA_SUCCESS
             : CUDA_ERROR_INVALID_HANDLE;
}

/// The allocation holding `pointer`, or end(). Needs the mutex.
std::map<CUdeviceptr, Allocation>::const_iterator
findAllocation(const Emulator &emu, CUdeviceptr pointer) {
  auto it = emu.allocations.upper_bound(pointer);
  if (it == emu.allocations.begin())
    return emu.allocations.end();
  --it;
  return pointer < it->first + it->second.bytes ? it : emu.allocations.end();
}

/// Whether [pointer, pointer + bytes) lies in one allocation.
bool isDeviceRange(CUdeviceptr pointer, size_t bytes) {
  if (bytes == 0)
    return true;
  Emulator &emu = emulator();
  std::lock_guard<std::mutex> lock(emu.mutex);
  auto it = findAllocation(emu, pointer);
  return it != emu.allocations.end() &&
         bytes <= it->second.bytes - (pointer - it->first);
}

//===----------------------------------------------------------------------===//
// Errors, initialization, device
//===----------------------------------------------------------------------===//

struct ErrorText {
  CUresult code;
  const char *name;
  const char *text;
};

/// The codes this driver returns, with the real driver's texts.
constexpr ErrorText kErrorTexts[] = {
    {CUDA_SUCCESS, "CUDA_SUCCESS", "no error"},
    {CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED",
     "initialization error"},
    {CUDA_ERROR_NO_DEVICE, "CUDA_ERROR_NO_DEVICE",
     "no CUDA-capable device is detected"},
    {CUDA_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE",
     "invalid device ordinal"},
    {CUDA_ERROR_INVALID_IMAGE, "CUDA_ERROR_INVALID_IMAGE",
     "device kernel image is invalid"},
    {CUDA_ERROR_INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT",
     "invalid device context"},
    {CUDA_ERROR_INVALID_HANDLE, "CUDA_ERROR_INVALID_HANDLE",
     "invalid resource handle"},
    {CUDA_ERROR_NOT_FOUND, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    {CUDA_ERROR_LAUNCH_FAILED, "CUDA_ERROR_LAUNCH_FAILED",
     "unspecified launch failure"},
    {CUDA_ERROR_NOT_SUPPORTED, "CUDA_ERROR_NOT_SUPPORTED",
     "operation not supported"},
    {CUDA_ERROR_UNKNOWN, "CUDA_ERROR_UNKNOWN", "unknown error"},
};

const ErrorText *findErrorText(CUresult result) {
  for (const ErrorText &entry : kErrorTexts)
    if (entry.code == result)
      return &entry;
  return nullptr;
}

CUresult emuGetErrorName(CUresult result, const char **name) {
  if (!name)
    return CUDA_ERROR_INVALID_VALUE;
  const ErrorText *entry = findErrorText(result);
  *name = entry ? entry->name : nullptr;
  return entry ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

CUresult emuGetErrorString(CUresult result, const char **text) {
  if (!text)
    return CUDA_ERROR_INVALID_VALUE;
  const ErrorText *entry = findErrorText(result);
  *text = entry ? entry->text : nullptr;
  if (!entry)
    return CUDA_ERROR_INVALID_VALUE;
  if (result == CUDA_ERROR_LAUNCH_FAILED) {
    // The fault itself is what the runtime's message should carry.
    Emulator &emu = emulator();
    std::lock_guard<std::mutex> lock(emu.mutex);
    if (emu.lastFault)
      *text = emu.lastFault->c_str();
  }
  return CUDA_SUCCESS;
}

CUresult emuInit(unsigned flags) {
  return flags ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS;
}

CUresult emuDeviceGet(CUdevice *device, int ordinal) {
  if (!device)
    return CUDA_ERROR_INVALID_VALUE;
  if (ordinal != 0)
    return CUDA_ERROR_INVALID_DEVICE;
  *device = 0;
  return CUDA_SUCCESS;
}

CUresult emuDeviceGetCount(int *count) {
  if (!count)
    return CUDA_ERROR_INVALID_VALUE;
  *count = 1;
  return CUDA_SUCCESS;
}

CUresult emuDeviceGetAttribute(int *value, CUdevice_attribute attribute,
                               CUdevice device) {
  if (!value)
    return CUDA_ERROR_INVALID_VALUE;
  if (device != 0)
    return CUDA_ERROR_INVALID_DEVICE;
  switch (attribute) {
  case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR:
    *value = kComputeCapabilityMajor;
    return CUDA_SUCCESS;
  case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR:
    *value = kComputeCapabilityMinor;
    return CUDA_SUCCESS;
  case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK:
    *value = kDefaultDynamicSharedBytes;
    return CUDA_SUCCESS;
  case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN:
    *value = kMaxDynamicSharedBytes;
    return CUDA_SUCCESS;
  case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK:
  case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X:
    *value = kMaxBlockThreads;
    return CUDA_SUCCESS;
  // Only 1-D launches are emulated.
  case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y:
  case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z:
  case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y:
  case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z:
    *value = 1;
    return CUDA_SUCCESS;
  case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X:
    *value = kMaxGridBlocks;
    return CUDA_SUCCESS;
  case CU_DEVICE_ATTRIBUTE_WARP_SIZE:
    *value = kWarpSize;
    return CUDA_SUCCESS;
  case CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING:
  case CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH:
    *value = 1;
    return CUDA_SUCCESS;
  case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT:
    *value = kMultiprocessors;
    return CUDA_SUCCESS;
  default:
    return CUDA_ERROR_INVALID_VALUE;
  }
}

CUresult emuDeviceGetName(char *name, int length, CUdevice device) {
  if (!name || length <= 0)
    return CUDA_ERROR_INVALID_VALUE;
  if (device != 0)
    return CUDA_ERROR_INVALID_DEVICE;
  std::snprintf(name, size_t(length), "%s", kDeviceName);
  return CUDA_SUCCESS;
}

//===----------------------------------------------------------------------===//
// Contexts and streams
//===----------------------------------------------------------------------===//

/// The primary context lives as long as the process: releasing it does not
/// free its memory or modules.
CUresult emuPrimaryCtxRetain(CUcontext *context, CUdevice device) {
  if (!context)
    return CUDA_ERROR_INVALID_VALUE;
  if (device != 0)
    return CUDA_ERROR_INVALID_DEVICE;
  Emulator &emu = emulator();
  std::lock_guard<std::mutex> lock(emu.mutex);
  ++emu.primaryRetains;
  *context = primaryContext();
  return CUDA_SUCCESS;
}

CUresult emuPrimaryCtxRelease(CUdevice device) {
  if (device != 0)
    return CUDA_ERROR_INVALID_DEVICE;
  Emulator &emu = emulator();
  std::lock_guard<std::mutex> lock(emu.mutex);
  if (emu.primaryRetains == 0)
    return CUDA_ERROR_INVALID_CONTEXT;
  --emu.primaryRetains;
  return CUDA_SUCCESS;
}

CUresult emuCtxGetCurrent(CUcontext *context) {
  if (!context)
    return CUDA_ERROR_INVALID_VALUE;
  *context = currentContext();
  return CUDA_SUCCESS;
}

CUresult emuCtxSetCurrent(CUcontext context) {
  if (context && context != primaryContext())
    return CUDA_ERROR_INVALID_CONTEXT;
  // As in CUDA: replaces the top of the stack; null pops it.
  if (!context) {
    if (!contextStack.empty())
      contextStack.pop_back();
  } else if (contextStack.empty()) {
    contextStack.push_back(context);
  } else {
    contextStack.back() = context;
  }
  return CUDA_SUCCESS;
}

CUresult emuCtxPushCurrent(CUcontext context) {
  if (!context)
    return CUDA_ERROR_INVALID_VALUE;
  if (context != primaryContext())
    return CUDA_ERROR_INVALID_CONTEXT;
  contextStack.push_back(context);
  return CUDA_SUCCESS;
}

CUresult emuCtxPopCurrent(CUcontext *context) {
  if (contextStack.empty())
    return CUDA_ERROR_INVALID_CONTEXT;
  if (context)
    *context = contextStack.back();
  contextStack.pop_back();
  return CUDA_SUCCESS;
}

CUresult emuCtxGetDevice(CUdevice *device) {
  if (!device)
    return CUDA_ERROR_INVALID_VALUE;
  if (!currentContext())
    return CUDA_ERROR_INVALID_CONTEXT;
  *device = 0;
  return CUDA_SUCCESS;
}

CUresult emuStreamGetCtx(CUstream stream, CUcontext *context) {
  if (!context)
    return CUDA_ERROR_INVALID_VALUE;
  if (isDefaultStream(stream)) {
    *context = currentContext();
    return *context ? CUDA_SUCCESS : CUDA_ERROR_INVALID_CONTEXT;
  }
  Emulator &emu = emulator();
  std::lock_guard<std::mutex> lock(emu.mutex);
  const auto *known = reinterpret_cast<const Stream *>(stream);
  if (!emu.streams.count(known))
    return CUDA_ERROR_INVALID_HANDLE;
  *context = known->context;
  return CUDA_SUCCESS;
}

CUresult emuStreamIsCapturing(CUstream stream, CUstreamCaptureStatus *status) {
  if (!status)
    return CUDA_ERROR_INVALID_VALUE;
  if (CUresult result = checkContextAndStream(stream))
    return result;
  // Graph capture is not emulated, so no stream is ever capturing.
  *status = CU_STREAM_CAPTURE_STATUS_NONE;
  return CUDA_SUCCESS;
}

CUresult emuStreamCreate(CUstream *stream, unsigned flags) {
  if (!stream || (flags & ~unsigned(CU_STREAM_NON_BLOCKING)))
    return CUDA_ERROR_INVALID_VALUE;
  if (!currentContext())
    return CUDA_ERROR_INVALID_CONTEXT;
  auto created = std::make_unique<Stream>(Stream{currentContext()});
  Emulator &emu = emulator();
  std::lock_guard<std::mutex> lock(emu.mutex);
  emu.streams.insert(created.get());
  *stream = reinterpret_cast<CUstream>(created.release());
  return CUDA_SUCCESS;
}

CUresult emuStreamDestroy(CUstream stream) {
  Emulator &emu = emulator();
  std::lock_guard<std::mutex> lock(emu.mutex);
  const auto *known = reinterpret_cast<const Stream *>(stream);
  if (!emu.streams.erase(known))
    return CUDA_ERROR_INVALID_HANDLE;
  delete known;
  return CUDA_SUCCESS;
}

/// Every call completes before it returns, so there is nothing to wait for.
CUresult emuStreamSynchronize(CUstream stream) {
  return checkContextAndStream(stream);
}

// Launches run to completion when submitted: a stream is always done.
CUresult emuStreamQuery(CUstream stream) {
  return checkContextAndStream(stream);
}

//===----------------------------------------------------------------------===//
// Events
//===----------------------------------------------------------------------===//

// Work completes when submitted, so an event records the host's clock when
// recorded: the elapsed time between two is the host time of the calls
// between them (the emulator's, not a GPU's).
CUresult emuEventCreate(CUevent *event, unsigned int flags) {
  if (!event)
    return CUDA_ERROR_INVALID_VALUE;
  if (!currentContext())
    return CUDA_ERROR_INVALID_CONTEXT;
  (void)flags;
  auto *created = new Event();
  Emulator &emu = emulator();
  std::lock_guard<std::mutex> lock(emu.mutex);
  emu.events.insert(created);
  *event = reinterpret_cast<CUevent>(created);
  return CUDA_SUCCESS;
}

/// The event behind `event`, or null when it is not a live one.
Event *knownEvent(CUevent event) {
  Emulator &emu = emulator();
  std::lock_guard<std::mutex> lock(emu.mutex);
  auto *known = reinterpret_cast<Event *>(event);
  return emu.events.count(known) ? known : nullptr;
}

CUresult emuEventDestroy(CUevent event) {
  Emulator &emu = emulator();
  std::lock_guard<std::mutex> lock(emu.mutex);
  auto *known = reinterpret_cast<const Event *>(event);
  if (!emu.events.erase(known))
    return CUDA_ERROR_INVALID_HANDLE;
  delete known;
  return CUDA_SUCCESS;
}

CUresult emuEventRecord(CUevent event, CUstream stream) {
  if (CUresult result = checkContextAndStream(stream))
    return result;
  Event *known = knownEvent(event);
  if (!known)
    return CUDA_ERROR_INVALID_HANDLE;
  known->recordedAt = std::chrono::steady_clock::now();
  known->recorded = true;
  return CUDA_SUCCESS;
}

CUresult emuEventSynchronize(CUevent event) {
  return knownEvent(event) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

CUresult emuEventElapsedTime(float *milliseconds, CUevent start, CUevent end) {
  if (!milliseconds)
    return CUDA_ERROR_INVALID_VALUE;
  Event *from = knownEvent(start), *to = knownEvent(end);
  if (!from || !to)
    return CUDA_ERROR_INVALID_HANDLE;
  if (!from->recorded || !to->recorded)
    return CUDA_ERROR_NOT_READY;
  *milliseconds = std::chrono::duration<float, std::milli>(to->recordedAt -
                                                           from->recordedAt)
                      .count();
  return CUDA_SUCCESS;
}

//===----------------------------------------------------------------------===//
// Modules and functions
//===----------------------------------------------------------------------===//

/// Loads an image from registerModule(); on failure, `log` says why.
CUresult loadImage(CUmodule *module, const void *image, std::string &log) {
  if (!module || !image)
    return CUDA_ERROR_INVALID_VALUE;
  if (!currentContext())
    return CUDA_ERROR_INVALID_CONTEXT;
  std::istringstream in(static_cast<const char *>(image));
  std::string tag, token, rest;
  size_t id = 0;
  if (!(in >> tag) || tag != kImageTag || !(in >> id >> token) ||
      (in >> rest)) {
    log = std::string("not a moegen GPU emulator module (the emulator runs "
                      "only the images registerModule() returns, \"") +
          kImageTag + " <number> <process>\"; PTX and cubins need a GPU)";
    return CUDA_ERROR_INVALID_IMAGE;
  }
  Emulator &emu = emulator();
  std::lock_guard<std::mutex> lock(emu.mutex);
  if (token != emu.processToken) {
    log = "the module was registered by another process; emulated kernels "
          "must be compiled in the process that runs them";
    return CUDA_ERROR_INVALID_IMAGE;
  }
  if (id == 0 || id > emu.registeredModules.size()) {
    log = "no module " + std::to_string(id) + " is registered";
    return CUDA_ERROR_INVALID_IMAGE;
  }
  if (emu.unregistered.count(id)) {
    log = "module " + std::to_string(id) +
          " was unregistered: its kernels' code is gone";
    return CUDA_ERROR_INVALID_IMAGE;
  }
  auto loaded = std::make_unique<Module>();
  for (const EmuKernel &kernel : emu.registeredModules[id - 1])
    loaded->functions.push_back(std::make_unique<Function>(
        Function{kernel.symbol, kernel.numParams, kernel.fn}));
  for (const auto &function : loaded->functions)
    emu.functions.insert(function.get());
  emu.modules.insert(loaded.get());
  *module = reinterpret_cast<CUmodule>(loaded.release());
  return CUDA_SUCCESS;
}

CUresult emuModuleLoadData(CUmodule *module, const void *image) {
  std::string log;
  return loadImage(module, image, log);
}

/// Honours CU_JIT_ERROR_LOG_BUFFER(_SIZE_BYTES), where the runtime looks
/// for the reason a PTX image failed to load.
CUresult emuModuleLoadDataEx(CUmodule *module, const void *image,
                             unsigned numOptions, CUjit_option *options,
                             void **values) {
  std::string log;
  CUresult result = loadImage(module, image, log);
  if (result == CUDA_SUCCESS || !options || !values)
    return result;
  char *buffer = nullptr;
  size_t capacity = 0;
  for (unsigned i = 0; i < numOptions; ++i) {
    if (options[i] == CU_JIT_ERROR_LOG_BUFFER)
      buffer = static_cast<char *>(values[i]);
    else if (options[i] == CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES)
      capacity = size_t(reinterpret_cast<uintptr_t>(values[i]));
  }
  if (buffer && capacity > 0) {
    const size_t length = std::min(log.size(), capacity - 1);
    std::memcpy(buffer, log.data(), length);
    buffer[length] = '\0';
  }
  return result;
}

CUresult emuModuleGetFunction(CUfunction *function, CUmodule module,
                              const char *name) {
  if (!function || !name)
    return CUDA_ERROR_INVALID_VALUE;
  Emulator &emu = emulator();
  std::lock_guard<std::mutex> lock(emu.mutex);
  const auto *loaded = reinterpret_cast<const Module *>(module);
  if (!emu.modules.count(loaded))
    return CUDA_ERROR_INVALID_HANDLE;
  for (const auto &candidate : loaded->functions)
    if (candidate->symbol == name) {
      *function = reinterpret_cast<CUfunction>(candidate.get());
      return CUDA_SUCCESS;
    }
  return CUDA_ERROR_NOT_FOUND;
}

CUresult emuModuleUnload(CUmodule module) {
  Emulator &emu = emulator();
  std::lock_guard<std::mutex> lock(emu.mutex);
  const auto *loaded = reinterpret_cast<const Module *>(module);
  if (!emu.modules.erase(loaded))
    return CUDA_ERROR_INVALID_HANDLE;
  for (const auto &function : loaded->functions)
    emu.functions.erase(function.get());
  delete loaded;
  return CUDA_SUCCESS;
}

CUresult emuFuncSetAttribute(CUfunction function,
                             CUfunction_attribute attribute, int value) {
  Emulator &emu = emulator();
  std::lock_guard<std::mutex> lock(emu.mutex);
  auto *known = reinterpret_cast<Function *>(function);
  if (!emu.functions.count(known))
    return CUDA_ERROR_INVALID_HANDLE;
  switch (attribute) {
  case CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES:
    if (value < 0 || value > kMaxDynamicSharedBytes)
      return CUDA_ERROR_INVALID_VALUE;
    known->maxDynamicSharedBytes = value;
    return CUDA_SUCCESS;
  case CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT:
    // A hint about the L1 / shared split; nothing to emulate.
    return value >= -1 && value <= 100 ? CUDA_SUCCESS
                                       : CUDA_ERROR_INVALID_VALUE;
  default:
    return CUDA_ERROR_INVALID_VALUE;
  }
}

CUresult emuFuncGetAttribute(int *value, CUfunction_attribute attribute,
                             CUfunction function) {
  if (!value)
    return CUDA_ERROR_INVALID_VALUE;
  Emulator &emu = emulator();
  std::lock_guard<std::mutex> lock(emu.mutex);
  const auto *known = reinterpret_cast<const Function *>(function);
  if (!emu.functions.count(known))
    return CUDA_ERROR_INVALID_HANDLE;
  switch (attribute) {
  case CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK:
    *value = kMaxBlockThreads;
    return CUDA_SUCCESS;
  case CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES:
    *value = known->maxDynamicSharedBytes;
    return CUDA_SUCCESS;
  // Emulated kernels use dynamic shared memory only, and host registers.
  case CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES:
  case CU_FUNC_ATTRIBUTE_CONST_SIZE_BYTES:
  case CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES:
  case CU_FUNC_ATTRIBUTE_NUM_REGS:
    *value = 0;
    return CUDA_SUCCESS;
  case CU_FUNC_ATTRIBUTE_PTX_VERSION:
  case CU_FUNC_ATTRIBUTE_BINARY_VERSION:
    *value = kComputeCapabilityMajor * 10 + kComputeCapabilityMinor;
    return CUDA_SUCCESS;
  default:
    return CUDA_ERROR_INVALID_VALUE;
  }
}

//===----------------------------------------------------------------------===//
// Launches
//===----------------------------------------------------------------------===//

/// The allocations the kernel may touch: those its parameters point into,
/// named after the parameters. Needs the mutex.
std::vector<MemoryRegion>
parameterRegions(const Emulator &emu, const std::vector<uint64_t> &values) {
  std::map<CUdeviceptr, std::vector<size_t>> users; // allocation -> params
  for (size_t i = 0; i < values.size(); ++i) {
    auto it = findAllocation(emu, CUdeviceptr(values[i]));
    if (it != emu.allocations.end())
      users[it->first].push_back(i);
  }
  std::vector<MemoryRegion> regions;
  for (const auto &[base, params] : users) {
    std::string name = params.size() == 1 ? "parameter " : "parameters ";
    for (size_t i = 0; i < params.size(); ++i)
      name += (i ? ", " : "") + std::to_string(params[i]);
    regions.push_back(MemoryRegion{reinterpret_cast<const void *>(base),
                                   emu.allocations.at(base).bytes, name});
  }
  return regions;
}

void recordFault(Emulator &emu, const std::string &fault) {
  std::lock_guard<std::mutex> lock(emu.mutex);
  emu.lastFault = &*emu.faultTexts.insert(fault).first;
}

CUresult launchGrid(CUfunction function, unsigned gridX, unsigned gridY,
                    unsigned gridZ, unsigned blockX, unsigned blockY,
                    unsigned blockZ, unsigned sharedBytes, CUstream stream,
                    void **kernelParams, void **extra, bool cooperative) {
  if (CUresult result = checkContextAndStream(stream))
    return result;
  // Parameters are read from kernelParams only.
  if (extra && extra[0] != CU_LAUNCH_PARAM_END)
    return CUDA_ERROR_NOT_SUPPORTED;
  if (!gridX || !gridY || !gridZ || !blockX || !blockY || !blockZ)
    return CUDA_ERROR_INVALID_VALUE;
  if (gridY != 1 || gridZ != 1 || blockY != 1 || blockZ != 1)
    return CUDA_ERROR_NOT_SUPPORTED;
  if (blockX > unsigned(kMaxBlockThreads) || gridX > unsigned(kMaxGridBlocks))
    return CUDA_ERROR_INVALID_VALUE;

  Emulator &emu = emulator();
  LaunchConfig config;
  EmuKernelFn fn = nullptr;
  std::vector<uint64_t> values;
  {
    std::lock_guard<std::mutex> lock(emu.mutex);
    const auto *known = reinterpret_cast<const Function *>(function);
    if (!emu.functions.count(known))
      return CUDA_ERROR_INVALID_HANDLE;
    if (int64_t(sharedBytes) > known->maxDynamicSharedBytes)
      return CUDA_ERROR_INVALID_VALUE;
    if (known->numParams > 0 && !kernelParams)
      return CUDA_ERROR_INVALID_VALUE;
    fn = known->fn;
    config.kernel = known->symbol;
    values.resize(size_t(known->numParams));
    for (size_t i = 0; i < values.size(); ++i) {
      if (!kernelParams[i])
        return CUDA_ERROR_INVALID_VALUE;
      std::memcpy(&values[i], kernelParams[i], sizeof(uint64_t));
    }
    config.regions = parameterRegions(emu, values);
    config.seed = emu.options.seed;
    config.workerThreads = emu.options.workerThreads;
    config.checkRaces = emu.options.checkRaces;
  }
  // All blocks of a cooperative launch must be resident at once.
  if (cooperative && gridX > unsigned(kMultiprocessors))
    return CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE;
  config.gridDim = gridX;
  config.blockDim = blockX;
  config.sharedBytes = sharedBytes;
  config.cooperative = cooperative;

  std::string fault;
  try {
    std::lock_guard<std::mutex> lock(emu.launchMutex);
    fault = launch(config, fn, values);
  } catch (const std::bad_alloc &) {
    return CUDA_ERROR_OUT_OF_MEMORY;
  } catch (const std::exception &e) {
    fault = config.kernel + ": the emulator failed: " + e.what();
  }
  if (fault.empty())
    return CUDA_SUCCESS;
  recordFault(emu, fault);
  return CUDA_ERROR_LAUNCH_FAILED;
}

CUresult emuLaunchKernel(CUfunction function, unsigned gridX, unsigned gridY,
                         unsigned gridZ, unsigned blockX, unsigned blockY,
                         unsigned blockZ, unsigned sharedBytes, CUstream stream,
                         void **kernelParams, void **extra) {
  return launchGrid(function, gridX, gridY, gridZ, blockX, blockY, blockZ,
                    sharedBytes, stream, kernelParams, extra,
                    /*cooperative=*/false);
}

CUresult emuLaunchCooperativeKernel(CUfunction function, unsigned gridX,
                                    unsigned gridY, unsigned gridZ,
                                    unsigned blockX, unsigned blockY,
                                    unsigned blockZ, unsigned sharedBytes,
                                    CUstream stream, void **kernelParams) {
  return launchGrid(function, gridX, gridY, gridZ, blockX, blockY, blockZ,
                    sharedBytes, stream, kernelParams, nullptr,
                    /*cooperative=*/true);
}

//===----------------------------------------------------------------------===//
// Memory
//===----------------------------------------------------------------------===//

CUresult emuMemAlloc(CUdeviceptr *pointer, size_t bytes) {
  if (!pointer || bytes == 0)
    return CUDA_ERROR_INVALID_VALUE;
  if (!currentContext())
    return CUDA_ERROR_INVALID_CONTEXT;
  if (bytes > SIZE_MAX - kAllocationAlignment)
    return CUDA_ERROR_OUT_OF_MEMORY;
  const size_t rounded = (bytes + kAllocationAlignment - 1) /
                         kAllocationAlignment * kAllocationAlignment;
  void *memory = std::aligned_alloc(kAllocationAlignment, rounded);
  if (!memory)
    return CUDA_ERROR_OUT_OF_MEMORY;
  std::memset(memory, kPoisonByte, rounded);
  Emulator &emu = emulator();
  try {
    std::lock_guard<std::mutex> lock(emu.mutex);
    emu.allocations[CUdeviceptr(memory)] = Allocation{bytes, emu.nextBufferId};
    ++emu.nextBufferId;
  } catch (const std::bad_alloc &) {
    std::free(memory);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  *pointer = CUdeviceptr(memory);
  return CUDA_SUCCESS;
}

CUresult emuMemFree(CUdeviceptr pointer) {
  if (!currentContext())
    return CUDA_ERROR_INVALID_CONTEXT;
  Emulator &emu = emulator();
  {
    std::lock_guard<std::mutex> lock(emu.mutex);
    if (!emu.allocations.erase(pointer))
      return CUDA_ERROR_INVALID_VALUE;
  }
  std::free(reinterpret_cast<void *>(pointer));
  return CUDA_SUCCESS;
}

CUresult emuMemsetD8Async(CUdeviceptr pointer, unsigned char value,
                          size_t bytes, CUstream stream) {
  if (CUresult result = checkContextAndStream(stream))
    return result;
  if (!isDeviceRange(pointer, bytes))
    return CUDA_ERROR_INVALID_VALUE;
  if (bytes)
    std::memset(reinterpret_cast<void *>(pointer), value, bytes);
  return CUDA_SUCCESS;
}

CUresult emuMemcpyDtoHAsync(void *host, CUdeviceptr device, size_t bytes,
                            CUstream stream) {
  if (CUresult result = checkContextAndStream(stream))
    return result;
  if ((bytes && !host) || !isDeviceRange(device, bytes))
    return CUDA_ERROR_INVALID_VALUE;
  if (bytes)
    std::memcpy(host, reinterpret_cast<const void *>(device), bytes);
  return CUDA_SUCCESS;
}

CUresult emuMemcpyHtoDAsync(CUdeviceptr device, const void *host, size_t bytes,
                            CUstream stream) {
  if (CUresult result = checkContextAndStream(stream))
    return result;
  if ((bytes && !host) || !isDeviceRange(device, bytes))
    return CUDA_ERROR_INVALID_VALUE;
  if (bytes)
    std::memcpy(reinterpret_cast<void *>(device), host, bytes);
  return CUDA_SUCCESS;
}

CUresult emuMemcpyDtoDAsync(CUdeviceptr to, CUdeviceptr from, size_t bytes,
                            CUstream stream) {
  if (CUresult result = checkContextAndStream(stream))
    return result;
  if (!isDeviceRange(to, bytes) || !isDeviceRange(from, bytes))
    return CUDA_ERROR_INVALID_VALUE;
  if (bytes)
    std::memmove(reinterpret_cast<void *>(to),
                 reinterpret_cast<const void *>(from), bytes);
  return CUDA_SUCCESS;
}

/// cuMemcpyBatchAsync in its CUDA 12.8 form. As the driver: not on the
/// legacy default stream, one attribute set per first copy, a source
/// access order on each; every copy within device memory (the emulator
/// has no host-mapped memory).
CUresult emuMemcpyBatchAsync(CUdeviceptr *to, CUdeviceptr *from, size_t *sizes,
                             size_t count, CUmemcpyAttributes *attributes,
                             size_t *attributeStarts, size_t numAttributes,
                             size_t *failedIndex, CUstream stream) {
  if (failedIndex)
    *failedIndex = SIZE_MAX;
  if (CUresult result = checkContextAndStream(stream))
    return result;
  if (!stream || stream == CU_STREAM_LEGACY || count == 0 || !to || !from ||
      !sizes || !attributes || !attributeStarts || numAttributes == 0 ||
      numAttributes > count || attributeStarts[0] != 0)
    return CUDA_ERROR_INVALID_VALUE;
  for (size_t i = 0; i < numAttributes; ++i)
    if ((i && attributeStarts[i] <= attributeStarts[i - 1]) ||
        attributeStarts[i] >= count ||
        attributes[i].srcAccessOrder == CU_MEMCPY_SRC_ACCESS_ORDER_INVALID)
      return CUDA_ERROR_INVALID_VALUE;
  for (size_t i = 0; i < count; ++i)
    if (!isDeviceRange(to[i], sizes[i]) || !isDeviceRange(from[i], sizes[i])) {
      if (failedIndex)
        *failedIndex = i;
      return CUDA_ERROR_INVALID_VALUE;
    }
  for (size_t i = 0; i < count; ++i)
    if (sizes[i])
      std::memcpy(reinterpret_cast<void *>(to[i]),
                  reinterpret_cast<const void *>(from[i]), sizes[i]);
  return CUDA_SUCCESS;
}

/// One attribute of `pointer`; `found` is its allocation or end(). Unknown
/// pointers get the null answers cuPointerGetAttributes documents. Needs
/// the mutex.
CUresult
pointerAttribute(const Emulator &emu, CUpointer_attribute attribute, void *data,
                 CUdeviceptr pointer,
                 std::map<CUdeviceptr, Allocation>::const_iterator found) {
  const bool known = found != emu.allocations.end();
  switch (attribute) {
  case CU_POINTER_ATTRIBUTE_MEMORY_TYPE:
    *static_cast<unsigned *>(data) = known ? CU_MEMORYTYPE_DEVICE : 0;
    return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_CONTEXT:
    *static_cast<CUcontext *>(data) = known ? primaryContext() : nullptr;
    return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_DEVICE_POINTER:
    *static_cast<CUdeviceptr *>(data) = known ? pointer : 0;
    return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL:
    *static_cast<int *>(data) = known ? 0 : -2;
    return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_BUFFER_ID:
    *static_cast<unsigned long long *>(data) = known ? found->second.id : 0;
    return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR:
    *static_cast<CUdeviceptr *>(data) = known ? found->first : 0;
    return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_RANGE_SIZE:
    *static_cast<size_t *>(data) = known ? found->second.bytes : 0;
    return CUDA_SUCCESS;
  default:
    return CUDA_ERROR_INVALID_VALUE;
  }
}

/// Unlike the plural form, this one fails for memory the driver does not
/// know, as CUDA's does.
CUresult emuPointerGetAttribute(void *data, CUpointer_attribute attribute,
                                CUdeviceptr pointer) {
  if (!data)
    return CUDA_ERROR_INVALID_VALUE;
  Emulator &emu = emulator();
  std::lock_guard<std::mutex> lock(emu.mutex);
  auto found = findAllocation(emu, pointer);
  if (found == emu.allocations.end())
    return CUDA_ERROR_INVALID_VALUE;
  return pointerAttribute(emu, attribute, data, pointer, found);
}

CUresult emuPointerGetAttributes(unsigned count,
                                 CUpointer_attribute *attributes, void **data,
                                 CUdeviceptr pointer) {
  if (count && (!attributes || !data))
    return CUDA_ERROR_INVALID_VALUE;
  Emulator &emu = emulator();
  std::lock_guard<std::mutex> lock(emu.mutex);
  auto found = findAllocation(emu, pointer);
  for (unsigned i = 0; i < count; ++i) {
    if (!data[i])
      return CUDA_ERROR_INVALID_VALUE;
    if (CUresult result =
            pointerAttribute(emu, attributes[i], data[i], pointer, found))
      return result;
  }
  return CUDA_SUCCESS;
}

struct EntryPoint {
  const char *symbol;
  void *function;
};

const EntryPoint kEntryPoints[] = {
    {"cuInit", reinterpret_cast<void *>(emuInit)},
    {"cuGetErrorName", reinterpret_cast<void *>(emuGetErrorName)},
    {"cuGetErrorString", reinterpret_cast<void *>(emuGetErrorString)},
    {"cuDeviceGet", reinterpret_cast<void *>(emuDeviceGet)},
    {"cuDeviceGetCount", reinterpret_cast<void *>(emuDeviceGetCount)},
    {"cuDeviceGetAttribute", reinterpret_cast<void *>(emuDeviceGetAttribute)},
    {"cuDeviceGetName", reinterpret_cast<void *>(emuDeviceGetName)},
    {"cuDevicePrimaryCtxRetain", reinterpret_cast<void *>(emuPrimaryCtxRetain)},
    {"cuDevicePrimaryCtxRelease",
     reinterpret_cast<void *>(emuPrimaryCtxRelease)},
    {"cuCtxGetCurrent", reinterpret_cast<void *>(emuCtxGetCurrent)},
    {"cuCtxSetCurrent", reinterpret_cast<void *>(emuCtxSetCurrent)},
    {"cuCtxPushCurrent", reinterpret_cast<void *>(emuCtxPushCurrent)},
    {"cuCtxPopCurrent", reinterpret_cast<void *>(emuCtxPopCurrent)},
    {"cuCtxGetDevice", reinterpret_cast<void *>(emuCtxGetDevice)},
    {"cuStreamGetCtx", reinterpret_cast<void *>(emuStreamGetCtx)},
    {"cuStreamIsCapturing", reinterpret_cast<void *>(emuStreamIsCapturing)},
    {"cuStreamCreate", reinterpret_cast<void *>(emuStreamCreate)},
    {"cuStreamDestroy", reinterpret_cast<void *>(emuStreamDestroy)},
    {"cuStreamSynchronize", reinterpret_cast<void *>(emuStreamSynchronize)},
    {"cuStreamQuery", reinterpret_cast<void *>(emuStreamQuery)},
    {"cuModuleLoadData", reinterpret_cast<void *>(emuModuleLoadData)},
    {"cuModuleLoadDataEx", reinterpret_cast<void *>(emuModuleLoadDataEx)},
    {"cuModuleGetFunction", reinterpret_cast<void *>(emuModuleGetFunction)},
    {"cuModuleUnload", reinterpret_cast<void *>(emuModuleUnload)},
    {"cuFuncSetAttribute", reinterpret_cast<void *>(emuFuncSetAttribute)},
    {"cuFuncGetAttribute", reinterpret_cast<void *>(emuFuncGetAttribute)},
    {"cuLaunchKernel", reinterpret_cast<void *>(emuLaunchKernel)},
    {"cuLaunchCooperativeKernel",
     reinterpret_cast<void *>(emuLaunchCooperativeKernel)},
    {"cuMemAlloc", reinterpret_cast<void *>(emuMemAlloc)},
    {"cuMemFree", reinterpret_cast<void *>(emuMemFree)},
    {"cuMemsetD8Async", reinterpret_cast<void *>(emuMemsetD8Async)},
    {"cuMemcpyDtoHAsync", reinterpret_cast<void *>(emuMemcpyDtoHAsync)},
    {"cuMemcpyHtoDAsync", reinterpret_cast<void *>(emuMemcpyHtoDAsync)},
    {"cuMemcpyDtoDAsync", reinterpret_cast<void *>(emuMemcpyDtoDAsync)},
    {"cuMemcpyBatchAsync", reinterpret_cast<void *>(emuMemcpyBatchAsync)},
    {"cuPointerGetAttribute", reinterpret_cast<void *>(emuPointerGetAttribute)},
    {"cuPointerGetAttributes",
     reinterpret_cast<void *>(emuPointerGetAttributes)},
    {"cuEventCreate", reinterpret_cast<void *>(emuEventCreate)},
    {"cuEventDestroy", reinterpret_cast<void *>(emuEventDestroy)},
    {"cuEventRecord", reinterpret_cast<void *>(emuEventRecord)},
    {"cuEventSynchronize", reinterpret_cast<void *>(emuEventSynchronize)},
    {"cuEventElapsedTime", reinterpret_cast<void *>(emuEventElapsedTime)},
};

} // namespace

void unregisterModule(const std::string &image) {
  std::istringstream in(image);
  std::string tag, token;
  size_t id = 0;
  in >> tag >> id >> token;
  Emulator &emu = emulator();
  std::lock_guard<std::mutex> lock(emu.mutex);
  if (tag != kImageTag || token != emu.processToken || id == 0 ||
      id > emu.registeredModules.size())
    return;
  emu.registeredModules[id - 1].clear();
  emu.unregistered.insert(id);
}

std::string registerModule(std::vector<EmuKernel> kernels) {
  Emulator &emu = emulator();
  std::lock_guard<std::mutex> lock(emu.mutex);
  emu.registeredModules.push_back(std::move(kernels));
  return std::string(kImageTag) + " " +
         std::to_string(emu.registeredModules.size()) + " " + emu.processToken +
         "\n";
}

ScopedDeviceMemory::ScopedDeviceMemory(const void *pointer, size_t bytes) {
  if (!pointer || bytes == 0)
    return;
  const CUdeviceptr start = CUdeviceptr(pointer);
  if (bytes > std::numeric_limits<CUdeviceptr>::max() - start)
    return;
  Emulator &emu = emulator();
  std::lock_guard<std::mutex> lock(emu.mutex);
  // Refuse overlaps: the allocation below or at start, and the next one.
  auto next = emu.allocations.lower_bound(start);
  if (next != emu.allocations.end() && next->first < start + bytes)
    return;
  if (findAllocation(emu, start) != emu.allocations.end())
    return;
  emu.allocations[start] = Allocation{bytes, emu.nextBufferId++};
  key = start;
}

ScopedDeviceMemory::~ScopedDeviceMemory() {
  if (!key)
    return;
  Emulator &emu = emulator();
  std::lock_guard<std::mutex> lock(emu.mutex);
  emu.allocations.erase(CUdeviceptr(key));
}

void setEmuOptions(const EmuOptions &options) {
  Emulator &emu = emulator();
  std::lock_guard<std::mutex> lock(emu.mutex);
  emu.options = options;
}

EmuOptions emuOptions() {
  Emulator &emu = emulator();
  std::lock_guard<std::mutex> lock(emu.mutex);
  return emu.options;
}

std::string takeLastFault() {
  Emulator &emu = emulator();
  std::lock_guard<std::mutex> lock(emu.mutex);
  if (!emu.lastFault)
    return {};
  std::string fault = *emu.lastFault;
  emu.lastFault = nullptr;
  return fault;
}

void *entryPoint(const char *symbol) {
  if (!symbol)
    return nullptr;
  for (const EntryPoint &entry : kEntryPoints)
    if (std::strcmp(entry.symbol, symbol) == 0)
      return entry.function;
  return nullptr;
}

const rt::CudaDriver &emulatedDriver() {
  // Never destroyed, like rt::CudaDriver::get(): routers may outlive any
  // owner.
  static const rt::CudaDriver *driver =
      rt::CudaDriver::fromEntryPoints(kDriverName, kDriverVersion, entryPoint)
          .release();
  return *driver;
}

} // namespace moegen::gpuemu
