//===- EpBench.cpp - EP dispatch and combine throughput over MPI ----------===//
//
// mpirun -n N moegen-bench-ep [--tokens 256,4096] [--hidden 1024,4096]
//   [--experts 128] [--k 8] [--reps 20] [--kernels DIR]
//
// Per (tokens per rank, hidden size): the median over --reps of dispatch and
// of combine (each between barriers, the slowest rank's time), the largest
// rank's grouped rows (what dispatch hands to the experts, in MB), and
// those bytes over each time. Random routing (uniform experts, contiguous
// placement), fp32 rows. A benchmark, not a test: it prints figures
// (docs/benchmarks.md).
//
// With --kernels (where the runtime's CUDA library is built): EP on device
// buffers over NCCL, rank r on GPU r mod the GPU count, the NCCL unique id
// sent over MPI, with a DeviceWorkspace; DIR is a kernel directory of a
// spec with permute: true, fp32 hidden rows and k = --k, whose combine
// kernel does the sum.
//
//===----------------------------------------------------------------------===//

#include "runtime/Error.h"
#include "runtime/ep/ExpertParallel.h"
#include "runtime/ep/MpiCommunicator.h"
#ifdef MOEGEN_BENCH_EP_CUDA
#include "runtime/cuda/CudaDriver.h"
#include "runtime/cuda/CudaRouter.h"
#include "runtime/ep/DeviceExpertParallel.h"
#include "runtime/ep/NcclCommunicator.h"

#include <memory>
#endif

#include <CLI/CLI.hpp>
#include <mpi.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

using namespace moegen::rt;

namespace {

double slowest(double seconds) {
  double worst = 0.0;
  MPI_Allreduce(&seconds, &worst, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return worst;
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

double since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
      .count();
}

/// One (tokens, hidden) point: `step(timed)` runs dispatch then combine
/// and returns {dispatch seconds, combine seconds, grouped bytes}; the
/// first call warms up. Prints the row on rank 0.
void measure(int rank, int64_t tokens, int64_t hidden, int reps,
             const std::function<std::array<double, 3>()> &step) {
  std::vector<double> dispatchTimes, combineTimes;
  double groupedBytes = 0.0;
  for (int rep = 0; rep <= reps; ++rep) {
    std::array<double, 3> got = step();
    double d = slowest(got[0]), c = slowest(got[1]);
    if (rep == 0) { // warm-up; the rows one rank groups, at most
      MPI_Allreduce(&got[2], &groupedBytes, 1, MPI_DOUBLE, MPI_MAX,
                    MPI_COMM_WORLD);
      continue;
    }
    dispatchTimes.push_back(d);
    combineTimes.push_back(c);
  }
  double d = median(dispatchTimes), c = median(combineTimes);
  if (rank == 0)
    std::printf("%8lld %7lld %12.1f %12.1f %12.2f %10.2f %10.2f\n",
                static_cast<long long>(tokens), static_cast<long long>(hidden),
                d * 1e6, c * 1e6, groupedBytes / 1e6, groupedBytes / d / 1e9,
                groupedBytes / c / 1e9);
}

/// Random routing: k distinct uniform experts per token.
std::vector<int32_t> randomIds(std::mt19937 &random, int64_t tokens,
                               int64_t experts, int64_t k) {
  std::vector<int32_t> ids, all(static_cast<std::size_t>(experts));
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t e = 0; e < experts; ++e)
      all[e] = static_cast<int32_t>(e);
    std::shuffle(all.begin(), all.end(), random);
    ids.insert(ids.end(), all.begin(), all.begin() + k);
  }
  return ids;
}

const char *kHeader = "%8s %7s %12s %12s %12s %10s %10s\n";

