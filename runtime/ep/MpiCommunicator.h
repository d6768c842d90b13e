//===- MpiCommunicator.h - The EP group over MPI ----------------*- C++ -*-===//
//
// A Communicator over an MPI communicator, for host ranks (and tests on
// machines without GPUs). Its own library, MoEGenEpMpi, so that the
// runtime itself needs no MPI. MPI must be initialized by the caller.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_RUNTIME_EP_MPICOMMUNICATOR_H
#define MOEGEN_RUNTIME_EP_MPICOMMUNICATOR_H

#include "runtime/ep/Communicator.h"

#include <mpi.h>

namespace moegen::rt::ep {

class MpiCommunicator : public Communicator {
public:
  /// Works on a duplicate of `comm` whose errors return (and are thrown as
  /// rt::Error of kind Communication) rather than abort.
  explicit MpiCommunicator(MPI_Comm comm = MPI_COMM_WORLD);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator &) = delete;
  MpiCommunicator &operator=(const MpiCommunicator &) = delete;

  int rank() const override { return rankInGroup; }
  int size() const override { return groupSize; }
  MemorySpace memorySpace() const override { return MemorySpace::Host; }
  std::string name() const override { return "mpi"; }

  void allGather(const void *send, std::size_t bytes, void *recv) override;
  void allGatherHost(const void *send, std::size_t bytes,
                     void *recv) override {
    allGather(send, bytes, recv);
  }
  void allToAllV(const void *send, std::span<const std::size_t> sendBytes,
                 std::span<const std::size_t> sendOffsets, void *recv,
                 std::span<const std::size_t> recvBytes,
                 std::span<const std::size_t> recvOffsets) override;
  void allToAllVHost(const void *send, std::span<const std::size_t> sendBytes,
                     std::span<const std::size_t> sendOffsets, void *recv,
                     std::span<const std::size_t> recvBytes,
                     std::span<const std::size_t> recvOffsets) override {
    allToAllV(send, sendBytes, sendOffsets, recv, recvBytes, recvOffsets);
  }

private:
  MPI_Comm comm = MPI_COMM_NULL;
  int rankInGroup = 0;
  int groupSize = 1;
};

} // namespace moegen::rt::ep

#endif // MOEGEN_RUNTIME_EP_MPICOMMUNICATOR_H
