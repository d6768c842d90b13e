//===- RuntimeFakeCuda.cpp - A stand-in libcuda for the runtime tests -----===//
//
// Binaries are text: "FAKE-CUBIN sm_90" or "FAKE-PTX sm_80" on the first
// line, then one "<symbol> <number of parameters>" per kernel. A cubin loads
// only on a device of exactly its compute capability (good enough for the
// tests); PTX on any.
//
//===----------------------------------------------------------------------===//

#include "tests/unit/RuntimeFakeCuda.h"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <sstream>

namespace {

FakeCudaState state;
int primaryContextObject, otherContextObject;
CUcontext primary() {
  return reinterpret_cast<CUcontext>(&primaryContextObject);
}
CUcontext other() { return reinterpret_cast<CUcontext>(&otherContextObject); }

struct FakeFunction {
  std::string symbol;
  int numParams = 0;
};
struct FakeModule {
  std::vector<std::unique_ptr<FakeFunction>> functions;
};

CUcontext current() {
  return state.contextStack.empty() ? nullptr : state.contextStack.back();
}

CUresult loadImage(CUmodule *module, const void *image, const char *magic) {
  std::istringstream in(static_cast<const char *>(image));
  std::string tag, arch;
  in >> tag >> arch;
  if (tag != magic)
    return CUDA_ERROR_INVALID_IMAGE;
  if (std::string(magic) == "FAKE-CUBIN") {
    std::string device =
        "sm_" + std::to_string(state.ccMajor) + std::to_string(state.ccMinor);
    if (arch.substr(0, device.size()) != device)
      return CUDA_ERROR_NO_BINARY_FOR_GPU;
  }
  auto *result = new FakeModule();
  std::string symbol;
  int count;
  while (in >> symbol >> count)
    result->functions.push_back(
        std::make_unique<FakeFunction>(FakeFunction{symbol, count}));
  *module = reinterpret_cast<CUmodule>(result);
  return CUDA_SUCCESS;
}

CUresult fakeInit(unsigned) { return state.initResult; }
CUresult fakeGetErrorName(CUresult result, const char **name) {
  switch (result) {
  case CUDA_SUCCESS:
    *name = "CUDA_SUCCESS";
    return CUDA_SUCCESS;
  case CUDA_ERROR_INVALID_VALUE:
    *name = "CUDA_ERROR_INVALID_VALUE";
    return CUDA_SUCCESS;
  case CUDA_ERROR_NO_DEVICE:
    *name = "CUDA_ERROR_NO_DEVICE";
    return CUDA_SUCCESS;
  case CUDA_ERROR_NOT_FOUND:
    *name = "CUDA_ERROR_NOT_FOUND";
    return CUDA_SUCCESS;
  case CUDA_ERROR_NO_BINARY_FOR_GPU:
    *name = "CUDA_ERROR_NO_BINARY_FOR_GPU";
    return CUDA_SUCCESS;
  case CUDA_ERROR_INVALID_IMAGE:
    *name = "CUDA_ERROR_INVALID_IMAGE";
    return CUDA_SUCCESS;
  default:
    return CUDA_ERROR_INVALID_VALUE;
  }
}
CUresult fakeGetErrorString(CUresult result, const char **text) {
  switch (result) {
  case CUDA_ERROR_NO_DEVICE:
    *text = "no CUDA-capable device is detected";
    return CUDA_SUCCESS;
  case CUDA_ERROR_INVALID_VALUE:
    *text = "invalid argument";
    return CUDA_SUCCESS;
  default:
    *text = "fake error";
    return CUDA_SUCCESS;
  }
}
CUresult fakeDeviceGet(CUdevice *device, int ordinal) {
  if (ordinal < 0 || ordinal >= state.deviceCount)
    return CUDA_ERROR_INVALID_DEVICE;
  *device = ordinal;
  return CUDA_SUCCESS;
}
CUresult fakeDeviceGetCount(int *count) {
  *count = state.deviceCount;
  return CUDA_SUCCESS;
}
CUresult fakeDeviceGetAttribute(int *value, CUdevice_attribute attribute,
                                CUdevice) {
  switch (attribute) {
  case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR:
    *value = state.ccMajor;
    return CUDA_SUCCESS;
  case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR:
    *value = state.ccMinor;
    return CUDA_SUCCESS;
  case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN:
    *value = state.sharedOptinLimit;
    return CUDA_SUCCESS;
  case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT:
    *value = state.multiprocessors;
    return CUDA_SUCCESS;
  case CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH:
    *value = state.cooperativeLaunch;
    return CUDA_SUCCESS;
  default:
    return CUDA_ERROR_INVALID_VALUE;
  }
}
CUresult fakeDeviceGetName(char *name, int length, CUdevice) {
  std::strncpy(name, "Fake GPU", size_t(length));
  return CUDA_SUCCESS;
}
CUresult fakePrimaryCtxRetain(CUcontext *context, CUdevice) {
  ++state.primaryRetains;
  *context = primary();
  return CUDA_SUCCESS;
}
CUresult fakePrimaryCtxRelease(CUdevice) {
  ++state.primaryReleases;
  return CUDA_SUCCESS;
}
CUresult fakeCtxGetCurrent(CUcontext *context) {
  *context = current();
  return CUDA_SUCCESS;
}
CUresult fakeCtxSetCurrent(CUcontext context) {
  if (state.contextStack.empty())
    state.contextStack.push_back(context);
  else
    state.contextStack.back() = context;
  return CUDA_SUCCESS;
}
CUresult fakeCtxPushCurrent(CUcontext context) {
  state.contextStack.push_back(context);
  return CUDA_SUCCESS;
}
CUresult fakeCtxPopCurrent(CUcontext *context) {
  if (state.contextStack.empty())
    return CUDA_ERROR_INVALID_CONTEXT;
  *context = state.contextStack.back();
  state.contextStack.pop_back();
  return CUDA_SUCCESS;
}
CUresult fakeCtxGetDevice(CUdevice *device) {
  if (!current())
    return CUDA_ERROR_INVALID_CONTEXT;
  *device = 0;
  return CUDA_SUCCESS;
}
CUresult fakeStreamGetCtx(CUstream stream, CUcontext *context) {
  if (!stream) {
    *context = current();
    return current() ? CUDA_SUCCESS : CUDA_ERROR_INVALID_CONTEXT;
  }
  auto it = state.streamContexts.find(stream);
  if (it == state.streamContexts.end())
    return CUDA_ERROR_INVALID_HANDLE;
  *context = it->second;
  return CUDA_SUCCESS;
}
CUresult fakeStreamIsCapturing(CUstream, CUstreamCaptureStatus *status) {
  *status = CU_STREAM_CAPTURE_STATUS_NONE;
  return CUDA_SUCCESS;
}
CUresult fakeStreamCreate(CUstream *stream, unsigned) {
  *stream = reinterpret_cast<CUstream>(new int(0));
  state.streamContexts[*stream] = current();
  return CUDA_SUCCESS;
}
CUresult fakeStreamDestroy(CUstream stream) {
  state.streamContexts.erase(stream);
  delete reinterpret_cast<int *>(stream);
  return CUDA_SUCCESS;
}
CUresult fakeStreamSynchronize(CUstream) { return CUDA_SUCCESS; }
CUresult fakeStreamQuery(CUstream) { return CUDA_SUCCESS; }
CUresult fakeModuleLoadData(CUmodule *module, const void *image) {
  ++state.cubinLoads;
  return loadImage(module, image, "FAKE-CUBIN");
}
CUresult fakeModuleLoadDataEx(CUmodule *module, const void *image, unsigned,
                              CUjit_option *, void **) {
  ++state.ptxLoads;
  return loadImage(module, image, "FAKE-PTX");
}
CUresult fakeModuleGetFunction(CUfunction *function, CUmodule module,
                               const char *name) {
  for (auto &f : reinterpret_cast<FakeModule *>(module)->functions)
    if (f->symbol == name) {
      *function = reinterpret_cast<CUfunction>(f.get());
      return CUDA_SUCCESS;
    }
  return CUDA_ERROR_NOT_FOUND;
}
CUresult fakeModuleUnload(CUmodule module) {
  ++state.unloads;
  delete reinterpret_cast<FakeModule *>(module);
  return CUDA_SUCCESS;
}
CUresult fakeFuncSetAttribute(CUfunction function,
                              CUfunction_attribute attribute, int value) {
  if (attribute != CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES)
    return CUDA_ERROR_INVALID_VALUE;
  if (value > state.sharedOptinLimit)
    return CUDA_ERROR_INVALID_VALUE;
  state.dynamicSharedOptIn[reinterpret_cast<FakeFunction *>(function)->symbol] =
      value;
  return CUDA_SUCCESS;
}
CUresult fakeFuncGetAttribute(int *, CUfunction_attribute, CUfunction) {
  return CUDA_ERROR_INVALID_VALUE;
}
CUresult fakeLaunchKernel(CUfunction function, unsigned gx, unsigned, unsigned,
                          unsigned bx, unsigned, unsigned, unsigned shared,
                          CUstream stream, void **params, void **) {
  auto *f = reinterpret_cast<FakeFunction *>(function);
  FakeCudaLaunch launch;
  launch.symbol = f->symbol;
  launch.grid = gx;
  launch.block = bx;
  launch.sharedBytes = shared;
  launch.stream = stream;
  for (int i = 0; i < f->numParams; ++i) {
    uint64_t value;
    std::memcpy(&value, params[i], 8);
    launch.params.push_back(value);
  }
  state.launches.push_back(launch);
  state.events.push_back(f->symbol);
  return CUDA_SUCCESS;
}
CUresult fakeLaunchCooperativeKernel(CUfunction function, unsigned gx,
                                     unsigned gy, unsigned gz, unsigned bx,
                                     unsigned by, unsigned bz, unsigned shared,
                                     CUstream stream, void **params) {
  CUresult result = fakeLaunchKernel(function, gx, gy, gz, bx, by, bz, shared,
                                     stream, params, nullptr);
  state.launches.back().cooperative = true;
  return result;
}
CUresult fakeMemAlloc(CUdeviceptr *pointer, size_t bytes) {
  if (!bytes)
    return CUDA_ERROR_INVALID_VALUE;
  void *memory = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
  // Poisoned, as device memory is not zeroed: what the runtime must zero,
  // it must zero itself.
  std::memset(memory, 0xa5, bytes);
  *pointer = reinterpret_cast<CUdeviceptr>(memory);
  state.allocations[*pointer] = bytes;
  return CUDA_SUCCESS;
}
CUresult fakeMemFree(CUdeviceptr pointer) {
  if (!state.allocations.erase(pointer))
    return CUDA_ERROR_INVALID_VALUE;
  std::free(reinterpret_cast<void *>(pointer));
  return CUDA_SUCCESS;
}
CUresult fakeMemsetD8Async(CUdeviceptr pointer, unsigned char value,
                           size_t bytes, CUstream) {
  std::memset(reinterpret_cast<void *>(pointer), value, bytes);
  state.events.push_back("memset");
  return CUDA_SUCCESS;
}
// Events read the host's clock when recorded (nothing runs here).
struct FakeEvent {
  std::chrono::steady_clock::time_point at;
};
CUresult fakeEventCreate(CUevent *event, unsigned) {
  *event = reinterpret_cast<CUevent>(new FakeEvent());
  return CUDA_SUCCESS;
}
CUresult fakeEventDestroy(CUevent event) {
  delete reinterpret_cast<FakeEvent *>(event);
  return CUDA_SUCCESS;
}
CUresult fakeEventRecord(CUevent event, CUstream) {
  reinterpret_cast<FakeEvent *>(event)->at = std::chrono::steady_clock::now();
  return CUDA_SUCCESS;
}
CUresult fakeEventSynchronize(CUevent) { return CUDA_SUCCESS; }
CUresult fakeEventElapsedTime(float *ms, CUevent start, CUevent end) {
  *ms = std::chrono::duration<float, std::milli>(
            reinterpret_cast<FakeEvent *>(end)->at -
            reinterpret_cast<FakeEvent *>(start)->at)
            .count();
  return CUDA_SUCCESS;
}
CUresult fakeMemcpyDtoHAsync(void *host, CUdeviceptr device, size_t bytes,
                             CUstream) {
  std::memcpy(host, reinterpret_cast<void *>(device), bytes);
  return CUDA_SUCCESS;
}
CUresult fakeMemcpyHtoDAsync(CUdeviceptr device, const void *host, size_t bytes,
                             CUstream) {
  std::memcpy(reinterpret_cast<void *>(device), host, bytes);
  return CUDA_SUCCESS;
}
CUresult fakeMemcpyDtoDAsync(CUdeviceptr to, CUdeviceptr from, size_t bytes,
                             CUstream) {
  std::memmove(reinterpret_cast<void *>(to), reinterpret_cast<void *>(from),
               bytes);
  return CUDA_SUCCESS;
}
CUresult fakePointerGetAttributes(unsigned count,
                                  CUpointer_attribute *attributes, void **data,
                                  CUdeviceptr pointer) {
  CUdeviceptr start = 0;
  size_t size = 0;
  auto it = state.allocations.upper_bound(pointer);
  if (it != state.allocations.begin()) {
    --it;
    if (pointer < it->first + it->second) {
      start = it->first;
      size = it->second;
    }
  }
  for (unsigned i = 0; i < count; ++i) {
    switch (attributes[i]) {
    case CU_POINTER_ATTRIBUTE_MEMORY_TYPE:
      *static_cast<unsigned *>(data[i]) = size ? CU_MEMORYTYPE_DEVICE : 0;
      break;
    case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR:
      *static_cast<CUdeviceptr *>(data[i]) = start;
      break;
    case CU_POINTER_ATTRIBUTE_RANGE_SIZE:
      *static_cast<size_t *>(data[i]) = size;
      break;
    default:
      return CUDA_ERROR_INVALID_VALUE;
    }
  }
  return CUDA_SUCCESS;
}
CUresult fakePointerGetAttribute(void *, CUpointer_attribute, CUdeviceptr) {
  return CUDA_ERROR_INVALID_VALUE;
}

} // namespace

