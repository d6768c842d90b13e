//===- EmuCudaDriver.h - The GPU emulator as a CUDA driver ------*- C++ -*-===//
//
// The GPU emulator presents itself to the runtime as a CUDA driver, so that
// the emulated NVPTX kernels run through the runtime's unchanged launch path
// (CudaRouter, CudaHostRouter): emulatedDriver() is an rt::CudaDriver whose
// entry points are implemented here, in process, over host memory.
//
// What it models:
//   - one device, compute capability 9.0, 227 KiB of opt-in dynamic shared
//     memory per block; its primary context (the only context) and a
//     per-thread context stack; streams, each tied to the context current
//     when it was made;
//   - cuMemAlloc over host memory (256-byte aligned, filled with a poison
//     pattern as real device memory is not zeroed), and an allocation table
//     that answers cuPointerGetAttribute(s) and bounds memset and memcpy,
//     and caller-owned host memory registered as device memory
//     (ScopedDeviceMemory);
//   - modules: an image is the text registerModule() returns, naming kernels
//     registered in this process; anything else is CUDA_ERROR_INVALID_IMAGE;
//   - cuLaunchKernel for 1-D grids and blocks: the launch runs to completion
//     inside the call through gpuemu::launch, with the allocations that the
//     kernel's pointer parameters point into as the memory it may touch. A
//     kernel fault is CUDA_ERROR_LAUNCH_FAILED, and cuGetErrorString then
//     returns the fault's one-line description.
//
// What it does not model: asynchrony (every call completes before it
// returns, so stream order is trivially kept), multiple devices or
// contexts, 2-D and 3-D launches, sticky errors (the context stays usable
// after a fault), peer or host-mapped memory, static shared memory, and the
// driver's resource limits other than block size and shared memory.
//
// Plain C++20 and <cuda.h> for its types; no LLVM or MLIR.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_COMPILER_BACKEND_GPUEMU_EMUCUDADRIVER_H
#define MOEGEN_COMPILER_BACKEND_GPUEMU_EMUCUDADRIVER_H

#include "compiler/backend/gpuemu/EmuRuntime.h"

#include <cstdint>
#include <string>
#include <vector>

namespace moegen::rt {
class CudaDriver;
} // namespace moegen::rt

namespace moegen::gpuemu {

/// One kernel of an emulated module: the symbol cuModuleGetFunction finds,
/// the number of 8-byte parameters cuLaunchKernel reads, and the host
/// function that runs one GPU thread.
struct EmuKernel {
  std::string symbol;
  int numParams = 0;
  EmuKernelFn fn = nullptr;
};

/// Registers a module's kernels in this process and returns its image: the
/// text that cuModuleLoadData and cuModuleLoadDataEx accept (written as a
/// kernel directory's kernels.ptx). The image is valid only in the process
/// that registered it. Thread-safe.
std::string registerModule(std::vector<EmuKernel> kernels);
/// Forgets the module of `image` (before its code goes away): loading it
/// again fails. Modules already loaded keep their functions, so unload them
/// first. Thread-safe; unknown images are ignored.
void unregisterModule(const std::string &image);

/// How launches run.
struct EmuOptions {
  /// Randomises the order of warps and blocks (LaunchConfig::seed).
  uint64_t seed = 1;
  /// Threads that run blocks; 0: the emulation runtime's default.
  unsigned workerThreads = 0;
  /// Report shared-memory races (two threads, one writing, between
  /// barriers).
  bool checkRaces = true;
};

/// The options of later launches. Until set, the seed is
/// seedFromEnvironment(1) and the rest are EmuOptions' defaults.
void setEmuOptions(const EmuOptions &options);
EmuOptions emuOptions();

/// The description of the most recent kernel fault, and forgets it; empty
/// when no launch has faulted since the last call.
std::string takeLastFault();

/// The emulator's implementation of a CUDA driver entry point ("cuInit",
/// "cuLaunchKernel", ...; the CUDA 12.0 forms), or null when it has none.
void *entryPoint(const char *symbol);

/// Host memory the caller owns, made emulated device memory while this
/// object lives: launches may touch [pointer, pointer + bytes) and pointer
/// queries answer for it, as for cuMemAlloc's memory (what
/// cuMemHostRegister and a mapped device pointer give on a GPU). For
/// callers that hand the emulator buffers they did not allocate through it,
/// such as the Python package's tensors. A range that overlaps memory the
/// emulator already knows is not registered (registered() says so); zero
/// bytes register nothing. Thread-safe.
class ScopedDeviceMemory {
public:
  ScopedDeviceMemory(const void *pointer, size_t bytes);
  ~ScopedDeviceMemory();
  ScopedDeviceMemory(const ScopedDeviceMemory &) = delete;
  ScopedDeviceMemory &operator=(const ScopedDeviceMemory &) = delete;
  bool registered() const { return key != 0; }

private:
  uintptr_t key = 0;
};

/// The process-wide emulated driver: rt::CudaDriver::fromEntryPoints(
/// "moegen GPU emulator", 12080, ...). Never destroyed.
const rt::CudaDriver &emulatedDriver();

} // namespace moegen::gpuemu

#endif // MOEGEN_COMPILER_BACKEND_GPUEMU_EMUCUDADRIVER_H
