//===- NcclCommunicator.cpp - The EP group over NCCL ----------------------===//

#include "runtime/ep/NcclCommunicator.h"

#include "runtime/Error.h"
#include "runtime/cuda/CudaDriver.h"

#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <limits>
#include <thread>
#include <vector>

namespace moegen::rt::ep {

// The subset of NCCL's C API used here, by its stable ABI (nccl.h since
// 2.0): results are ints (0 = ncclSuccess), ncclUint8 is 1, a
// communicator is an opaque pointer, a unique id 128 bytes by value.
struct NcclCommunicator::Library {
  struct Id {
    char internal[128];
  };
  void *handle = nullptr;
  std::string name;
  int (*getUniqueId)(Id *) = nullptr;
  int (*commInitRank)(void **, int, Id, int) = nullptr;
  /// ncclCommInitRankConfig (NCCL 2.14 and later), for a non-blocking
  /// join with a deadline; null on older libraries.
  int (*commInitRankConfig)(void **, int, Id, int, void *) = nullptr;
  int (*commDestroy)(void *) = nullptr;
  int (*commAbort)(void *) = nullptr;
  int (*commGetAsyncError)(void *, int *) = nullptr;
  int (*allGather)(const void *, void *, std::size_t, int, void *,
                   CUstream) = nullptr;
  int (*send)(const void *, std::size_t, int, int, void *, CUstream) = nullptr;
  int (*recv)(void *, std::size_t, int, int, void *, CUstream) = nullptr;
  int (*groupStart)() = nullptr;
  int (*groupEnd)() = nullptr;
  const char *(*getErrorString)(int) = nullptr;

  // Never dlclose'd: NCCL cannot be unloaded while its background threads
  // (a non-blocking join's, a failed or aborted communicator's) and its
  // thread-local destructors may still run its code; unmapping it crashed
  // the next load. The handle is reference-counted by the loader, so
  // loading it again costs nothing.
};

namespace {

constexpr int kNcclUint8 = 1;
/// ncclResult_t's ncclInProgress: an operation still running.
constexpr int kNcclInProgress = 7;

/// ncclConfig_t as NCCL 2.14 laid it out, the first version with it. A
/// library reads the fields the `version` it is given names (later
/// versions append fields and fill them with their defaults), so this
/// prefix serves every NCCL from 2.14 on.
struct NcclConfig214 {
  std::size_t size = sizeof(NcclConfig214);
  unsigned int magic = 0xcafebeef;
  unsigned int version = 2 * 10000 + 14 * 100 + 3; // NCCL_VERSION(2, 14, 3)
  int blocking = 0;
  int cgaClusterSize = std::numeric_limits<int>::min(); // undefined
  int minCTAs = std::numeric_limits<int>::min();
  int maxCTAs = std::numeric_limits<int>::min();
  const char *netName = nullptr;
};

std::shared_ptr<NcclCommunicator::Library> load(const std::string &name) {
  auto library = std::make_shared<NcclCommunicator::Library>();
  library->name = name;
  ::dlerror();
  library->handle = ::dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!library->handle) {
    const char *reason = ::dlerror();
    throw Error(Error::Kind::Communication,
                "nccl: cannot load " + name + ": " +
                    (reason ? reason : "unknown reason") +
                    " (install NCCL or put it on LD_LIBRARY_PATH)");
  }
  auto find = [&](auto &entry, const char *symbol) {
    entry = reinterpret_cast<std::remove_reference_t<decltype(entry)>>(
        ::dlsym(library->handle, symbol));
    if (!entry)
      throw Error(Error::Kind::Communication,
                  "nccl: " + name + " has no " + symbol +
                      " (NCCL 2.7 or later is needed)");
  };
  find(library->getUniqueId, "ncclGetUniqueId");
  find(library->commInitRank, "ncclCommInitRank");
  library->commInitRankConfig = reinterpret_cast<
      decltype(library->commInitRankConfig)>(
      ::dlsym(library->handle, "ncclCommInitRankConfig"));
  find(library->commDestroy, "ncclCommDestroy");
  find(library->commAbort, "ncclCommAbort");
  find(library->commGetAsyncError, "ncclCommGetAsyncError");
  find(library->allGather, "ncclAllGather");
  find(library->send, "ncclSend");
  find(library->recv, "ncclRecv");
  find(library->groupStart, "ncclGroupStart");
  find(library->groupEnd, "ncclGroupEnd");
  find(library->getErrorString, "ncclGetErrorString");
  return library;
}

void checkResult(const NcclCommunicator::Library &nccl, int result,
                 const char *call) {
  if (result != 0)
    throw Error(Error::Kind::Communication,
                std::string("nccl: ") + call + " failed: " +
                    nccl.getErrorString(result));
}

/// Device memory for a scope.
class DeviceBuffer {
public:
  DeviceBuffer(const CudaDriver &driver, std::size_t bytes) : driver(driver) {
    if (bytes)
      driver.check(driver.memAlloc(&pointer, bytes), "cuMemAlloc");
  }
  ~DeviceBuffer() {
    if (pointer)
      driver.memFree(pointer);
  }
  DeviceBuffer(const DeviceBuffer &) = delete;
  DeviceBuffer &operator=(const DeviceBuffer &) = delete;
  void *get() const { return reinterpret_cast<void *>(pointer); }

private:
  const CudaDriver &driver;
  CUdeviceptr pointer = 0;
};

} // namespace

