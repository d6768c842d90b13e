//===- DeviceExpertParallel.h - EP operations on device buffers -*- C++ -*-===//
//
// The EP operations of ExpertParallel.h for ranks whose tokens live on a
// GPU: ids, hidden rows, expert outputs and weights are device pointers on
// the communicator's device, and rows go from device to device: gathered
// into per-rank send buffers by batched copies (cuMemcpyBatchAsync, CUDA
// 12.8 and later; a copy per run of consecutive rows on older drivers),
// exchanged by the communicator's all-to-all-v (NCCL: device to device),
// and summed by the router's generated combine kernel (spec permute:
// true), the same fp32 multiply-add chain as the host operations, so the
// two agree bit for bit.
//
// What stays on the host is small and per token: the ids ([T, k] int32)
// are read back once to check them and to plan the exchange (which rank
// each token goes to, which local experts a received row is for; DeepEP's
// layout step plans it on the device); the plan's counts and slot lists
// travel as host bytes. Every operation checks its arguments (the
// device buffers included: device memory the driver knows, on the
// communicator's device, as large as the shape needs) and agrees with the
// other ranks before any data moves, with the host operations' messages;
// what can fail on one rank only after that (an allocation, a queued copy,
// combine's handles from different dispatches) is agreed on once more
// before the rows move, as InvalidArgument. Calls are synchronous: they
// return when their results are in place.
// docs/expert-parallelism.md.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_RUNTIME_EP_DEVICEEXPERTPARALLEL_H
#define MOEGEN_RUNTIME_EP_DEVICEEXPERTPARALLEL_H

#include "runtime/cuda/CudaRouter.h"
#include "runtime/ep/DeviceCommunicator.h"
#include "runtime/ep/ExpertParallel.h"

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace moegen::rt::ep {

/// Device memory dispatch and combine reuse from call to call: their
/// exchange buffers, dispatch's grouped rows, the slot positions and an
/// error record, each grown when a call needs more and kept until the
/// workspace goes (or its context changes). One per communicator; calls that share it must not
/// run at once (the operations are synchronous, so calls in sequence on
/// one thread are fine). Without one, each call allocates and frees its
/// own: a cuMemAlloc and cuMemFree per buffer and call.
class DeviceWorkspace {
public:
  enum Slot { Send, Received, Rows, Back, Returned, Positions, Record, kSlots };
  /// Slot `slot`'s buffer, of at least `bytes` (0 when `bytes` is 0), in
  /// `context`.
  CUdeviceptr get(Slot slot, const CudaDriver &driver, CUcontext context,
                  std::size_t bytes);
  /// The bytes held now, over all slots.
  std::size_t bytesHeld() const;

private:
  CUcontext context = nullptr;
  DeviceBuffer buffers[kSlots];
};

/// Forced ids gathered across the group, on the device: [tokens, k] int32.
struct DeviceIds {
  DeviceBuffer ids;
  int64_t tokens = 0;
};

/// allGatherForcedIds on device buffers: `ids` [tokens, k] int32 on the
/// communicator's device; the result is in rank order, on that device.
DeviceIds allGatherForcedIds(DeviceCommunicator &comm, CUdeviceptr ids,
                             int64_t tokens, int64_t k, int64_t numExperts,
                             bool unusedSlots = false);

struct DeviceDispatched {
  /// The received rows grouped by local expert, [rows, hiddenSize] of the
  /// handle's row type: expertOffsets[e] to expertOffsets[e + 1] are local
  /// expert e's rows. In the workspace when dispatch was given one (valid
  /// until its next dispatch, so that a layer called again and again
  /// allocates nothing), else in ownedRows.
  CUdeviceptr rows = 0;
  DeviceBuffer ownedRows;
  std::vector<int64_t> expertOffsets;
  DispatchHandle handle;
};

/// dispatch on device buffers: `hidden` [tokens, hiddenSize] of rowType,
/// `ids` [tokens, k] int32 (a route's topk_ids). Same rules as the host
/// dispatch.
/// `workspace` (optional) holds the exchange buffers and the grouped rows.
DeviceDispatched dispatch(DeviceCommunicator &comm, CUdeviceptr hidden,
                          RowType rowType, int64_t hiddenSize, CUdeviceptr ids,
                          int64_t tokens, int64_t k,
                          const ExpertPlacement &placement,
                          bool unusedSlots = false,
                          DeviceWorkspace *workspace = nullptr);

/// combine on device buffers: `expertOutputs` [handle.groupedRows,
/// hiddenSize] in dispatch's layout, `weights` [tokens, k] f32 (a route's
/// topk_weights); writes `combined` [tokens, hiddenSize] of the row type.
/// `router` supplies the combine kernel: loaded in the communicator's
/// context, with the handle's k and a hidden dtype of the row type.
/// `workspace` (optional) holds the exchange buffers, the slot positions
/// and the kernel's error record.
void combine(DeviceCommunicator &comm, const CudaRouter &router,
             const DispatchHandle &handle, CUdeviceptr expertOutputs,
             CUdeviceptr weights, CUdeviceptr combined,
             DeviceWorkspace *workspace = nullptr);

/// Row gather on the device: row i of `to` = row sourceRow[i] of `from`
/// (rows of rowBytes), queued on `stream`. Runs of consecutive source rows
/// are one copy; the copies are one cuMemcpyBatchAsync where the driver
/// has it (and `stream` is not the legacy default stream).
void copyRows(const CudaDriver &driver, CUstream stream, CUdeviceptr to,
              CUdeviceptr from, std::span<const int64_t> sourceRow,
              std::size_t rowBytes);

/// Empty when [pointer, pointer + bytes) is device memory the driver
/// knows, on device `device`, within one allocation as far as the driver
/// can tell; else why not, naming the buffer `name`. Null is fine for 0
/// bytes.
std::string checkDeviceBuffer(const CudaDriver &driver, int device,
                              const std::string &name, CUdeviceptr pointer,
                              std::size_t bytes);

} // namespace moegen::rt::ep

#endif // MOEGEN_RUNTIME_EP_DEVICEEXPERTPARALLEL_H
