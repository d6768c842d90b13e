//===- NcclCommunicator.h - The EP group over NCCL --------------*- C++ -*-===//
//
// A Communicator over NCCL for ranks with GPUs: device buffers, one device
// and stream per rank. libnccl is loaded at run time with dlopen, like the
// CUDA driver, so every build links and starts on machines without it; a
// missing library is an rt::Error of kind Communication, a missing driver
// NoDriver. Part of MoEGenCudaRuntime (it needs cuda.h's types only).
//
// Ranks meet through an NCCL unique id that one rank creates (uniqueId)
// and the caller distributes (over MPI, a file, a store).
//
// The communicator is a non-blocking one (ncclCommInitRankConfig with
// blocking = 0, NCCL 2.14 and later): joining the group and every
// collective return at once, and this side waits with a deadline, polling
// NCCL's asynchronous state, then the stream. A peer that never starts,
// dies or stops calling would leave the wait endless, so past the timeout
// (MOEGEN_EP_TIMEOUT_S seconds, 300 by default; setTimeout for the
// collectives) the communicator is aborted and the constructor or the call
// throws rt::Error(Communication); every later call throws too. With an
// NCCL older than 2.14 the join (ncclCommInitRank) blocks until every peer
// joins.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_RUNTIME_EP_NCCLCOMMUNICATOR_H
#define MOEGEN_RUNTIME_EP_NCCLCOMMUNICATOR_H

#include "runtime/ep/DeviceCommunicator.h"

#include <cuda.h>

#include <array>
#include <chrono>
#include <memory>
#include <string>

namespace moegen::rt::ep {

/// NCCL's ncclUniqueId: 128 opaque bytes.
using NcclUniqueId = std::array<char, 128>;

class NcclCommunicator : public DeviceCommunicator {
public:
  /// The library's default name; an absolute path also works.
  static constexpr const char *kDefaultLibrary = "libnccl.so.2";

  /// A fresh unique id (on one rank; the others receive it).
  static NcclUniqueId uniqueId(const std::string &library = kDefaultLibrary);

  /// Joins the group `id` names as `rank` of `size`, on CUDA device
  /// `device` (its primary context). Collectives run on `stream` (null: a
  /// stream of its own) and return when done.
  NcclCommunicator(const NcclUniqueId &id, int rank, int size, int device,
                   CUstream stream = nullptr,
                   const std::string &library = kDefaultLibrary);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator &) = delete;
  NcclCommunicator &operator=(const NcclCommunicator &) = delete;

  int rank() const override { return rankInGroup; }
  int size() const override { return groupSize; }
  std::string name() const override { return "nccl"; }
  const CudaDriver &driver() const override;
  CUcontext context() const override { return primaryContext; }
  int device() const override { return deviceOrdinal; }
  CUstream stream() const override { return collectiveStream; }

  void allGather(const void *send, std::size_t bytes, void *recv) override;
  /// Stages the host bytes through device memory.
  void allGatherHost(const void *send, std::size_t bytes,
                     void *recv) override;
  void allToAllV(const void *send, std::span<const std::size_t> sendBytes,
                 std::span<const std::size_t> sendOffsets, void *recv,
                 std::span<const std::size_t> recvBytes,
                 std::span<const std::size_t> recvOffsets) override;
  /// Stages the host bytes through device memory.
  void allToAllVHost(const void *send, std::span<const std::size_t> sendBytes,
                     std::span<const std::size_t> sendOffsets, void *recv,
                     std::span<const std::size_t> recvBytes,
                     std::span<const std::size_t> recvOffsets) override;

  /// How long a collective may wait for its peers (> 0).
  void setTimeout(std::chrono::milliseconds timeout);
  std::chrono::milliseconds timeout() const { return waitLimit; }

  struct Library; // the resolved NCCL entry points

private:
  void check(int result, const char *call) const;
  /// Waits for the stream until the deadline; aborts the communicator and
  /// throws on an asynchronous NCCL error or when the time is up.
  void synchronize(const char *collective);
  /// Throws when an earlier call aborted the communicator.
  void checkUsable(const char *collective) const;

  std::shared_ptr<Library> nccl;
  void *comm = nullptr; // ncclComm_t
  int rankInGroup = 0;
  int groupSize = 1;
  int deviceOrdinal = 0;
  CUdevice cuDevice = 0;
  CUcontext primaryContext = nullptr;
  CUstream collectiveStream = nullptr;
  bool ownsStream = false;
  std::chrono::milliseconds waitLimit{300'000};
  /// Why the communicator was aborted; empty while usable.
  std::string aborted;
  /// Joined with ncclCommInitRankConfig, blocking = 0: NCCL calls may
  /// answer ncclInProgress.
  bool nonBlocking = false;
};

} // namespace moegen::rt::ep

#endif // MOEGEN_RUNTIME_EP_NCCLCOMMUNICATOR_H
