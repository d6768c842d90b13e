//===- RuntimeFakeCuda.h - A stand-in libcuda for the runtime tests -*- C++
//-*-===//
//
// libmoegen-fake-cuda.so exports cuGetProcAddress_v2 and cuDriverGetVersion
// like libcuda.so.1 and implements the entry points CudaDriver resolves on
// the host: "device memory" is host memory, launches are recorded, not run.
// It lets the CudaRouter tests check manifests, arch selection, argument
// checks, parameter packing and grids on machines without a GPU. The tests
// steer and inspect it through moegenFakeCudaState().
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_TESTS_UNIT_RUNTIMEFAKECUDA_H
#define MOEGEN_TESTS_UNIT_RUNTIMEFAKECUDA_H

#include <cuda.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

struct FakeCudaLaunch {
  std::string symbol;
  unsigned grid = 0, block = 0, sharedBytes = 0;
  bool cooperative = false;
  CUstream stream = nullptr;
  std::vector<uint64_t> params;
};

struct FakeCudaState {
  int driverVersion = 12040;
  CUresult initResult = CUDA_SUCCESS;
  int deviceCount = 1;
  int ccMajor = 9, ccMinor = 0;
  int sharedOptinLimit = 232448;
  int multiprocessors = 132;
  int cooperativeLaunch = 1;
  /// The context stack of the (single) calling thread; back() is current.
  std::vector<CUcontext> contextStack;
  /// Contexts of streams made by cuStreamCreate (or set by a test).
  std::map<CUstream, CUcontext> streamContexts;
  std::map<CUdeviceptr, size_t> allocations;
  int primaryRetains = 0, primaryReleases = 0;
  int cubinLoads = 0, ptxLoads = 0, unloads = 0;
  /// Set by cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES).
  std::map<std::string, int> dynamicSharedOptIn;
  /// Every memset and launch, in order: "memset" or the kernel symbol.
  std::vector<std::string> events;
  std::vector<FakeCudaLaunch> launches;

  void reset() { *this = FakeCudaState(); }
};

/// The fake's state (exported by the library).
extern "C" FakeCudaState *moegenFakeCudaState();
/// The primary context of device 0 and a second context, for stream tests.
extern "C" CUcontext moegenFakeCudaPrimaryContext();
extern "C" CUcontext moegenFakeCudaOtherContext();

#endif // MOEGEN_TESTS_UNIT_RUNTIMEFAKECUDA_H
