//===- CudaDriver.h - The CUDA driver API, loaded at run time ---*- C++ -*-===//
//
// The runtime never links libcuda: it opens libcuda.so.1 with dlopen, finds
// cuGetProcAddress (the CUDA 12+ cuGetProcAddress_v2, else the CUDA 11.3+
// cuGetProcAddress) and resolves every function it uses through it, asking
// for the CUDA 12.0 version of each. One binary therefore builds and starts
// on a machine without a GPU, and reports
//
//   no CUDA driver: dlopen(libcuda.so.1) failed: libcuda.so.1: cannot open ...
//
// as an Error(Kind::NoDriver). cuInit failing with CUDA_ERROR_NO_DEVICE, or
// no device, is Error(Kind::NoDevice); any other failed call is
// Error(Kind::Driver) naming the call and the driver's error name and text.
//
// A driver can also be built from entry points that live in the process
// (fromEntryPoints), e.g. a driver that emulates the GPU on the host; it
// passes the same initialization checks.
//
// <cuda.h> is included for its types only.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_RUNTIME_CUDA_CUDADRIVER_H
#define MOEGEN_RUNTIME_CUDA_CUDADRIVER_H

#include <cuda.h>

#include <functional>
#include <memory>
#include <string>

namespace moegen::rt {

class CudaDriver {
public:
  /// The process-wide driver: loaded and initialized (cuInit) on first use,
  /// thread-safely; never unloaded. Throws Error (NoDriver, NoDevice or
  /// Driver) on every call when loading failed.
  static const CudaDriver &get();

  /// Loads and initializes a driver from `library` (a name for dlopen or a
  /// path); for tests and for tools that pick a driver. Throws like get().
  static std::unique_ptr<CudaDriver> open(const std::string &library);

  /// Builds and initializes a driver whose entry points are in this process:
  /// `getProc` maps each CUDA symbol ("cuInit", "cuMemAlloc", ...) to its
  /// CUDA 12.0 form, or to null when it lacks it (Error(NoDriver) naming
  /// the symbol). `name` stands for the library in messages and
  /// libraryName(); `driverVersion` is what version() reports. Throws like
  /// get() when cuInit fails or no device is seen.
  static std::unique_ptr<CudaDriver>
  fromEntryPoints(const std::string &name, int driverVersion,
                  void *(*getProc)(const char *symbol));

  ~CudaDriver();
  CudaDriver(const CudaDriver &) = delete;
  CudaDriver &operator=(const CudaDriver &) = delete;

  /// cuDriverGetVersion, e.g. 12040.
  int version() const { return driverVersion; }
  int deviceCount() const { return devices; }
  const std::string &libraryName() const { return library; }

  /// "CUDA_ERROR_INVALID_VALUE (invalid argument)".
  std::string describe(CUresult result) const;

  /// A device's name ("NVIDIA H200") and compute capability.
  struct DeviceInfo {
    std::string name;
    int major = 0, minor = 0;
  };
  /// Device `ordinal`'s; throws like check().
  DeviceInfo deviceInfo(int ordinal) const;
  /// Throws Error(Kind::Driver) "WHAT: CUDA_ERROR_... (text)" unless
  /// `result` is CUDA_SUCCESS.
  void check(CUresult result, const char *what) const;