NcclUniqueId NcclCommunicator::uniqueId(const std::string &library) {
  std::shared_ptr<Library> nccl = load(library);
  Library::Id id{};
  checkResult(*nccl, nccl->getUniqueId(&id), "ncclGetUniqueId");
  NcclUniqueId result;
  std::copy(std::begin(id.internal), std::end(id.internal), result.begin());
  return result;
}

NcclCommunicator::NcclCommunicator(const NcclUniqueId &id, int rank, int size,
                                   int device, CUstream userStream,
                                   const std::string &library)
    : rankInGroup(rank), groupSize(size), deviceOrdinal(device) {
  if (size < 1 || rank < 0 || rank >= size)
    throw Error(Error::Kind::InvalidArgument,
                "nccl: rank " + std::to_string(rank) + " is outside a group of " +
                    std::to_string(size));
  if (const char *seconds = std::getenv("MOEGEN_EP_TIMEOUT_S")) {
    char *end = nullptr;
    const long value = std::strtol(seconds, &end, 10);
    if (end == seconds || *end != '\0' || value < 1 || value > 86400)
      throw Error(Error::Kind::InvalidArgument,
                  std::string("nccl: MOEGEN_EP_TIMEOUT_S = '") + seconds +
                      "': must be whole seconds in [1, 86400]");
    waitLimit = std::chrono::seconds(value);
  }
  const CudaDriver &driver = CudaDriver::get(); // NoDriver, NoDevice
  if (device < 0 || device >= driver.deviceCount())
    throw Error(Error::Kind::InvalidArgument,
                "nccl: device " + std::to_string(device) + " is outside [0, " +
                    std::to_string(driver.deviceCount()) + ")");
  nccl = load(library);
  driver.check(driver.deviceGet(&cuDevice, device), "cuDeviceGet");
  driver.check(driver.devicePrimaryCtxRetain(&primaryContext, cuDevice),
               "cuDevicePrimaryCtxRetain");
  ScopedContext scope(driver, primaryContext);
  if (userStream) {
    collectiveStream = userStream;
  } else {
    driver.check(driver.streamCreate(&collectiveStream, 0), "cuStreamCreate");
    ownsStream = true;
  }
  Library::Id ncclId;
  std::copy(id.begin(), id.end(), ncclId.internal);
  // The destructor does not run for a constructor that throws.
  auto release = [&] {
    comm = nullptr;
    if (ownsStream)
      driver.streamDestroy(collectiveStream);
    driver.devicePrimaryCtxRelease(cuDevice);
  };
  if (!nccl->commInitRankConfig) {
    // NCCL before 2.14: a blocking join, which waits for every peer.
    int joined = nccl->commInitRank(&comm, size, ncclId, rank);
    if (joined != 0) {
      release();
      checkResult(*nccl, joined, "ncclCommInitRank");
    }
    return;
  }
  // A non-blocking communicator: the join runs in NCCL's background and is
  // waited for here with the collectives' deadline, so that a peer that
  // never starts (or dies while joining) fails this rank instead of
  // hanging it.
  NcclConfig214 config;
  nonBlocking = true;
  int joined = nccl->commInitRankConfig(&comm, size, ncclId, rank, &config);
  if (joined != 0 && joined != kNcclInProgress) {
    if (comm)
      nccl->commAbort(comm);
    release();
    checkResult(*nccl, joined, "ncclCommInitRankConfig");
  }
  const auto deadline = std::chrono::steady_clock::now() + waitLimit;
  auto pause = std::chrono::microseconds(50);
  for (;;) {
    int state = 0;
    int queried = nccl->commGetAsyncError(comm, &state);
    if (queried == 0 && state == 0)
      return;
    std::string why;
    if (queried != 0)
      why = std::string("ncclCommGetAsyncError failed: ") +
            nccl->getErrorString(queried);
    else if (state != kNcclInProgress)
      why = nccl->getErrorString(state);
    else if (std::chrono::steady_clock::now() > deadline)
      why = "not every rank joined within " +
            std::to_string(waitLimit.count()) +
            " ms (a peer may not have started, or died)";
    if (!why.empty()) {
      nccl->commAbort(comm);
      release();
      throw Error(Error::Kind::Communication,
                  "nccl: rank " + std::to_string(rank) + ": joining a group of " +
                      std::to_string(size) + ": " + why +
                      "; communicator aborted");
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(5000));
  }
}

