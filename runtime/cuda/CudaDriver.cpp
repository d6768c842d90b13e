//===- CudaDriver.cpp - The CUDA driver API, loaded at run time -----------===//

#include "runtime/cuda/CudaDriver.h"
#include "runtime/Error.h"

#include <algorithm>
#include <mutex>
#include <optional>

#include <dlfcn.h>

namespace moegen::rt {

namespace {

/// Every entry point is requested in its CUDA 12.0 form (or the driver's
/// own version when older), so the signatures above stay valid on newer
/// drivers.
constexpr int kRequestedCudaVersion = 12000;
/// cuMemcpyBatchAsync's first form (with failIdx).
constexpr int kBatchCopyCudaVersion = 12080;
/// cuGetProcAddress appeared in CUDA 11.3.
constexpr int kMinimumDriverVersion = 11030;

using GetProcAddressV2 = CUresult (*)(const char *, void **, int, cuuint64_t,
                                      CUdriverProcAddressQueryResult *);
using GetProcAddressV1 = CUresult (*)(const char *, void **, int, cuuint64_t);

std::string versionText(int version) {
  return std::to_string(version / 1000) + "." +
         std::to_string(version % 1000 / 10);
}

} // namespace

std::unique_ptr<CudaDriver> CudaDriver::open(const std::string &library) {
  std::unique_ptr<CudaDriver> driver(new CudaDriver());
  driver->load(library);
  return driver;
}

const CudaDriver &CudaDriver::get() {
  static std::once_flag once;
  static CudaDriver *driver = nullptr;
  static std::optional<Error> failure;
  std::call_once(once, [] {
    try {
      // Never unloaded: kernels and modules may outlive any owner.
      driver = open("libcuda.so.1").release();
      driver->closeOnDestroy = false;
    } catch (const Error &e) {
      failure = e;
    }
  });
  if (failure)
    throw *failure;
  return *driver;
}

CudaDriver::~CudaDriver() {
  if (handle && closeOnDestroy)
    ::dlclose(handle);
}

void CudaDriver::load(const std::string &name) {
  library = name;
  ::dlerror();
  handle = ::dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char *reason = ::dlerror();
    throw Error(Error::Kind::NoDriver,
                "no CUDA driver: dlopen(" + name +
                    ") failed: " + (reason ? reason : "unknown reason"));
  }
  auto getProcV2 = reinterpret_cast<GetProcAddressV2>(
      ::dlsym(handle, "cuGetProcAddress_v2"));
  auto getProcV1 = getProcV2 ? nullptr
                             : reinterpret_cast<GetProcAddressV1>(
                                   ::dlsym(handle, "cuGetProcAddress"));
  auto getVersion = reinterpret_cast<CUresult (*)(int *)>(
      ::dlsym(handle, "cuDriverGetVersion"));
  if ((!getProcV2 && !getProcV1) || !getVersion)
    throw Error(Error::Kind::NoDriver,
                "no CUDA driver: " + name +
                    " has no cuGetProcAddress (a driver for CUDA 11.3 or "
                    "newer is needed)");
  if (getVersion(&driverVersion) != CUDA_SUCCESS ||
      driverVersion < kMinimumDriverVersion)
    throw Error(Error::Kind::NoDriver,
                "no CUDA driver: " + name + " is version " +
                    versionText(driverVersion) +
                    "; a driver for CUDA 11.3 or newer is needed");
  resolveEntryPoints([&](const char *symbol, int version) -> void * {
    // A driver older than the signature's version lacks the entry point
    // (optional ones) or has it in its own, older form (required ones,
    // all of CUDA 12.0 or older).
    if (version > kRequestedCudaVersion && driverVersion < version)
      return nullptr;
    const int requested = std::min(driverVersion, version);
    void *pointer = nullptr;
    CUresult result;
    if (getProcV2) {
      CUdriverProcAddressQueryResult status{};
      result = getProcV2(symbol, &pointer, requested,
                         CU_GET_PROC_ADDRESS_DEFAULT, &status);
    } else {
      result =
          getProcV1(symbol, &pointer, requested, CU_GET_PROC_ADDRESS_DEFAULT);
    }
    return result == CUDA_SUCCESS ? pointer : nullptr;
  });
  initialize();
}

std::unique_ptr<CudaDriver>
CudaDriver::fromEntryPoints(const std::string &name, int version,
                            void *(*getProc)(const char *symbol)) {
  std::unique_ptr<CudaDriver> driver(new CudaDriver());
  driver->library = name;
  driver->driverVersion = version;
  driver->resolveEntryPoints([getProc](const char *symbol, int) -> void * {
    return getProc ? getProc(symbol) : nullptr;
  });
  driver->initialize();
  return driver;
}

