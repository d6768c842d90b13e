//===- EpBench.cpp - EP dispatch and combine throughput over MPI ----------===//
//
// mpirun -n N moegen-bench-ep [--tokens 256,4096] [--hidden 1024,4096]
//   [--experts 128] [--k 8] [--reps 20]
//
// Per (tokens per rank, hidden size): the median over --reps of dispatch and
// of combine (each between barriers, the slowest rank's time), the largest
// rank's grouped rows (what dispatch hands to the experts, in MB), and
// those bytes over each time. Random routing (uniform experts, contiguous
// placement), fp32 rows. A benchmark, not a test: it prints figures
// (docs/benchmarks.md).
//
//===----------------------------------------------------------------------===//

#include "runtime/Error.h"
#include "runtime/ep/ExpertParallel.h"
#include "runtime/ep/MpiCommunicator.h"

#include <CLI/CLI.hpp>
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
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
    if (comm.rank() == 0)
      std::printf("EP over MPI, %d ranks, E = %lld, k = %lld, fp32 rows, "
                  "median of %d\n%8s %7s %12s %12s %12s %10s %10s\n",
                  comm.size(), static_cast<long long>(experts),
                  static_cast<long long>(k), reps, "tokens", "hidden",
                  "dispatch us", "combine us", "grouped MB", "disp GB/s",
                  "comb GB/s");
    std::mt19937 random(7 + comm.rank());
    for (int64_t tokens : tokenCounts)
      for (int64_t hidden : hiddenSizes) {
        std::vector<float> rows(static_cast<std::size_t>(tokens * hidden), 1.0f);
        std::vector<int32_t> ids;
        std::vector<float> weights(static_cast<std::size_t>(tokens * k), 0.125f);
        std::vector<int32_t> all(static_cast<std::size_t>(experts));
        for (int64_t t = 0; t < tokens; ++t) {
          for (int64_t e = 0; e < experts; ++e)
            all[e] = static_cast<int32_t>(e);
          std::shuffle(all.begin(), all.end(), random);
          ids.insert(ids.end(), all.begin(), all.begin() + k);
        }
        std::vector<double> dispatchTimes, combineTimes;
        double sentBytes = 0.0;
        for (int rep = 0; rep <= reps; ++rep) {
          MPI_Barrier(MPI_COMM_WORLD);
          auto start = std::chrono::steady_clock::now();
          ep::Dispatched dispatched = ep::dispatch(
              comm, std::as_bytes(std::span<const float>(rows)),
              ep::RowType::F32, hidden, ids, tokens, k, placement);
          double dispatchSeconds = std::chrono::duration<double>(
              std::chrono::steady_clock::now() - start).count();
          MPI_Barrier(MPI_COMM_WORLD);
          start = std::chrono::steady_clock::now();
          std::vector<std::byte> combined =
              ep::combine(comm, dispatched.handle, dispatched.rows, weights);
          double combineSeconds = std::chrono::duration<double>(
              std::chrono::steady_clock::now() - start).count();
          double d = slowest(dispatchSeconds), c = slowest(combineSeconds);
          if (rep == 0) { // warm-up; the rows one rank sends, at most
            double mine = static_cast<double>(dispatched.rows.size());
            MPI_Allreduce(&mine, &sentBytes, 1, MPI_DOUBLE, MPI_MAX,
                          MPI_COMM_WORLD);
            continue;
          }
          dispatchTimes.push_back(d);
          combineTimes.push_back(c);
        }
        double d = median(dispatchTimes), c = median(combineTimes);
        if (comm.rank() == 0)
          std::printf("%8lld %7lld %12.1f %12.1f %12.2f %10.2f %10.2f\n",
                      static_cast<long long>(tokens),
                      static_cast<long long>(hidden), d * 1e6, c * 1e6,
                      sentBytes / 1e6, sentBytes / d / 1e9,
                      sentBytes / c / 1e9);
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