  // The resolved entry points (CUDA 12.0 signatures).
  CUresult (*init)(unsigned int) = nullptr;
  CUresult (*getErrorName)(CUresult, const char **) = nullptr;
  CUresult (*getErrorString)(CUresult, const char **) = nullptr;
  CUresult (*deviceGet)(CUdevice *, int) = nullptr;
  CUresult (*deviceGetCount)(int *) = nullptr;
  CUresult (*deviceGetAttribute)(int *, CUdevice_attribute, CUdevice) = nullptr;
  CUresult (*deviceGetName)(char *, int, CUdevice) = nullptr;
  CUresult (*devicePrimaryCtxRetain)(CUcontext *, CUdevice) = nullptr;
  CUresult (*devicePrimaryCtxRelease)(CUdevice) = nullptr;
  CUresult (*ctxGetCurrent)(CUcontext *) = nullptr;
  CUresult (*ctxSetCurrent)(CUcontext) = nullptr;
  CUresult (*ctxPushCurrent)(CUcontext) = nullptr;
  CUresult (*ctxPopCurrent)(CUcontext *) = nullptr;
  CUresult (*ctxGetDevice)(CUdevice *) = nullptr;
  CUresult (*streamGetCtx)(CUstream, CUcontext *) = nullptr;
  CUresult (*streamIsCapturing)(CUstream, CUstreamCaptureStatus *) = nullptr;
  CUresult (*streamCreate)(CUstream *, unsigned int) = nullptr;
  CUresult (*streamDestroy)(CUstream) = nullptr;
  CUresult (*streamSynchronize)(CUstream) = nullptr;
  /// CUDA_SUCCESS when the stream's work is done, CUDA_ERROR_NOT_READY
  /// while it runs (for waits with a deadline).
  CUresult (*streamQuery)(CUstream) = nullptr;
  CUresult (*moduleLoadData)(CUmodule *, const void *) = nullptr;
  CUresult (*moduleLoadDataEx)(CUmodule *, const void *, unsigned int,
                               CUjit_option *, void **) = nullptr;
  CUresult (*moduleGetFunction)(CUfunction *, CUmodule, const char *) = nullptr;
  CUresult (*moduleUnload)(CUmodule) = nullptr;
  CUresult (*funcSetAttribute)(CUfunction, CUfunction_attribute, int) = nullptr;
  CUresult (*funcGetAttribute)(int *, CUfunction_attribute,
                               CUfunction) = nullptr;
  CUresult (*launchKernel)(CUfunction, unsigned int, unsigned int, unsigned int,
                           unsigned int, unsigned int, unsigned int,
                           unsigned int, CUstream, void **, void **) = nullptr;
  CUresult (*launchCooperativeKernel)(CUfunction, unsigned int, unsigned int,
                                      unsigned int, unsigned int, unsigned int,
                                      unsigned int, unsigned int, CUstream,
                                      void **) = nullptr;
  CUresult (*memAlloc)(CUdeviceptr *, size_t) = nullptr;
  CUresult (*memFree)(CUdeviceptr) = nullptr;
  CUresult (*memsetD8Async)(CUdeviceptr, unsigned char, size_t,
                            CUstream) = nullptr;
  CUresult (*memcpyDtoHAsync)(void *, CUdeviceptr, size_t, CUstream) = nullptr;
  CUresult (*memcpyHtoDAsync)(CUdeviceptr, const void *, size_t,
                              CUstream) = nullptr;
  CUresult (*memcpyDtoDAsync)(CUdeviceptr, CUdeviceptr, size_t,
                              CUstream) = nullptr;
  /// Optional (CUDA 12.8 and later; null on older drivers): many
  /// pointer-to-pointer copies in one call, in its CUDA 12.8 form (with
  /// failIdx). The device EP operations gather rows with it (copyRows).
  CUresult (*memcpyBatchAsync)(CUdeviceptr *, CUdeviceptr *, size_t *, size_t,
                               CUmemcpyAttributes *, size_t *, size_t,
                               size_t *, CUstream) = nullptr;
  CUresult (*pointerGetAttribute)(void *, CUpointer_attribute,
                                  CUdeviceptr) = nullptr;
  CUresult (*pointerGetAttributes)(unsigned int, CUpointer_attribute *, void **,
                                   CUdeviceptr) = nullptr;
  // Events, for timing kernels on the device (DeviceTimer.h).
  CUresult (*eventCreate)(CUevent *, unsigned int) = nullptr;
  CUresult (*eventDestroy)(CUevent) = nullptr;
  CUresult (*eventRecord)(CUevent, CUstream) = nullptr;
  CUresult (*eventSynchronize)(CUevent) = nullptr;
  CUresult (*eventElapsedTime)(float *, CUevent, CUevent) = nullptr;

private:
  CudaDriver() = default;
  void load(const std::string &library);
  /// Resolves every entry point through `find` (symbol, the CUDA version
  /// of its signature; null: missing).
  void
  resolveEntryPoints(const std::function<void *(const char *, int)> &find);
  /// cuInit and the device count; throws NoDevice or Driver.
  void initialize();

  /// The dlopen handle; null for a driver built from entry points.
  void *handle = nullptr;
  bool closeOnDestroy = true;
  std::string library;
  int driverVersion = 0;
  int devices = 0;
};

/// Makes `context` current for a scope when it is not already, and restores
/// the previous one; no-op when it is current. Throws on failure.
class ScopedContext {
public:
  ScopedContext(const CudaDriver &driver, CUcontext context);
  ~ScopedContext();
  ScopedContext(const ScopedContext &) = delete;
  ScopedContext &operator=(const ScopedContext &) = delete;

private:
  const CudaDriver &driver;
  bool pushed = false;
};

} // namespace moegen::rt

#endif // MOEGEN_RUNTIME_CUDA_CUDADRIVER_H
