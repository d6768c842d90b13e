//===- MpiCommunicator.cpp - The EP group over MPI ------------------------===//

#include "runtime/ep/MpiCommunicator.h"

#include "runtime/Error.h"

#include <climits>
#include <string>
#include <vector>

namespace moegen::rt::ep {
namespace {

void check(int status, const char *call) {
  if (status == MPI_SUCCESS)
    return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(status, text, &length);
  throw Error(Error::Kind::Communication,
              std::string("mpi: ") + call + " failed: " +
                  std::string(text, static_cast<std::size_t>(length)));
}

/// MPI-3 counts are ints: a larger exchange is refused, not truncated.
int count(std::size_t bytes, const char *what) {
  if (bytes > static_cast<std::size_t>(INT_MAX))
    throw Error(Error::Kind::Communication,
                std::string("mpi: ") + what + " of " + std::to_string(bytes) +
                    " bytes exceeds MPI's int counts (2 GiB)");
  return static_cast<int>(bytes);
}

} // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm parent) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized)
    throw Error(Error::Kind::Communication,
                "mpi: MPI_Init has not been called");
  check(MPI_Comm_dup(parent, &comm), "MPI_Comm_dup");
  check(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN),
        "MPI_Comm_set_errhandler");
  check(MPI_Comm_rank(comm, &rankInGroup), "MPI_Comm_rank");
  check(MPI_Comm_size(comm, &groupSize), "MPI_Comm_size");
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm != MPI_COMM_NULL)
    MPI_Comm_free(&comm);
}

void MpiCommunicator::allGather(const void *send, std::size_t bytes,
                                void *recv) {
  int n = count(bytes, "an all-gather");
  check(MPI_Allgather(send, n, MPI_BYTE, recv, n, MPI_BYTE, comm),
        "MPI_Allgather");
}

void MpiCommunicator::allToAllV(const void *send,
                                std::span<const std::size_t> sendBytes,
                                std::span<const std::size_t> sendOffsets,
                                void *recv,
                                std::span<const std::size_t> recvBytes,
                                std::span<const std::size_t> recvOffsets) {
  const auto ranks = static_cast<std::size_t>(groupSize);
  checkAllToAllV(name(), groupSize, sendBytes, sendOffsets, recvBytes,
                 recvOffsets);
  std::vector<int> sc(ranks), sd(ranks), rc(ranks), rd(ranks);
  for (std::size_t r = 0; r < ranks; ++r) {
    sc[r] = count(sendBytes[r], "a send");
    sd[r] = count(sendOffsets[r], "a send offset");
    rc[r] = count(recvBytes[r], "a receive");
    rd[r] = count(recvOffsets[r], "a receive offset");
  }
  check(MPI_Alltoallv(send, sc.data(), sd.data(), MPI_BYTE, recv, rc.data(),
                      rd.data(), MPI_BYTE, comm),
        "MPI_Alltoallv");
}

} // namespace moegen::rt::ep