extern "C" {

__attribute__((visibility("default"))) CUresult
cuDriverGetVersion(int *version) {
  *version = state.driverVersion;
  return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) CUresult
cuGetProcAddress_v2(const char *symbol, void **pointer, int, cuuint64_t,
                    CUdriverProcAddressQueryResult *status) {
  static const std::map<std::string, void *> table = {
      {"cuInit", (void *)fakeInit},
      {"cuGetErrorName", (void *)fakeGetErrorName},
      {"cuGetErrorString", (void *)fakeGetErrorString},
      {"cuDeviceGet", (void *)fakeDeviceGet},
      {"cuDeviceGetCount", (void *)fakeDeviceGetCount},
      {"cuDeviceGetAttribute", (void *)fakeDeviceGetAttribute},
      {"cuDeviceGetName", (void *)fakeDeviceGetName},
      {"cuDevicePrimaryCtxRetain", (void *)fakePrimaryCtxRetain},
      {"cuDevicePrimaryCtxRelease", (void *)fakePrimaryCtxRelease},
      {"cuCtxGetCurrent", (void *)fakeCtxGetCurrent},
      {"cuCtxSetCurrent", (void *)fakeCtxSetCurrent},
      {"cuCtxPushCurrent", (void *)fakeCtxPushCurrent},
      {"cuCtxPopCurrent", (void *)fakeCtxPopCurrent},
      {"cuCtxGetDevice", (void *)fakeCtxGetDevice},
      {"cuStreamGetCtx", (void *)fakeStreamGetCtx},
      {"cuStreamIsCapturing", (void *)fakeStreamIsCapturing},
      {"cuStreamCreate", (void *)fakeStreamCreate},
      {"cuStreamDestroy", (void *)fakeStreamDestroy},
      {"cuStreamSynchronize", (void *)fakeStreamSynchronize},
      {"cuStreamQuery", (void *)fakeStreamQuery},
      {"cuModuleLoadData", (void *)fakeModuleLoadData},
      {"cuModuleLoadDataEx", (void *)fakeModuleLoadDataEx},
      {"cuModuleGetFunction", (void *)fakeModuleGetFunction},
      {"cuModuleUnload", (void *)fakeModuleUnload},
      {"cuFuncSetAttribute", (void *)fakeFuncSetAttribute},
      {"cuFuncGetAttribute", (void *)fakeFuncGetAttribute},
      {"cuLaunchKernel", (void *)fakeLaunchKernel},
      {"cuLaunchCooperativeKernel", (void *)fakeLaunchCooperativeKernel},
      {"cuMemAlloc", (void *)fakeMemAlloc},
      {"cuMemFree", (void *)fakeMemFree},
      {"cuMemsetD8Async", (void *)fakeMemsetD8Async},
      {"cuMemcpyDtoHAsync", (void *)fakeMemcpyDtoHAsync},
      {"cuMemcpyHtoDAsync", (void *)fakeMemcpyHtoDAsync},
      {"cuMemcpyDtoDAsync", (void *)fakeMemcpyDtoDAsync},
      {"cuPointerGetAttribute", (void *)fakePointerGetAttribute},
      {"cuPointerGetAttributes", (void *)fakePointerGetAttributes},
      {"cuEventCreate", (void *)fakeEventCreate},
      {"cuEventDestroy", (void *)fakeEventDestroy},
      {"cuEventRecord", (void *)fakeEventRecord},
      {"cuEventSynchronize", (void *)fakeEventSynchronize},
      {"cuEventElapsedTime", (void *)fakeEventElapsedTime},
  };
  auto it = table.find(symbol);
  if (it == table.end()) {
    *pointer = nullptr;
    if (status)
      *status = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    return CUDA_ERROR_NOT_FOUND;
  }
  *pointer = it->second;
  if (status)
    *status = CU_GET_PROC_ADDRESS_SUCCESS;
  return CUDA_SUCCESS;
}

__attribute__((visibility("default"))) FakeCudaState *moegenFakeCudaState() {
  return &state;
}
__attribute__((visibility("default"))) CUcontext
moegenFakeCudaPrimaryContext() {
  return primary();
}
__attribute__((visibility("default"))) CUcontext moegenFakeCudaOtherContext() {
  return other();
}

} // extern "C"
