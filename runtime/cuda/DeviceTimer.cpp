//===- DeviceTimer.cpp - Kernel time on the device, with a cold L2 --------===//

#include "runtime/cuda/DeviceTimer.h"

#include <algorithm>
#include <cmath>

namespace moegen::rt {

TimingSummary summarize(std::vector<double> samplesUs) {
  TimingSummary summary;
  summary.samples = samplesUs.size();
  if (samplesUs.empty())
    return summary;
  std::sort(samplesUs.begin(), samplesUs.end());
  // Nearest rank: the sample at or below which the fraction lies.
  auto at = [&](double fraction) {
    size_t rank = size_t(std::ceil(fraction * double(samplesUs.size())));
    return samplesUs[std::clamp<size_t>(rank, 1, samplesUs.size()) - 1];
  };
  summary.medianUs = samplesUs.size() % 2
                         ? samplesUs[samplesUs.size() / 2]
                         : 0.5 * (samplesUs[samplesUs.size() / 2 - 1] +
                                  samplesUs[samplesUs.size() / 2]);
  summary.p10Us = at(0.1);
  summary.p90Us = at(0.9);
  return summary;
}

DeviceTimer::DeviceTimer(const CudaDriver &driver, CUcontext context,
                         size_t flushBytes)
    : driver(driver), context(context), flushBytes(flushBytes) {
  ScopedContext scope(driver, context);
  if (flushBytes)
    driver.check(driver.memAlloc(&flush, flushBytes), "cuMemAlloc");
  CUresult result = driver.eventCreate(&start, CU_EVENT_DEFAULT);
  if (result == CUDA_SUCCESS)
    result = driver.eventCreate(&end, CU_EVENT_DEFAULT);
  if (result != CUDA_SUCCESS) {
    if (start)
      driver.eventDestroy(start);
    if (flush)
      driver.memFree(flush);
    driver.check(result, "cuEventCreate");
  }
}

DeviceTimer::~DeviceTimer() {
  try {
    ScopedContext scope(driver, context);
    driver.eventDestroy(start);
    driver.eventDestroy(end);
    if (flush)
      driver.memFree(flush);
  } catch (...) {
    // A destructor reports nothing; the context is going away anyway.
  }
}

double DeviceTimer::sampleUs(const std::function<void(CUstream)> &call,
                             CUstream stream) {
  ScopedContext scope(driver, context);
  if (flush)
    driver.check(driver.memsetD8Async(flush, 0x5a, flushBytes, stream),
                 "cuMemsetD8Async");
  driver.check(driver.eventRecord(start, stream), "cuEventRecord");
  call(stream);
  driver.check(driver.eventRecord(end, stream), "cuEventRecord");
  driver.check(driver.eventSynchronize(end), "cuEventSynchronize");
  float milliseconds = 0;
  driver.check(driver.eventElapsedTime(&milliseconds, start, end),
               "cuEventElapsedTime");
  return double(milliseconds) * 1e3;
}

} // namespace moegen::rt
