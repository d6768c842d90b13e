//===- EpDeviceCheck.cpp - EP on device buffers under mpirun --------------===//
//
// moegen-ep-device-check SCENARIO, run by every rank of `mpirun -n N`: the
// device EP operations (DeviceExpertParallel.h) on the GPU emulator, each
// rank with its own emulated device, the ranks' device memory moved by a
// device communicator over MPI (the emulator's device memory is host
// memory, so MPI can move it as NCCL moves a GPU's). Each rank checks what
// it got against the host EP operations over the same MPI group, bit for
// bit, and prints one line "rank R: ..." (tests/lit/EP/device-*.test).
//
//   all-gather       rank r forces r tokens (rank 0 none), on the device
//   moe-layer-f32, moe-layer-bf16
//                    route random logits on the device (8 experts, top 3,
//                    spec permute: true), dispatch the device rows by the
//                    device ids, experts y = (e + 1) x + e / 2 on the
//                    host, combine on the device with the device weights
//                    (after a layer of one token with the same workspace)
//   skewed           moe-layer-f32 with every expert on rank 0
//   empty-rank       moe-layer-f32 with no tokens on rank 0
//   host-ids         the last rank passes host memory as forced ids
//   short-ids        rank 0's forced-id buffer is one id short
//   router-k         combine with a router of top 2 for a dispatch of 3
//   mixed-handles    rank 1 combines with the handle of another dispatch
//   unused-slots     rank 0 dispatches a top-p router's -1 slot, then
//                    combines with a kernel that takes every slot
//
// Exit code 0 when the rank saw what the scenario expects, 1 otherwise.
//
//===----------------------------------------------------------------------===//

#include "compiler/backend/gpuemu/EmuCudaDriver.h"
#include "compiler/backend/gpuemu/GpuEmuRouter.h"
#include "compiler/spec/SpecParser.h"
#include "runtime/Error.h"
#include "runtime/cuda/CudaDriver.h"
#include "runtime/ep/DeviceExpertParallel.h"
#include "runtime/ep/MpiCommunicator.h"
#include "runtime/npy/HalfFloat.h"
#include "tests/ep/EpCheckCommon.h"

#include "llvm/Support/Error.h"

#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

using namespace moegen;
using namespace moegen::rt;

using moegen::epcheck::expectThrow;
using moegen::epcheck::forcedIds;
using moegen::epcheck::kExperts;

namespace {

/// A device communicator over MPI for the emulated device: its device
/// memory is this process's memory, which MPI moves as NCCL moves a GPU's.
class EmulatedDeviceCommunicator : public ep::DeviceCommunicator {
public:
  EmulatedDeviceCommunicator(ep::MpiCommunicator &mpi, const CudaDriver &driver,
                             CUcontext context)
      : mpi(mpi), emulated(driver), primary(context) {
    ScopedContext scope(driver, context);
    driver.check(driver.streamCreate(&queue, 0), "cuStreamCreate");
  }
  ~EmulatedDeviceCommunicator() override {
    ScopedContext scope(emulated, primary);
    emulated.streamDestroy(queue);
  }

  int rank() const override { return mpi.rank(); }
  int size() const override { return mpi.size(); }
  std::string name() const override { return "mpi over emulated devices"; }
  const CudaDriver &driver() const override { return emulated; }
  CUcontext context() const override { return primary; }
  int device() const override { return 0; }
  CUstream stream() const override { return queue; }

