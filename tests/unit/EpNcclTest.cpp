//===- EpNcclTest.cpp - The NCCL communicator without a GPU ---------------===//
//
// What NcclCommunicator says where NCCL or the driver is missing: one
// clear error of the right kind, never a crash. With a driver and a device
// the GPU suite (tests/gpu/) runs it for real.
//
//===----------------------------------------------------------------------===//

#include "runtime/Error.h"
#include "runtime/cuda/CudaDriver.h"
#include "runtime/ep/NcclCommunicator.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using namespace moegen::rt;

namespace {

TEST(EpNcclTest, AMissingLibraryIsACommunicationError) {
  try {
    ep::NcclCommunicator::uniqueId("/nonexistent/libnccl.so.2");
    FAIL() << "no error";
  } catch (const Error &e) {
    EXPECT_EQ(e.kind(), Error::Kind::Communication);
    EXPECT_EQ(std::string(e.what()).rfind(
                  "nccl: cannot load /nonexistent/libnccl.so.2: ", 0),
              0u)
        << e.what();
  }
}

TEST(EpNcclTest, ARankOutsideTheGroupIsRefusedFirst) {
  ep::NcclUniqueId id{};
  try {
    ep::NcclCommunicator comm(id, 2, 2, 0);
    FAIL() << "no error";
  } catch (const Error &e) {
    EXPECT_EQ(e.kind(), Error::Kind::InvalidArgument);
    EXPECT_STREQ(e.what(), "nccl: rank 2 is outside a group of 2");
  }
}

TEST(EpNcclTest, NoDriverIsReportedAsSuch) {
  Error::Kind driverKind;
  try {
    CudaDriver::get();
    GTEST_SKIP() << "a CUDA driver is present";
  } catch (const Error &e) {
    driverKind = e.kind();
  }
  ep::NcclUniqueId id{};
  try {
    ep::NcclCommunicator comm(id, 0, 1, 0, nullptr,
                              "/nonexistent/libnccl.so.2");
    FAIL() << "no error";
  } catch (const Error &e) {
    EXPECT_EQ(e.kind(), driverKind) << e.what();
  }
}

/// The library the GPU test loads: $MOEGEN_NCCL_LIBRARY (run-on-device.sh
/// points it at PyTorch's NCCL) or the default name.
std::string ncclLibrary() {
  const char *path = std::getenv("MOEGEN_NCCL_LIBRARY");
  return path && *path ? path : ep::NcclCommunicator::kDefaultLibrary;
}

TEST(EpNcclTest, OneRankExchangesOnTheDevice) {
  try {
    if (CudaDriver::get().deviceCount() == 0)
      GTEST_SKIP() << "no CUDA device";
  } catch (const Error &e) {
    GTEST_SKIP() << e.what();
  }
  const CudaDriver &driver = CudaDriver::get();
  ep::NcclUniqueId id = ep::NcclCommunicator::uniqueId(ncclLibrary());
  ep::NcclCommunicator comm(id, 0, 1, 0, nullptr, ncclLibrary());
  EXPECT_EQ(comm.size(), 1);
  EXPECT_EQ(comm.memorySpace(), ep::MemorySpace::CudaDevice);

  // Host bytes staged through the device (the arguments' agreement).
  const char hostBytes[5] = {'m', 'o', 'e', 'g', 'n'};
  char gathered[5] = {};
  comm.allGatherHost(hostBytes, sizeof(hostBytes), gathered);
  EXPECT_EQ(std::memcmp(hostBytes, gathered, sizeof(hostBytes)), 0);

  // Device buffers: an all-gather and an all-to-all-v to itself.
  CUdevice device;
  CUcontext context;
  driver.check(driver.deviceGet(&device, 0), "cuDeviceGet");
  driver.check(driver.devicePrimaryCtxRetain(&context, device), "retain");
  {
    ScopedContext scope(driver, context);
    std::vector<int32_t> values = {3, 1, 4, 1, 5, 9, 2, 6};
    const std::size_t bytes = values.size() * sizeof(int32_t);
    CUdeviceptr send = 0, recv = 0;
    driver.check(driver.memAlloc(&send, bytes), "cuMemAlloc");
    driver.check(driver.memAlloc(&recv, bytes), "cuMemAlloc");
    driver.check(driver.memcpyHtoDAsync(send, values.data(), bytes, nullptr),
                 "HtoD");
    driver.check(driver.streamSynchronize(nullptr), "sync");
    comm.allGather(reinterpret_cast<void *>(send), bytes,
                   reinterpret_cast<void *>(recv));
    std::vector<int32_t> back(values.size());
    driver.check(driver.memcpyDtoHAsync(back.data(), recv, bytes, nullptr),
                 "DtoH");
    driver.check(driver.streamSynchronize(nullptr), "sync");
    EXPECT_EQ(back, values);
    // The last 3 values to the front of the receive buffer.
    std::vector<std::size_t> sendBytes = {3 * 4}, sendAt = {5 * 4},
                             recvBytes = {3 * 4}, recvAt = {0};
    comm.allToAllV(reinterpret_cast<void *>(send), sendBytes, sendAt,
                   reinterpret_cast<void *>(recv), recvBytes, recvAt);
    driver.check(driver.memcpyDtoHAsync(back.data(), recv, 12, nullptr),
                 "DtoH");
    driver.check(driver.streamSynchronize(nullptr), "sync");
    EXPECT_EQ(std::vector<int32_t>(back.begin(), back.begin() + 3),
              (std::vector<int32_t>{9, 2, 6}));
    driver.memFree(send);
    driver.memFree(recv);
  }
  driver.devicePrimaryCtxRelease(device);
}

// A peer that never joins: the join waits the timeout, aborts and throws
// on this rank, instead of hanging (the non-blocking communicator; on a GPU
// machine, NCCL 2.14 or later).
TEST(EpNcclTest, APeerThatNeverJoinsFailsTheJoinInTime) {
  try {
    if (CudaDriver::get().deviceCount() == 0)
      GTEST_SKIP() << "no CUDA device";
  } catch (const Error &e) {
    GTEST_SKIP() << e.what();
  }
  ep::NcclUniqueId id = ep::NcclCommunicator::uniqueId(ncclLibrary());
  const char *previous = std::getenv("MOEGEN_EP_TIMEOUT_S");
  std::string saved = previous ? previous : "";
  ::setenv("MOEGEN_EP_TIMEOUT_S", "2", 1);
  const auto start = std::chrono::steady_clock::now();
  try {
    ep::NcclCommunicator comm(id, 0, 2, 0, nullptr, ncclLibrary());
    ADD_FAILURE() << "joined a group of 2 alone";
  } catch (const Error &e) {
    EXPECT_EQ(e.kind(), Error::Kind::Communication);
    EXPECT_NE(std::string(e.what()).find(
                  "nccl: rank 0: joining a group of 2: not every rank "
                  "joined within 2000 ms"),
              std::string::npos)
        << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
  if (previous)
    ::setenv("MOEGEN_EP_TIMEOUT_S", saved.c_str(), 1);
  else
    ::unsetenv("MOEGEN_EP_TIMEOUT_S");
}

} // namespace