NcclCommunicator::~NcclCommunicator() {
  const CudaDriver &driver = CudaDriver::get();
  try {
    ScopedContext scope(driver, primaryContext);
    if (comm && aborted.empty())
      nccl->commDestroy(comm);
    if (ownsStream)
      driver.streamDestroy(collectiveStream);
  } catch (const Error &) {
    // Nothing to report from a destructor.
  }
  if (primaryContext)
    driver.devicePrimaryCtxRelease(cuDevice);
}

const CudaDriver &NcclCommunicator::driver() const {
  return CudaDriver::get();
}

void NcclCommunicator::check(int result, const char *call) const {
  // A non-blocking communicator's calls may return while NCCL still
  // enqueues their work; synchronize() waits for it.
  if (nonBlocking && result == kNcclInProgress)
    return;
  checkResult(*nccl, result, call);
}

void NcclCommunicator::setTimeout(std::chrono::milliseconds timeout) {
  if (timeout.count() <= 0)
    throw Error(Error::Kind::InvalidArgument,
                "nccl: setTimeout(" + std::to_string(timeout.count()) +
                    " ms): the timeout must be positive");
  waitLimit = timeout;
}

void NcclCommunicator::checkUsable(const char *collective) const {
  if (!aborted.empty())
    throw Error(Error::Kind::Communication,
                std::string("nccl: ") + collective + ": the communicator was "
                "aborted earlier (" + aborted + ")");
}

void NcclCommunicator::synchronize(const char *collective) {
  const CudaDriver &driver = CudaDriver::get();
  const auto deadline = std::chrono::steady_clock::now() + waitLimit;
  auto pause = std::chrono::microseconds(20);
  for (;;) {
    // NCCL's own state first: a non-blocking communicator's work may not
    // be on the stream yet while it is in progress.
    int state = 0;
    check(nccl->commGetAsyncError(comm, &state), "ncclCommGetAsyncError");
    if (state == 0) {
      CUresult done = driver.streamQuery(collectiveStream);
      if (done == CUDA_SUCCESS)
        return;
      if (done != CUDA_ERROR_NOT_READY)
        driver.check(done, "cuStreamQuery");
    }
    std::string why;
    if (state != 0 && state != kNcclInProgress)
      why = std::string("asynchronous error: ") + nccl->getErrorString(state);
    else if (std::chrono::steady_clock::now() > deadline)
      why = "no completion within " + std::to_string(waitLimit.count()) +
            " ms (a peer may have died or stopped calling)";
    if (!why.empty()) {
      // Abort unblocks the stream; the communicator is unusable after.
      nccl->commAbort(comm);
      aborted = why;
      throw Error(Error::Kind::Communication,
                  "nccl: rank " + std::to_string(rankInGroup) + ": " +
                      collective + ": " + why + "; communicator aborted");
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(2000));
  }
}

void NcclCommunicator::allGather(const void *send, std::size_t bytes,
                                 void *recv) {
  checkUsable("allGather");
  ScopedContext scope(CudaDriver::get(), primaryContext);
  check(nccl->allGather(send, recv, bytes, kNcclUint8, comm, collectiveStream),
        "ncclAllGather");
  synchronize("allGather");
}