void CudaDriver::resolveEntryPoints(
    const std::function<void *(const char *, int)> &find) {
  auto resolve = [&](const char *symbol, auto &function) {
    void *pointer = find(symbol, kRequestedCudaVersion);
    if (!pointer)
      throw Error(Error::Kind::NoDriver, "no usable CUDA driver: " + library +
                                             " (CUDA " +
                                             versionText(driverVersion) +
                                             ") does not provide " + symbol);
    function =
        reinterpret_cast<std::remove_reference_t<decltype(function)>>(pointer);
  };
  resolve("cuGetErrorName", getErrorName);
  resolve("cuGetErrorString", getErrorString);
  resolve("cuInit", init);
  resolve("cuDeviceGet", deviceGet);
  resolve("cuDeviceGetCount", deviceGetCount);
  resolve("cuDeviceGetAttribute", deviceGetAttribute);
  resolve("cuDeviceGetName", deviceGetName);
  resolve("cuDevicePrimaryCtxRetain", devicePrimaryCtxRetain);
  resolve("cuDevicePrimaryCtxRelease", devicePrimaryCtxRelease);
  resolve("cuCtxGetCurrent", ctxGetCurrent);
  resolve("cuCtxSetCurrent", ctxSetCurrent);
  resolve("cuCtxPushCurrent", ctxPushCurrent);
  resolve("cuCtxPopCurrent", ctxPopCurrent);
  resolve("cuCtxGetDevice", ctxGetDevice);
  resolve("cuStreamGetCtx", streamGetCtx);
  resolve("cuStreamIsCapturing", streamIsCapturing);
  resolve("cuStreamCreate", streamCreate);
  resolve("cuStreamDestroy", streamDestroy);
  resolve("cuStreamSynchronize", streamSynchronize);
  resolve("cuStreamQuery", streamQuery);
  resolve("cuModuleLoadData", moduleLoadData);
  resolve("cuModuleLoadDataEx", moduleLoadDataEx);
  resolve("cuModuleGetFunction", moduleGetFunction);
  resolve("cuModuleUnload", moduleUnload);
  resolve("cuFuncSetAttribute", funcSetAttribute);
  resolve("cuFuncGetAttribute", funcGetAttribute);
  resolve("cuLaunchKernel", launchKernel);
  resolve("cuLaunchCooperativeKernel", launchCooperativeKernel);
  resolve("cuMemAlloc", memAlloc);
  resolve("cuMemFree", memFree);
  resolve("cuMemsetD8Async", memsetD8Async);
  resolve("cuMemcpyDtoHAsync", memcpyDtoHAsync);
  resolve("cuMemcpyHtoDAsync", memcpyHtoDAsync);
  resolve("cuMemcpyDtoDAsync", memcpyDtoDAsync);
  memcpyBatchAsync = reinterpret_cast<decltype(memcpyBatchAsync)>(
      find("cuMemcpyBatchAsync", kBatchCopyCudaVersion));
  resolve("cuPointerGetAttribute", pointerGetAttribute);
  resolve("cuPointerGetAttributes", pointerGetAttributes);
  resolve("cuEventCreate", eventCreate);
  resolve("cuEventDestroy", eventDestroy);
  resolve("cuEventRecord", eventRecord);
  resolve("cuEventSynchronize", eventSynchronize);
  resolve("cuEventElapsedTime", eventElapsedTime);
}

void CudaDriver::initialize() {
  CUresult result = init(0);
  if (result == CUDA_ERROR_NO_DEVICE)
    throw Error(Error::Kind::NoDevice,
                "no CUDA device: cuInit: " + describe(result));
  if (result != CUDA_SUCCESS)
    throw Error(Error::Kind::Driver,
                "CUDA driver initialization failed: cuInit: " +
                    describe(result));
  check(deviceGetCount(&devices), "cuDeviceGetCount");
  if (devices < 1)
    throw Error(Error::Kind::NoDevice, "no CUDA device: the driver (CUDA " +
                                           versionText(driverVersion) +
                                           ") sees no device");
}

std::string CudaDriver::describe(CUresult result) const {
  const char *name = nullptr, *text = nullptr;
  if (!getErrorName || getErrorName(result, &name) != CUDA_SUCCESS || !name)
    return "CUDA error " + std::to_string(int(result));
  std::string message = name;
  if (getErrorString && getErrorString(result, &text) == CUDA_SUCCESS && text)
    message += std::string(" (") + text + ")";
  return message;
}

void CudaDriver::check(CUresult result, const char *what) const {
  if (result != CUDA_SUCCESS)
    throw Error(Error::Kind::Driver,
                std::string(what) + ": " + describe(result));
}

CudaDriver::DeviceInfo CudaDriver::deviceInfo(int ordinal) const {
  DeviceInfo info;
  CUdevice device = 0;
  check(deviceGet(&device, ordinal), "cuDeviceGet");
  char name[256] = {};
  check(deviceGetName(name, sizeof name - 1, device), "cuDeviceGetName");
  info.name = name;
  check(deviceGetAttribute(&info.major,
                           CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device),
        "cuDeviceGetAttribute(compute capability)");
  check(deviceGetAttribute(&info.minor,
                           CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device),
        "cuDeviceGetAttribute(compute capability)");
  return info;
}

ScopedContext::ScopedContext(const CudaDriver &driver, CUcontext context)
    : driver(driver) {
  CUcontext current = nullptr;
  driver.check(driver.ctxGetCurrent(&current), "cuCtxGetCurrent");
  if (current != context) {
    driver.check(driver.ctxPushCurrent(context), "cuCtxPushCurrent");
    pushed = true;
  }
}

ScopedContext::~ScopedContext() {
  if (pushed) {
    CUcontext popped = nullptr;
    driver.ctxPopCurrent(&popped);
  }
}

} // namespace moegen::rt
