//===- EpMoeLayer.cpp - An expert-parallel MoE layer over MPI -------------===//
//
// Run with `mpirun -n 4 moegen-sample-ep-moe-layer`: every rank routes its
// own random tokens with a template spec on the CPU backend, dispatches the
// hidden rows to the ranks holding their experts, applies toy experts
// there, combines the outputs back in fp32, and compares them with what
// one rank computes for the same tokens. Rank 0 prints one verification
// line: the largest difference over all ranks (0: bit for bit).
//
//===----------------------------------------------------------------------===//

#include "compiler/backend/cpu/CpuHostRouter.h"
#include "compiler/spec/SpecParser.h"
#include "runtime/Error.h"
#include "runtime/HostRouter.h"
#include "runtime/ep/ExpertParallel.h"
#include "runtime/ep/MpiCommunicator.h"
#include "runtime/npy/HalfFloat.h"

#include "llvm/Support/Error.h"

#include <CLI/CLI.hpp>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace moegen;

namespace {

struct Options {
  std::string specPath = std::string(MOEGEN_SOURCE_DIR) +
                         "/templates/qwen3-30b-a3b.yaml";
  int64_t tokens = 64;
  int64_t hidden = 64;
  unsigned seed = 1;
};

/// Toy expert e of E: y = x (1 + e / E) + e / E.
float expert(int32_t e, int64_t experts, float x) {
  float scale = static_cast<float>(e) / static_cast<float>(experts);
  return x * (1.0f + scale) + scale;
}

/// Random logits of the spec's dtype, [tokens, E].
std::vector<uint8_t> randomLogits(const rt::RouterFacts &facts,
                                  int64_t tokens, std::mt19937 &random) {
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<uint8_t> bytes(static_cast<std::size_t>(tokens * facts.numExperts) *
                             facts.logitBytes());
  for (int64_t i = 0; i < tokens * facts.numExperts; ++i) {
    float value = normal(random);
    if (facts.logits == rt::RouterFacts::Logits::F32) {
      std::memcpy(bytes.data() + i * 4, &value, 4);
    } else {
      uint16_t bits = facts.logits == rt::RouterFacts::Logits::BF16
                          ? npy::floatToBf16(value)
                          : npy::floatToHalf(value);
      std::memcpy(bytes.data() + i * 2, &bits, 2);
    }
  }
  return bytes;
}

int run(const Options &options, rt::ep::Communicator &comm) {
  const int rank = comm.rank();
  std::string error;
  std::optional<RoutingSpec> spec =
      parseRoutingSpecFile(options.specPath, error);
  if (!spec)
    throw rt::Error(rt::Error::Kind::InvalidArgument, error);
  auto compiled = cpu::CpuHostRouter::compile(*spec, {});
  if (!compiled)
    throw rt::Error(rt::Error::Kind::Compile,
                    llvm::toString(compiled.takeError()));
  rt::HostRouter &router = **compiled;
  const rt::RouterFacts &facts = router.facts();
  if (facts.hashSelection || facts.scoreBias)
    throw rt::Error(rt::Error::Kind::InvalidArgument,
                    options.specPath +
                        ": the sample routes plain logits (no bias, no hash "
                        "table); pick another template");
  const int64_t experts = facts.numExperts, k = facts.topK;

  // Each rank its own token count, and its own random tokens.
  const int64_t tokens = options.tokens + 7 * rank;
  std::mt19937 random(options.seed * 1000 + static_cast<unsigned>(rank));
  std::vector<uint8_t> logits = randomLogits(facts, tokens, random);
  std::vector<int32_t> ids(static_cast<std::size_t>(tokens * k));
  std::vector<float> weights(ids.size());
  rt::HostRouteCall call;
  call.numTokens = tokens;
  call.logits = logits.data();
  call.topkIds = ids.data();
  call.topkWeights = weights.data();
  if (std::string failed = router.route(call); !failed.empty())
    throw rt::Error(rt::Error::Kind::Kernel, failed);

  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> hidden(static_cast<std::size_t>(tokens * options.hidden));
  for (float &x : hidden)
    x = uniform(random);

  rt::ep::ExpertPlacement placement =
      rt::ep::ExpertPlacement::contiguous(experts, comm.size());
  rt::ep::Dispatched dispatched = rt::ep::dispatch(
      comm, std::as_bytes(std::span<const float>(hidden)),
      rt::ep::RowType::F32, options.hidden, ids, tokens, k, placement);
  std::vector<int32_t> local = placement.expertsOf(rank);
  for (std::size_t e = 0; e < local.size(); ++e)
    for (int64_t row = dispatched.expertOffsets[e];
         row < dispatched.expertOffsets[e + 1]; ++row)
      for (int64_t h = 0; h < options.hidden; ++h) {
        std::byte *at =
            dispatched.rows.data() + (row * options.hidden + h) * 4;
        float x;
        std::memcpy(&x, at, 4);
        float y = expert(local[e], experts, x);
        std::memcpy(at, &y, 4);
      }
  std::vector<std::byte> combined =
      rt::ep::combine(comm, dispatched.handle, dispatched.rows, weights);

  // One rank's computation of the same layer for these tokens.
  double maxError = 0.0;
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t h = 0; h < options.hidden; ++h) {
      float single = 0.0f;
      for (int64_t j = 0; j < k; ++j)
        single += weights[t * k + j] *
                  expert(ids[t * k + j], experts, hidden[t * options.hidden + h]);
      float got;
      std::memcpy(&got, combined.data() + (t * options.hidden + h) * 4, 4);
      maxError = std::max(maxError, std::fabs(double(got) - double(single)));
    }

  // The largest error and the token count of every rank, at rank 0.
  double mine[2] = {maxError, static_cast<double>(tokens)};
  std::vector<double> all(2 * static_cast<std::size_t>(comm.size()));
  comm.allGatherHost(mine, sizeof(mine), all.data());
  double worst = 0.0, total = 0.0;
  for (int r = 0; r < comm.size(); ++r) {
    worst = std::max(worst, all[2 * r]);
    total += all[2 * r + 1];
  }
  if (rank == 0)
    std::printf("ep-moe-layer: %d ranks, %s (E = %lld, k = %lld), %.0f tokens, "
                "hidden %lld: max abs error against one rank %g\n",
                comm.size(), facts.name.c_str(),
                static_cast<long long>(experts), static_cast<long long>(k),
                total, static_cast<long long>(options.hidden), worst);
  return worst == 0.0 ? 0 : 1;
}

} // namespace

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  Options options;
  CLI::App app{"An expert-parallel MoE layer: route, dispatch, toy experts, "
               "combine, checked against one rank (run under mpirun)"};
  app.add_option("--spec", options.specPath, "routing spec (a template)")
      ->check(CLI::ExistingFile);
  app.add_option("--tokens", options.tokens, "tokens on rank 0 (rank r: +7r)")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 20));
  app.add_option("--hidden", options.hidden, "hidden size")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 16));
  app.add_option("--seed", options.seed, "random seed");
  int status = 2;
  try {
    app.parse(argc, argv);
    rt::ep::MpiCommunicator comm;
    status = run(options, comm);
  } catch (const CLI::ParseError &e) {
    status = app.exit(e) == 0 ? 0 : 2;
  } catch (const rt::Error &e) {
    std::fprintf(stderr, "moegen-sample-ep-moe-layer: error: %s\n", e.what());
    status = e.kind() == rt::Error::Kind::InvalidArgument ? 2 : 1;
  }
  MPI_Finalize();
  return status;
}