  void allGather(const void *send, std::size_t bytes, void *recv) override {
    mpi.allGather(send, bytes, recv);
  }
  void allGatherHost(const void *send, std::size_t bytes, void *recv) override {
    mpi.allGather(send, bytes, recv);
  }
  void allToAllV(const void *send, std::span<const std::size_t> sendBytes,
                 std::span<const std::size_t> sendOffsets, void *recv,
                 std::span<const std::size_t> recvBytes,
                 std::span<const std::size_t> recvOffsets) override {
    mpi.allToAllV(send, sendBytes, sendOffsets, recv, recvBytes, recvOffsets);
  }
  void allToAllVHost(const void *send, std::span<const std::size_t> sendBytes,
                     std::span<const std::size_t> sendOffsets, void *recv,
                     std::span<const std::size_t> recvBytes,
                     std::span<const std::size_t> recvOffsets) override {
    mpi.allToAllV(send, sendBytes, sendOffsets, recv, recvBytes, recvOffsets);
  }

private:
  ep::MpiCommunicator &mpi;
  const CudaDriver &emulated;
  CUcontext primary;
  CUstream queue = nullptr;
};

/// The spec's kernels on the emulated GPU.
std::unique_ptr<HostRouter> emulatedRouter(int64_t k, const char *hiddenDType) {
  std::string error;
  std::optional<RoutingSpec> spec = parseRoutingSpec(
      "name: ep_device\nnum_experts: " + std::to_string(kExperts) +
          "\ntop_k: " + std::to_string(k) +
          "\nscoring: softmax\ndispatch: true\npermute: true\nhidden_dtype: " +
          hiddenDType + "\nhidden_size: 16\n",
      "ep_device", error);
  if (!spec)
    throw Error(Error::Kind::InvalidArgument, "spec: " + error);
  llvm::Expected<std::unique_ptr<HostRouter>> router =
      gpuemu::compileEmulatedRouter(*spec, {});
  if (!router)
    throw Error(Error::Kind::InvalidArgument,
                "emulated router: " + llvm::toString(router.takeError()));
  return std::move(*router);
}

DeviceBuffer upload(const CudaRouter &device, const void *host,
                    std::size_t bytes) {
  DeviceBuffer buffer = device.allocate(bytes);
  if (bytes)
    buffer.upload(host, bytes, nullptr);
  return buffer;
}

template <typename T>
std::vector<T> download(const DeviceBuffer &buffer, std::size_t count) {
  std::vector<T> host(count);
  if (count)
    buffer.download(host.data(), count * sizeof(T), nullptr);
  return host;
}

/// `count` values at a device pointer (a dispatch's rows).
template <typename T>
std::vector<T> download(const CudaRouter &device, CUdeviceptr from,
                        std::size_t count) {
  std::vector<T> host(count);
  if (count) {
    const CudaDriver &driver = device.driver();
    ScopedContext scope(driver, device.context());
    driver.check(
        driver.memcpyDtoHAsync(host.data(), from, count * sizeof(T), nullptr),
        "cuMemcpyDtoHAsync");
  }
  return host;
}

int allGather(ep::MpiCommunicator &mpi, ep::DeviceCommunicator &comm,
              const CudaRouter &device) {
  std::vector<int32_t> mine = forcedIds(comm.rank());
  DeviceBuffer ids = upload(device, mine.data(), mine.size() * 4);
  ep::DeviceIds got =
      ep::allGatherForcedIds(comm, ids.get(), comm.rank(), 2, kExperts);
  std::vector<int32_t> onDevice =
      download<int32_t>(got.ids, static_cast<std::size_t>(got.tokens) * 2);
  std::vector<int32_t> onHost =
      ep::allGatherForcedIds(mpi, mine, comm.rank(), 2, kExperts);
  if (onDevice != onHost) {
    std::printf("rank %d: FAIL: the device all-gather differs from the "
                "host's\n",
                comm.rank());
    return 1;
  }
  std::printf("rank %d: device all-gather ok, %lld tokens, equal to the "
              "host's\n",
              comm.rank(), static_cast<long long>(got.tokens));
  return 0;
}

/// Rows of `type` from floats, and back.
std::vector<std::byte> toRows(const std::vector<float> &values,
                              ep::RowType type) {
  std::vector<std::byte> rows(values.size() *
                              (type == ep::RowType::F32 ? 4 : 2));
  for (std::size_t i = 0; i < values.size(); ++i)
    if (type == ep::RowType::F32) {
      std::memcpy(rows.data() + 4 * i, &values[i], 4);
    } else {
      uint16_t narrow = npy::floatToBf16(values[i]);
      std::memcpy(rows.data() + 2 * i, &narrow, 2);
    }
  return rows;
}
std::vector<float> fromRows(const std::vector<std::byte> &rows,
                            ep::RowType type) {
  std::vector<float> values(rows.size() / (type == ep::RowType::F32 ? 4 : 2));
  for (std::size_t i = 0; i < values.size(); ++i)
    if (type == ep::RowType::F32) {
      std::memcpy(&values[i], rows.data() + 4 * i, 4);
    } else {
      uint16_t narrow;
      std::memcpy(&narrow, rows.data() + 2 * i, 2);
      values[i] = npy::bf16ToFloat(narrow);
    }
  return values;
}

float expert(int32_t e, float x) {
  return static_cast<float>(e + 1) * x + 0.5f * static_cast<float>(e);
}

int moeLayer(ep::MpiCommunicator &mpi, ep::DeviceCommunicator &comm,
             const CudaRouter &device, ep::RowType type, bool skewed,
             bool emptyFirstRank, const char *what) {
  constexpr int64_t hiddenSize = 16, k = 3;
  const int rank = comm.rank();
  const int64_t tokens = emptyFirstRank && rank == 0 ? 0 : 3 * rank + 2;
  std::mt19937 rng(static_cast<unsigned>(rank + 1));
  std::normal_distribution<float> normal;
  std::vector<float> logits(static_cast<std::size_t>(tokens * kExperts)),
      hiddenValues(static_cast<std::size_t>(tokens * hiddenSize));
  for (float &x : logits)
    x = normal(rng);
  for (float &x : hiddenValues)
    x = normal(rng);
  const std::vector<std::byte> hidden = toRows(hiddenValues, type);
  const std::size_t rowBytes =
      static_cast<std::size_t>(hiddenSize) * (type == ep::RowType::F32 ? 4 : 2);

  // Route on the device.
  DeviceBuffer logitsOnDevice =
      upload(device, logits.data(), logits.size() * 4);
  DeviceBuffer hiddenOnDevice = upload(device, hidden.data(), hidden.size());
  DeviceBuffer idsOnDevice = device.allocate(tokens * k * 4),
               weightsOnDevice = device.allocate(tokens * k * 4);
  RouteInputs in;
  in.numTokens = tokens;
  in.logits = logitsOnDevice.get();
  RouteOutputs out;
  out.topkIds = idsOnDevice.get();
  out.topkWeights = weightsOnDevice.get();
  device.route(in, out, nullptr);
  device.checkErrors(nullptr);
  const std::vector<int32_t> ids =
      download<int32_t>(idsOnDevice, static_cast<std::size_t>(tokens * k));
  const std::vector<float> weights =
      download<float>(weightsOnDevice, static_cast<std::size_t>(tokens * k));

  ep::ExpertPlacement placement =
      ep::ExpertPlacement::contiguous(kExperts, comm.size());
  if (skewed)
    placement.rankOfExpert.assign(kExperts, 0);
  // A workspace the calls reuse: first a warm-up layer of one token
  // (small buffers), then the checked one (the buffers grow).
  ep::DeviceWorkspace workspace;
  {
    ep::DeviceDispatched one = ep::dispatch(
        comm, hiddenOnDevice.get(), type, hiddenSize, idsOnDevice.get(),
        std::min<int64_t>(tokens, 1), k, placement, false, &workspace);
    DeviceBuffer oneCombined = device.allocate(rowBytes);
    ep::combine(comm, device, one.handle, one.rows, weightsOnDevice.get(),
                oneCombined.get(), &workspace);
  }
  ep::DeviceDispatched dispatched =
      ep::dispatch(comm, hiddenOnDevice.get(), type, hiddenSize,
                   idsOnDevice.get(), tokens, k, placement, false, &workspace);
  ep::Dispatched onHost =
      ep::dispatch(mpi, hidden, type, hiddenSize, ids, tokens, k, placement);
  const std::size_t grouped =
      static_cast<std::size_t>(dispatched.handle.groupedRows);
  std::vector<std::byte> rows =
      download<std::byte>(device, dispatched.rows, grouped * rowBytes);
  if (rows != onHost.rows || dispatched.expertOffsets != onHost.expertOffsets ||
      dispatched.handle.returnRows != onHost.handle.returnRows) {
    std::printf("rank %d: FAIL: the device dispatch differs from the host's\n",
                rank);
    return 1;
  }

  // The experts, on the host, in the row type.
  std::vector<int32_t> experts = placement.expertsOf(rank);
  std::vector<float> values = fromRows(rows, type);
  for (std::size_t e = 0; e < experts.size(); ++e)
    for (int64_t row = dispatched.expertOffsets[e];
         row < dispatched.expertOffsets[e + 1]; ++row)
      for (int64_t h = 0; h < hiddenSize; ++h) {
        float &x = values[row * hiddenSize + h];
        x = expert(experts[e], x);
      }
  const std::vector<std::byte> outputs = toRows(values, type);
  DeviceBuffer outputsOnDevice = upload(device, outputs.data(), outputs.size());
  DeviceBuffer combinedOnDevice = device.allocate(hidden.size());
  ep::combine(comm, device, dispatched.handle, outputsOnDevice.get(),
              weightsOnDevice.get(), combinedOnDevice.get(), &workspace);
  std::vector<std::byte> combined =
      download<std::byte>(combinedOnDevice, hidden.size());
  std::vector<std::byte> combinedOnHost =
      ep::combine(mpi, onHost.handle, outputs, weights);
  if (combined != combinedOnHost) {
    std::printf("rank %d: FAIL: the device combine differs from the host's\n",
                rank);
    return 1;
  }

  // What one rank computes: each slot's expert output in the row type,
  // summed in fp32 in slot order (combine's contract), rounded once.
  std::vector<float> single(static_cast<std::size_t>(tokens * hiddenSize));
  const std::vector<float> x = fromRows(hidden, type);
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t h = 0; h < hiddenSize; ++h) {
      float sum = 0.0f;
      for (int64_t j = 0; j < k; ++j) {
        float y = fromRows(
            toRows({expert(ids[t * k + j], x[t * hiddenSize + h])}, type),
            type)[0];
        sum = std::fma(weights[t * k + j], y, sum);
      }
      single[t * hiddenSize + h] = fromRows(toRows({sum}, type), type)[0];
    }
  const std::vector<float> got = fromRows(combined, type);
  double maxError = 0.0;
  for (std::size_t i = 0; i < got.size(); ++i)
    maxError =
        std::max(maxError, std::fabs(double(got[i]) - double(single[i])));
  std::printf("rank %d: %s ok, %lld tokens, %zu expert rows received, equal "
              "to the host EP, max abs error against one rank %g\n",
              rank, what, static_cast<long long>(tokens), grouped, maxError);
  return maxError == 0.0 ? 0 : 1;
}