#ifdef MOEGEN_BENCH_EP_CUDA
/// EP on device buffers over NCCL (--kernels).
void benchDevice(ep::MpiCommunicator &mpi, const std::string &kernels,
                 const std::vector<int64_t> &tokenCounts,
                 const std::vector<int64_t> &hiddenSizes, int64_t experts,
                 int64_t k, int reps) {
  const CudaDriver &driver = CudaDriver::get(); // NoDriver, NoDevice
  const int device = mpi.rank() % driver.deviceCount();
  LoadOptions options;
  options.device = device;
  std::unique_ptr<CudaRouter> router = CudaRouter::load(kernels, options);
  const Manifest &manifest = router->manifest();
  if (!router->hasEntry(EntryKind::Combine) || manifest.topK != k ||
      manifest.hiddenDType != DType::F32)
    throw Error(Error::Kind::InvalidArgument,
                kernels + ": --kernels needs a combine kernel (permute: "
                          "true) with fp32 hidden rows and k = --k");
  ep::NcclUniqueId id{};
  if (mpi.rank() == 0)
    id = ep::NcclCommunicator::uniqueId();
  MPI_Bcast(id.data(), static_cast<int>(id.size()), MPI_BYTE, 0,
            MPI_COMM_WORLD);
  ep::NcclCommunicator comm(id, mpi.rank(), mpi.size(), device);
  const ep::ExpertPlacement placement =
      ep::ExpertPlacement::contiguous(experts, comm.size());
  if (mpi.rank() == 0)
    std::printf("EP on device buffers over NCCL, %d ranks, %d GPU(s) seen "
                "by rank 0, E = %lld, k = %lld, fp32 rows, median of %d\n",
                comm.size(), driver.deviceCount(),
                static_cast<long long>(experts), static_cast<long long>(k),
                reps);
  if (mpi.rank() == 0)
    std::printf(kHeader, "tokens", "hidden", "dispatch us", "combine us",
                "grouped MB", "disp GB/s", "comb GB/s");
  std::mt19937 random(7 + mpi.rank());
  ep::DeviceWorkspace workspace;
  for (int64_t tokens : tokenCounts)
    for (int64_t hidden : hiddenSizes) {
      std::vector<float> rows(static_cast<std::size_t>(tokens * hidden), 1.0f);
      std::vector<int32_t> ids = randomIds(random, tokens, experts, k);
      std::vector<float> weights(static_cast<std::size_t>(tokens * k), 0.125f);
      auto upload = [&](const void *data, std::size_t bytes) {
        DeviceBuffer buffer = router->allocate(std::max<std::size_t>(bytes, 4));
        buffer.upload(data, bytes, nullptr);
        return buffer;
      };
      DeviceBuffer rowsOnDevice = upload(rows.data(), rows.size() * 4),
                   idsOnDevice = upload(ids.data(), ids.size() * 4),
                   weightsOnDevice = upload(weights.data(), weights.size() * 4),
                   combined = router->allocate(
                       std::max<std::size_t>(rows.size() * 4, 4));
      measure(mpi.rank(), tokens, hidden, reps, [&] {
        MPI_Barrier(MPI_COMM_WORLD);
        auto start = std::chrono::steady_clock::now();
        ep::DeviceDispatched dispatched = ep::dispatch(
            comm, rowsOnDevice.get(), ep::RowType::F32, hidden,
            idsOnDevice.get(), tokens, k, placement, false, &workspace);
        const double dispatchSeconds = since(start);
        MPI_Barrier(MPI_COMM_WORLD);
        start = std::chrono::steady_clock::now();
        ep::combine(comm, *router, dispatched.handle, dispatched.rows,
                    weightsOnDevice.get(), combined.get(), &workspace);
        return std::array<double, 3>{dispatchSeconds, since(start),
                                     double(dispatched.handle.groupedRows) *
                                         double(hidden) * 4.0};
      });
    }
}
#endif

} // namespace

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  std::vector<int64_t> tokenCounts = {256, 4096}, hiddenSizes = {1024, 4096};
  int64_t experts = 128, k = 8;
  int reps = 20;
  CLI::App app{"EP dispatch and combine throughput over MPI"};
  app.add_option("--tokens", tokenCounts, "tokens per rank")->delimiter(',');
  app.add_option("--hidden", hiddenSizes, "hidden sizes")->delimiter(',');
  app.add_option("--experts", experts, "expert count")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 16));
  app.add_option("--k", k, "experts per token")
      ->check(CLI::Range(int64_t(1), int64_t(64)));
  app.add_option("--reps", reps, "timed repetitions")
      ->check(CLI::Range(1, 100000));
  std::string kernels;
  app.add_option("--kernels", kernels,
                 "EP on device buffers over NCCL, combining with this kernel "
                 "directory's combine kernel (permute: true, fp32 rows)");
  int status = 0;
  try {
    app.parse(argc, argv);
    ep::MpiCommunicator comm;
    if (experts % comm.size() != 0 || k > experts)
      throw Error(Error::Kind::InvalidArgument,
                  "--experts must be a multiple of the rank count and at "
                  "least --k");
    ep::ExpertPlacement placement =
        ep::ExpertPlacement::contiguous(experts, comm.size());
    if (!kernels.empty()) {
#ifdef MOEGEN_BENCH_EP_CUDA
      benchDevice(comm, kernels, tokenCounts, hiddenSizes, experts, k, reps);
#else
      throw Error(Error::Kind::InvalidArgument,
                  "--kernels: built without the runtime's CUDA library");
#endif
    } else {
      if (comm.rank() == 0)
        std::printf("EP over MPI, %d ranks, E = %lld, k = %lld, fp32 rows, "
                    "median of %d\n",
                    comm.size(), static_cast<long long>(experts),
                    static_cast<long long>(k), reps);
      if (comm.rank() == 0)
        std::printf(kHeader, "tokens", "hidden", "dispatch us", "combine us",
                    "grouped MB", "disp GB/s", "comb GB/s");
      std::mt19937 random(7 + comm.rank());
      for (int64_t tokens : tokenCounts)
        for (int64_t hidden : hiddenSizes) {
          std::vector<float> rows(static_cast<std::size_t>(tokens * hidden),
                                  1.0f);
          std::vector<int32_t> ids = randomIds(random, tokens, experts, k);
          std::vector<float> weights(static_cast<std::size_t>(tokens * k),
                                     0.125f);
          measure(comm.rank(), tokens, hidden, reps, [&] {
            MPI_Barrier(MPI_COMM_WORLD);
            auto start = std::chrono::steady_clock::now();
            ep::Dispatched dispatched = ep::dispatch(
                comm, std::as_bytes(std::span<const float>(rows)),
                ep::RowType::F32, hidden, ids, tokens, k, placement);
            const double dispatchSeconds = since(start);
            MPI_Barrier(MPI_COMM_WORLD);
            start = std::chrono::steady_clock::now();
            std::vector<std::byte> combined =
                ep::combine(comm, dispatched.handle, dispatched.rows, weights);
            return std::array<double, 3>{
                dispatchSeconds, since(start),
                static_cast<double>(dispatched.rows.size())};
          });
        }
    }
  } catch (const CLI::ParseError &e) {
    status = app.exit(e) == 0 ? 0 : 2;
  } catch (const Error &e) {
    std::fprintf(stderr, "moegen-bench-ep: error: %s\n", e.what());
    status = 2;
  }
  MPI_Finalize();
  return status;
}
