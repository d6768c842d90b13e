//===- CudaHostRouter.h - The CUDA kernels over host buffers ----*- C++ -*-===//
//
// A HostRouter that runs a CudaRouter's kernels on host tensors: every call
// uploads the inputs (and the capture buffer), launches on the default
// stream of the router's context, reads the error record and downloads the
// outputs. Device buffers are kept between calls and grow as needed. For
// tools, tests and samples; engines keep their tensors on the device and
// call CudaRouter directly.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_RUNTIME_CUDA_CUDAHOSTROUTER_H
#define MOEGEN_RUNTIME_CUDA_CUDAHOSTROUTER_H

#include "runtime/HostRouter.h"
#include "runtime/cuda/CudaRouter.h"

#include <array>
#include <memory>
#include <string>

namespace moegen::rt {

class CudaHostRouter final : public HostRouter {
public:
  explicit CudaHostRouter(std::unique_ptr<CudaRouter> router);
  /// CudaRouter::load, wrapped.
  static std::unique_ptr<CudaHostRouter> load(const std::string &directory,
                                              const LoadOptions &options = {});

  const RouterFacts &facts() const override { return routerFacts; }
  std::string_view backendName() const override { return "cuda"; }
  std::string run(const HostRouteCall &call) override;
  std::string permute(const HostPermuteCall &call) override;
  std::string combine(const HostCombineCall &call) override;
  std::string updateBias(const HostUpdateBiasCall &call) override;

  /// The device router, for launches on device pointers.
  const CudaRouter &device() const { return *router; }

private:
  enum Slot {
    Logits,
    Bias,
    TokenIds,
    HashTable,
    ForcedIds,
    Capture,
    TopkIds,
    TopkWeights,
    SharedGateLogits,
    SharedGate,
    ExpertCounts,
    ExpertOffsets,
    SortedSlots,
    SlotPositions,
    HiddenIn,
    HiddenOut,
    NumSlots
  };
  /// The slot's buffer, grown to at least `bytes` (and 8), with `host`
  /// copied in when given.
  CUdeviceptr stage(Slot slot, const void *host, size_t bytes);
  void fetch(Slot slot, void *host, size_t bytes) const;

  std::unique_ptr<CudaRouter> router;
  RouterFacts routerFacts;
  std::array<DeviceBuffer, NumSlots> buffers;
};

} // namespace moegen::rt

#endif // MOEGEN_RUNTIME_CUDA_CUDAHOSTROUTER_H