int badIds(ep::DeviceCommunicator &comm, const CudaRouter &device,
           const std::string &scenario) {
  const int rank = comm.rank();
  std::vector<int32_t> mine = forcedIds(rank);
  int64_t tokens = rank;
  if (scenario == "short-ids" && rank == 0) {
    mine = {1, 2, 3}; // two tokens need four ids
    tokens = 2;
  }
  DeviceBuffer ids = upload(device, mine.data(), mine.size() * 4);
  CUdeviceptr pointer = ids.get();
  if (scenario == "host-ids" && rank == comm.size() - 1)
    pointer = reinterpret_cast<CUdeviceptr>(mine.data());
  return expectThrow(rank, [&] {
    ep::allGatherForcedIds(comm, pointer, tokens, 2, kExperts);
  });
}

int routerMismatch(ep::DeviceCommunicator &comm, const CudaRouter &device,
                   const CudaRouter &topTwo) {
  // A dispatch of k = 3 (the device router's), combined by a top-2 router.
  const int rank = comm.rank();
  const int64_t tokens = 1, hiddenSize = 16, k = 3;
  std::vector<float> hidden(hiddenSize, 1.0f), weights(k, 0.25f);
  std::vector<int32_t> ids = {0, 3, 5};
  DeviceBuffer hiddenOnDevice =
                   upload(device, hidden.data(), hidden.size() * 4),
               idsOnDevice = upload(device, ids.data(), ids.size() * 4),
               weightsOnDevice = upload(device, weights.data(), k * 4),
               combined = device.allocate(hidden.size() * 4);
  ep::DeviceDispatched dispatched =
      ep::dispatch(comm, hiddenOnDevice.get(), ep::RowType::F32, hiddenSize,
                   idsOnDevice.get(), tokens, k,
                   ep::ExpertPlacement::contiguous(kExperts, comm.size()));
  return expectThrow(rank, [&] {
    ep::combine(comm, rank == 1 ? topTwo : device, dispatched.handle,
                dispatched.rows, weightsOnDevice.get(), combined.get());
  });
}

