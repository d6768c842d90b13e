//===- EpMoeLayer.cpp - An expert-parallel MoE layer over MPI -------------===//
//
// Run with `mpirun -n 4 moegen-sample-ep-moe-layer`: every rank routes its
// own random tokens with a template spec on the CPU backend, dispatches the
// hidden rows to the ranks holding their experts, applies toy experts
// there, combines the outputs back in fp32, and compares them with what
// one rank computes for the same tokens through the generated kernels
// (route with dispatch -> permute -> toy experts -> combine). Rank 0 prints
// one verification line: the largest difference over all ranks (0: bit for
// bit).
//
//===----------------------------------------------------------------------===//

#include "ToyMoe.h"

#include "runtime/ep/MpiCommunicator.h"

#include <random>

using namespace moegen;

namespace {

struct Options {
  std::string specPath = std::string(MOEGEN_SOURCE_DIR) +
                         "/templates/qwen3-30b-a3b.yaml";
  int64_t tokens = 64;
  int64_t hidden = 64;
  unsigned seed = 1;
};

int run(const Options &options, rt::ep::Communicator &comm) {
  const int rank = comm.rank();
  std::unique_ptr<rt::HostRouter> router =
      samples::compileRouter(options.specPath, /*captureAndReplay=*/false);
  const rt::RouterFacts &facts = router->facts();
  const int64_t experts = facts.numExperts, k = facts.topK;

  // Each rank its own token count, and its own random tokens.
  const int64_t tokens = options.tokens + 7 * rank;
  std::mt19937 random(options.seed * 1000 + static_cast<unsigned>(rank));
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<uint8_t> logits;
  for (int64_t i = 0; i < tokens * experts; ++i)
    samples::appendLogit(facts, normal(random), logits);
  samples::Routing routing(tokens, facts);
  rt::HostRouteCall call;
  call.numTokens = tokens;
  call.logits = logits.data();
  routing.attach(call);
  if (std::string failed = router->route(call); !failed.empty())
    throw rt::Error(rt::Error::Kind::Kernel, failed);

  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> hidden(static_cast<std::size_t>(tokens * options.hidden));
  for (float &x : hidden)
    x = uniform(random);
  double maxError =
      samples::moeBlock(comm, *router, options.hidden, hidden, routing);

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
  return samples::runUnderMpi(argc, argv, app, "moegen-sample-ep-moe-layer",
                              [&] {
                                rt::ep::MpiCommunicator comm;
                                return run(options, comm);
                              });
}
