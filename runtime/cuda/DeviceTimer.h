//===- DeviceTimer.h - Kernel time on the device, with a cold L2 -*- C++ -*-===//
//
// Times work enqueued on a stream as the field times GPU kernels: CUDA
// events around one call, a buffer larger than the L2 cache written before
// each sample so that the call reads its inputs from memory, warm-up calls
// first, then the median and spread of the samples. `moegen autotune
// --backend cuda` and `moegen-gpu-check --bench` use it.
//
//   rt::DeviceTimer timer(router.driver(), router.context());
//   for (int i = 0; i < 50; ++i)
//     samples.push_back(timer.sampleUs([&](CUstream s) { ... }, stream));
//   rt::TimingSummary summary = rt::summarize(samples);
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_RUNTIME_CUDA_DEVICETIMER_H
#define MOEGEN_RUNTIME_CUDA_DEVICETIMER_H

#include "runtime/cuda/CudaDriver.h"

#include <cstddef>
#include <functional>
#include <vector>

namespace moegen::rt {

/// Microseconds: the median and the 10th / 90th percentiles of samples.
struct TimingSummary {
  double medianUs = 0, p10Us = 0, p90Us = 0;
  size_t samples = 0;
};
TimingSummary summarize(std::vector<double> samplesUs);

class DeviceTimer {
public:
  /// 256 MiB: five times the largest L2 of the archs moegen targets (H100
  /// and H200 have 50 MiB, B200 126 MiB).
  static constexpr size_t kDefaultFlushBytes = size_t(256) << 20;

  /// Allocates the flush buffer (`flushBytes`, 0 for none: a warm L2) and
  /// two events in `context`. Throws Error like the driver's calls.
  DeviceTimer(const CudaDriver &driver, CUcontext context,
              size_t flushBytes = kDefaultFlushBytes);
  ~DeviceTimer();
  DeviceTimer(const DeviceTimer &) = delete;
  DeviceTimer &operator=(const DeviceTimer &) = delete;

  /// Writes the flush buffer, then records an event, enqueues `call` on
  /// `stream`, records another and waits for it: the call's time on the
  /// device, in microseconds.
  double sampleUs(const std::function<void(CUstream)> &call, CUstream stream);

private:
  const CudaDriver &driver;
  CUcontext context;
  CUdeviceptr flush = 0;
  size_t flushBytes;
  CUevent start = nullptr, end = nullptr;
};

} // namespace moegen::rt

#endif // MOEGEN_RUNTIME_CUDA_DEVICETIMER_H