int mixedHandles(ep::DeviceCommunicator &comm, const CudaRouter &device) {
  // Two dispatches of one token each: to experts spread over the ranks,
  // and to rank 0's experts only. Rank 1 combines with the first's handle,
  // the others with the second's.
  const int rank = comm.rank();
  const int64_t hiddenSize = 16, k = 3;
  std::vector<float> hidden(hiddenSize, 1.0f), weights(k, 0.25f);
  std::vector<int32_t> spread = {0, 3, 7}, local = {0, 1, 2};
  DeviceBuffer hiddenOnDevice =
                   upload(device, hidden.data(), hidden.size() * 4),
               spreadIds = upload(device, spread.data(), k * 4),
               localIds = upload(device, local.data(), k * 4),
               weightsOnDevice = upload(device, weights.data(), k * 4),
               combined = device.allocate(hidden.size() * 4);
  const ep::ExpertPlacement placement =
      ep::ExpertPlacement::contiguous(kExperts, comm.size());
  ep::DeviceDispatched first =
      ep::dispatch(comm, hiddenOnDevice.get(), ep::RowType::F32, hiddenSize,
                   spreadIds.get(), 1, k, placement);
  ep::DeviceDispatched second =
      ep::dispatch(comm, hiddenOnDevice.get(), ep::RowType::F32, hiddenSize,
                   localIds.get(), 1, k, placement);
  const ep::DeviceDispatched &mine = rank == 1 ? first : second;
  return expectThrow(rank, [&] {
    ep::combine(comm, device, mine.handle, mine.rows, weightsOnDevice.get(),
                combined.get());
  });
}

