//===- Communicator.h - The collectives expert parallelism needs -*- C++ -*-===//
//
// An expert-parallel (EP) group of ranks and the two collectives the EP
// operations (ExpertParallel.h) are built on, over buffers in one memory
// space, and their host-buffer forms, which every communicator offers (a
// device one stages the bytes through device memory). Implementations:
// MpiCommunicator (host buffers, Open MPI, its own library so that the
// runtime needs no MPI) and NcclCommunicator (device buffers, libnccl
// loaded at run time). A failed collective throws rt::Error of kind
// Communication. Plain C++20.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_RUNTIME_EP_COMMUNICATOR_H
#define MOEGEN_RUNTIME_EP_COMMUNICATOR_H

#include <cstddef>
#include <span>
#include <string>

namespace moegen::rt::ep {

/// Where a communicator's buffers live.
enum class MemorySpace { Host, CudaDevice };

class Communicator {
public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual MemorySpace memorySpace() const = 0;
  /// "mpi", "nccl": for messages.
  virtual std::string name() const = 0;

  /// `bytes` bytes from every rank, in rank order, into `recv`, which holds
  /// size() * bytes. Every rank passes the same `bytes`.
  virtual void allGather(const void *send, std::size_t bytes, void *recv) = 0;

  /// allGather of small host buffers, whatever memorySpace() is: the EP
  /// operations agree on their arguments through it before moving data
  /// (a device communicator stages the bytes).
  virtual void allGatherHost(const void *send, std::size_t bytes,
                             void *recv) = 0;

  /// Sends sendBytes[r] bytes at sendOffsets[r] of `send` to rank r, and
  /// receives recvBytes[r] bytes from rank r at recvOffsets[r] of `recv`
  /// (one entry per rank; send ranges may overlap, receive ranges may
  /// not). What rank a sends to b is what b expects from a.
  virtual void allToAllV(const void *send,
                         std::span<const std::size_t> sendBytes,
                         std::span<const std::size_t> sendOffsets, void *recv,
                         std::span<const std::size_t> recvBytes,
                         std::span<const std::size_t> recvOffsets) = 0;
  /// allToAllV of host buffers, whatever memorySpace() is (a device
  /// communicator stages the bytes): how the EP operations move host rows.
  virtual void allToAllVHost(const void *send,
                             std::span<const std::size_t> sendBytes,
                             std::span<const std::size_t> sendOffsets,
                             void *recv,
                             std::span<const std::size_t> recvBytes,
                             std::span<const std::size_t> recvOffsets) = 0;
};

/// Throws rt::Error(InvalidArgument) unless an allToAllV call gives one
/// count and offset per rank of `ranks` (`name`: "mpi", "nccl").
void checkAllToAllV(const std::string &name, int ranks,
                    std::span<const std::size_t> sendBytes,
                    std::span<const std::size_t> sendOffsets,
                    std::span<const std::size_t> recvBytes,
                    std::span<const std::size_t> recvOffsets);

} // namespace moegen::rt::ep

#endif // MOEGEN_RUNTIME_EP_COMMUNICATOR_H