void NcclCommunicator::allGatherHost(const void *send, std::size_t bytes,
                                     void *recv) {
  checkUsable("allGatherHost");
  const CudaDriver &driver = CudaDriver::get();
  ScopedContext scope(driver, primaryContext);
  const std::size_t total = bytes * static_cast<std::size_t>(groupSize);
  DeviceBuffer deviceSend(driver, bytes), deviceRecv(driver, total);
  if (bytes)
    driver.check(driver.memcpyHtoDAsync(
                     reinterpret_cast<CUdeviceptr>(deviceSend.get()), send,
                     bytes, collectiveStream),
                 "cuMemcpyHtoDAsync");
  check(nccl->allGather(deviceSend.get(), deviceRecv.get(), bytes, kNcclUint8,
                        comm, collectiveStream),
        "ncclAllGather");
  if (total)
    driver.check(driver.memcpyDtoHAsync(
                     recv, reinterpret_cast<CUdeviceptr>(deviceRecv.get()),
                     total, collectiveStream),
                 "cuMemcpyDtoHAsync");
  synchronize("allGatherHost");
}

void NcclCommunicator::allToAllV(const void *send,
                                 std::span<const std::size_t> sendBytes,
                                 std::span<const std::size_t> sendOffsets,
                                 void *recv,
                                 std::span<const std::size_t> recvBytes,
                                 std::span<const std::size_t> recvOffsets) {
  const auto ranks = static_cast<std::size_t>(groupSize);
  checkAllToAllV(name(), groupSize, sendBytes, sendOffsets, recvBytes,
                 recvOffsets);
  checkUsable("allToAllV");
  ScopedContext scope(CudaDriver::get(), primaryContext);
  // Point-to-point pairs in one group: NCCL's all-to-all-v.
  check(nccl->groupStart(), "ncclGroupStart");
  for (std::size_t r = 0; r < ranks; ++r) {
    int peer = static_cast<int>(r);
    if (sendBytes[r])
      check(nccl->send(static_cast<const char *>(send) + sendOffsets[r],
                       sendBytes[r], kNcclUint8, peer, comm, collectiveStream),
            "ncclSend");
    if (recvBytes[r])
      check(nccl->recv(static_cast<char *>(recv) + recvOffsets[r],
                       recvBytes[r], kNcclUint8, peer, comm, collectiveStream),
            "ncclRecv");
  }
  check(nccl->groupEnd(), "ncclGroupEnd");
  synchronize("allToAllV");
}

void NcclCommunicator::allToAllVHost(const void *send,
                                     std::span<const std::size_t> sendBytes,
                                     std::span<const std::size_t> sendOffsets,
                                     void *recv,
                                     std::span<const std::size_t> recvBytes,
                                     std::span<const std::size_t> recvOffsets) {
  checkAllToAllV(name(), groupSize, sendBytes, sendOffsets, recvBytes,
                 recvOffsets);
  checkUsable("allToAllVHost");
  // The send buffer's extent covers every range; the receive ranges are
  // disjoint, so their end bounds the receive buffer.
  std::size_t sendEnd = 0, recvEnd = 0;
  for (std::size_t r = 0; r < sendBytes.size(); ++r) {
    if (sendBytes[r])
      sendEnd = std::max(sendEnd, sendOffsets[r] + sendBytes[r]);
    if (recvBytes[r])
      recvEnd = std::max(recvEnd, recvOffsets[r] + recvBytes[r]);
  }
  const CudaDriver &driver = CudaDriver::get();
  ScopedContext scope(driver, primaryContext);
  DeviceBuffer deviceSend(driver, sendEnd), deviceRecv(driver, recvEnd);
  if (sendEnd)
    driver.check(driver.memcpyHtoDAsync(
                     reinterpret_cast<CUdeviceptr>(deviceSend.get()), send,
                     sendEnd, collectiveStream),
                 "cuMemcpyHtoDAsync");
  allToAllV(deviceSend.get(), sendBytes, sendOffsets, deviceRecv.get(),
            recvBytes, recvOffsets);
  // Range by range: bytes of `recv` between the ranges stay untouched.
  for (std::size_t r = 0; r < recvBytes.size(); ++r)
    if (recvBytes[r])
      driver.check(
          driver.memcpyDtoHAsync(
              static_cast<char *>(recv) + recvOffsets[r],
              reinterpret_cast<CUdeviceptr>(deviceRecv.get()) + recvOffsets[r],
              recvBytes[r], collectiveStream),
          "cuMemcpyDtoHAsync");
  synchronize("allToAllVHost");
}

} // namespace moegen::rt::ep