int unusedSlots(ep::DeviceCommunicator &comm, const CudaRouter &device) {
  const int rank = comm.rank();
  const int64_t hiddenSize = 16, k = 3;
  std::vector<float> hidden(hiddenSize, 1.0f), weights(k, 0.25f);
  std::vector<int32_t> ids = {0, 5, rank == 0 ? -1 : 6};
  DeviceBuffer hiddenOnDevice =
                   upload(device, hidden.data(), hidden.size() * 4),
               idsOnDevice = upload(device, ids.data(), k * 4),
               weightsOnDevice = upload(device, weights.data(), k * 4),
               combined = device.allocate(hidden.size() * 4);
  ep::DeviceDispatched dispatched =
      ep::dispatch(comm, hiddenOnDevice.get(), ep::RowType::F32, hiddenSize,
                   idsOnDevice.get(), 1, k,
                   ep::ExpertPlacement::contiguous(kExperts, comm.size()),
                   /*unusedSlots=*/true);
  return expectThrow(rank, [&] {
    ep::combine(comm, device, dispatched.handle, dispatched.rows,
                weightsOnDevice.get(), combined.get());
  });
}

} // namespace

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int status = 1;
  {
    ep::MpiCommunicator mpi;
    std::string scenario = argc > 1 ? argv[1] : "";
    try {
      const bool bf16 = scenario == "moe-layer-bf16";
      std::unique_ptr<HostRouter> router =
          emulatedRouter(3, bf16 ? "bf16" : "f32");
      const CudaRouter &device = *gpuemu::emulatedDevice(*router);
      EmulatedDeviceCommunicator comm(mpi, device.driver(), device.context());
      if (scenario == "all-gather")
        status = allGather(mpi, comm, device);
      else if (scenario == "moe-layer-f32" || bf16)
        status = moeLayer(mpi, comm, device,
                          bf16 ? ep::RowType::BF16 : ep::RowType::F32, false,
                          false, scenario.c_str());
      else if (scenario == "skewed")
        status = moeLayer(mpi, comm, device, ep::RowType::F32, true, false,
                          "skewed");
      else if (scenario == "empty-rank")
        status = moeLayer(mpi, comm, device, ep::RowType::F32, false, true,
                          "empty-rank");
      else if (scenario == "host-ids" || scenario == "short-ids")
        status = badIds(comm, device, scenario);
      else if (scenario == "router-k") {
        std::unique_ptr<HostRouter> topTwo = emulatedRouter(2, "f32");
        status = routerMismatch(comm, device, *gpuemu::emulatedDevice(*topTwo));
      } else if (scenario == "mixed-handles")
        status = mixedHandles(comm, device);
      else if (scenario == "unused-slots")
        status = unusedSlots(comm, device);
      else
        std::fprintf(stderr, "usage: moegen-ep-device-check all-gather|"
                             "moe-layer-f32|moe-layer-bf16|skewed|empty-rank|"
                             "host-ids|"
                             "short-ids|router-k|mixed-handles|unused-slots\n");
    } catch (const Error &e) {
      std::printf("rank %d: FAIL: %s\n", mpi.rank(), e.what());
    }
  }
  std::fflush(stdout);
  MPI_Finalize();
  return status;
}
