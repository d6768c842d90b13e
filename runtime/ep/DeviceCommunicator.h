//===- DeviceCommunicator.h - An EP group over device buffers ---*- C++ -*-===//
//
// A Communicator whose collectives move device memory, with what the
// device EP operations (DeviceExpertParallel.h) need to put their own work
// next to them: the driver, the context the buffers belong to, the device
// and the stream the collectives run on. NcclCommunicator is one; a test
// can make one over the emulated driver. Part of MoEGenCudaRuntime.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_RUNTIME_EP_DEVICECOMMUNICATOR_H
#define MOEGEN_RUNTIME_EP_DEVICECOMMUNICATOR_H

#include "runtime/ep/Communicator.h"

#include <cuda.h>

namespace moegen::rt {
class CudaDriver;
} // namespace moegen::rt

namespace moegen::rt::ep {

class DeviceCommunicator : public Communicator {
public:
  MemorySpace memorySpace() const override { return MemorySpace::CudaDevice; }

  virtual const CudaDriver &driver() const = 0;
  /// The context of the device's buffers (a primary context).
  virtual CUcontext context() const = 0;
  /// The device ordinal the buffers must be on.
  virtual int device() const = 0;
  /// The stream the collectives run on: a collective waits for the work
  /// queued on it before it returns. Batched row copies need a stream other
  /// than the legacy default one (on that one they go a run at a time).
  virtual CUstream stream() const = 0;
};

} // namespace moegen::rt::ep

#endif // MOEGEN_RUNTIME_EP_DEVICECOMMUNICATOR_H
