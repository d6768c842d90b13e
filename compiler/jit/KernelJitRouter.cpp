//===- KernelJitRouter.cpp - JIT-compile for the device, then load --------===//
//
// Apart from KernelJit.cpp because it needs the runtime's CUDA library,
// which is built only where <cuda.h> is found.
//
//===----------------------------------------------------------------------===//

#include "compiler/jit/KernelJit.h"
#include "runtime/Error.h"
#include "runtime/cuda/CudaRouter.h"

namespace moegen::jit {

std::unique_ptr<rt::CudaRouter> loadRouter(const RoutingSpec &spec,
                                           const JitOptions &options,
                                           const rt::LoadOptions &load,
                                           rt::CacheEntry *entry) {
  JitOptions resolved = options;
  if (resolved.compile.arch.empty()) {
    const rt::CudaDriver &driver =
        load.driver ? *load.driver : rt::CudaDriver::get();
    // The device CudaRouter::load will use: the current context's, else
    // load.device.
    CUcontext current = nullptr;
    driver.check(driver.ctxGetCurrent(&current), "cuCtxGetCurrent");
    CUdevice device = 0;
    if (current) {
      driver.check(driver.ctxGetDevice(&device), "cuCtxGetDevice");
    } else {
      if (load.device < 0 || load.device >= driver.deviceCount())
        throw rt::Error(rt::Error::Kind::InvalidArgument,
                        "JIT: device " + std::to_string(load.device) +
                            " does not exist (the driver sees " +
                            std::to_string(driver.deviceCount()) + ")");
      driver.check(driver.deviceGet(&device, load.device), "cuDeviceGet");
    }
    int major = 0, minor = 0;
    driver.check(driver.deviceGetAttribute(
                     &major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                     device),
                 "cuDeviceGetAttribute");
    driver.check(driver.deviceGetAttribute(
                     &minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                     device),
                 "cuDeviceGetAttribute");
    resolved.compile.arch = nvptx::archForComputeCapability(major, minor);
    if (resolved.compile.arch.empty())
      throw rt::Error(rt::Error::Kind::Arch,
                      "JIT: the device has compute capability " +
                          std::to_string(major) + "." + std::to_string(minor) +
                          "; moegen's kernels need 8.0 or newer");
  }
  rt::CacheEntry compiled = compileCached(spec, resolved);
  if (entry)
    *entry = compiled;
  return rt::CudaRouter::load(compiled.directory, load);
}

} // namespace moegen::jit
