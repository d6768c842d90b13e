//===- EpReplay.cpp - Router replay across EP sizes over MPI --------------===//
//
// Run with `mpirun -n 4 moegen-sample-ep-replay --train-ep 2`. Rollout: each
// of the N ranks (one EP group of N) routes its own tokens through L layers
// with capture on, into a [T_r, L, k] capture buffer (runtime/Recorder.h,
// vLLM's layout), and runs layer 0's MoE block over the EP group.
// Training: the same processes regrouped into EP groups of --train-ep
// ranks, each rank training a different, contiguous slice of all the
// tokens. The captured ids travel with all_gather_forced_ids (checked and
// agreed first); every training rank replays each layer with the ids of
// its tokens, checks that replay forced exactly the captured experts, and
// runs layer 0's MoE block over its training EP group with the replayed
// routing, against what one rank computes. Rank 0 prints one line.
//
// The logits a token sees at a layer are a function of (rollout rank,
// token, layer), perturbed at training time (the weights moved since the
// rollout): replay keeps the captured experts, where routing them afresh
// would pick others for some tokens (the line counts them).
//
//===----------------------------------------------------------------------===//

#include "ToyMoe.h"

#include "runtime/Recorder.h"
#include "runtime/ep/MpiCommunicator.h"

#include <random>

using namespace moegen;

namespace {

struct Options {
  std::string specPath = std::string(MOEGEN_SOURCE_DIR) +
                         "/templates/qwen3-30b-a3b.yaml";
  int64_t tokens = 32;
  int64_t layers = 3;
  int64_t hidden = 32;
  int trainEp = 2;
};

/// The logits of token `t` of rollout rank `r` at `layer`, [E] of the
/// spec's dtype, appended to `out`.
void appendLogits(const rt::RouterFacts &facts, int r, int64_t t,
                  int64_t layer, bool perturbed, std::vector<uint8_t> &out) {
  std::mt19937 random(static_cast<unsigned>(r * 1000003 + t * 131 + layer));
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::mt19937 drift(static_cast<unsigned>(r * 7 + t * 1009 + layer * 3 + 1));
  std::normal_distribution<float> noise(0.0f, 0.2f);
  for (int64_t e = 0; e < facts.numExperts; ++e)
    samples::appendLogit(
        facts, normal(random) + (perturbed ? noise(drift) : 0.0f), out);
}

float hiddenValue(int r, int64_t t, int64_t h) {
  return std::sin(0.37f * static_cast<float>(r * 7919 + t * 31 + h));
}

/// Layer 0's MoE block over `comm` for tokens named by (rollout rank,
/// token), against one rank's computation.
double moeBlock(rt::ep::Communicator &comm, rt::HostRouter &router,
                int64_t hiddenSize,
                const std::vector<std::pair<int, int64_t>> &tokens,
                const samples::Routing &routing) {
  std::vector<float> hidden;
  for (auto [r, t] : tokens)
    for (int64_t h = 0; h < hiddenSize; ++h)
      hidden.push_back(hiddenValue(r, t, h));
  return samples::moeBlock(comm, router, hiddenSize, hidden, routing);
}

int run(const Options &options, rt::ep::MpiCommunicator &world) {
  const int rank = world.rank(), ranks = world.size();
  if (options.trainEp < 1 || ranks % options.trainEp != 0)
    throw rt::Error(rt::Error::Kind::InvalidArgument,
                    "--train-ep " + std::to_string(options.trainEp) +
                        " must divide the rank count " + std::to_string(ranks));
  // Rollout records, training replays.
  std::unique_ptr<rt::HostRouter> compiled =
      samples::compileRouter(options.specPath, /*captureAndReplay=*/true);
  rt::HostRouter &router = *compiled;
  const rt::RouterFacts &facts = router.facts();
  const int64_t E = facts.numExperts, k = facts.topK, L = options.layers;

  // Rollout: T_r tokens on rank r, every layer routed with capture.
  const int64_t mine = options.tokens + 5 * rank;
  rt::Recorder capture(mine, L, k, E);
  samples::Routing rollout(mine, facts);
  for (int64_t layer = 0; layer < L; ++layer) {
    std::vector<uint8_t> logits;
    for (int64_t t = 0; t < mine; ++t)
      appendLogits(facts, rank, t, layer, /*perturbed=*/false, logits);
    rt::HostRouteCall call;
    call.numTokens = mine;
    call.logits = logits.data();
    call.captureBuffer = capture.data();
    call.captureLayers = L;
    call.captureLayer = layer;
    // Layer 0 feeds the MoE block (with dispatch's metadata); the others
    // are only captured.
    std::vector<int32_t> ids;
    std::vector<float> weights;
    if (layer == 0) {
      rollout.attach(call);
    } else {
      ids.resize(static_cast<std::size_t>(mine * k));
      weights.resize(ids.size());
      call.topkIds = ids.data();
      call.topkWeights = weights.data();
    }
    if (std::string failed = router.route(call); !failed.empty())
      throw rt::Error(rt::Error::Kind::Kernel, failed);
  }
  std::vector<std::pair<int, int64_t>> rolloutTokens;
  for (int64_t t = 0; t < mine; ++t)
    rolloutTokens.emplace_back(rank, t);
  double rolloutError =
      moeBlock(world, router, options.hidden, rolloutTokens, rollout);

  // Training: every layer's captured ids gathered in (rollout rank, token)
  // order, then a contiguous slice of all tokens per rank.
  std::vector<std::vector<int32_t>> gathered;
  for (int64_t layer = 0; layer < L; ++layer)
    gathered.push_back(rt::ep::allGatherForcedIds(
        world, capture.layer(layer).forcedIds(), mine, k, E));
  std::vector<std::pair<int, int64_t>> all;
  for (int r = 0; r < ranks; ++r)
    for (int64_t t = 0; t < options.tokens + 5 * r; ++t)
      all.emplace_back(r, t);
  const auto total = static_cast<int64_t>(all.size());
  const int64_t begin = total * rank / ranks, end = total * (rank + 1) / ranks;
  std::vector<std::pair<int, int64_t>> slice(all.begin() + begin,
                                             all.begin() + end);
  const auto count = static_cast<int64_t>(slice.size());

  MPI_Comm trainGroup;
  MPI_Comm_split(MPI_COMM_WORLD, rank / options.trainEp, rank, &trainGroup);
  int64_t mismatches = 0, drifted = 0;
  double trainError = 0.0;
  {
    rt::ep::MpiCommunicator train(trainGroup);
    for (int64_t layer = 0; layer < L; ++layer) {
      std::vector<int32_t> forced(gathered[layer].begin() + begin * k,
                                  gathered[layer].begin() + end * k);
      std::vector<uint8_t> logits;
      for (auto [r, t] : slice)
        appendLogits(facts, r, t, layer, /*perturbed=*/true, logits);
      samples::Routing replayed(count, facts);
      rt::HostRouteCall call;
      call.numTokens = count;
      call.logits = logits.data();
      call.forcedIds = forced.data();
      replayed.attach(call);
      if (std::string failed = router.replay(call); !failed.empty())
        throw rt::Error(rt::Error::Kind::Kernel, failed);
      for (std::size_t i = 0; i < replayed.ids.size(); ++i)
        mismatches += replayed.ids[i] != forced[i];
      // Routed afresh on the perturbed logits, for comparison.
      std::vector<int32_t> fresh(forced.size());
      std::vector<float> freshWeights(forced.size());
      call = rt::HostRouteCall();
      call.numTokens = count;
      call.logits = logits.data();
      call.topkIds = fresh.data();
      call.topkWeights = freshWeights.data();
      if (std::string failed = router.route(call); !failed.empty())
        throw rt::Error(rt::Error::Kind::Kernel, failed);
      for (int64_t i = 0; i < count; ++i) {
        bool changed = false;
        for (int64_t j = 0; j < k; ++j)
          changed |= std::find(forced.begin() + i * k,
                               forced.begin() + (i + 1) * k,
                               fresh[i * k + j]) == forced.begin() + (i + 1) * k;
        drifted += changed;
      }
      if (layer == 0)
        trainError = moeBlock(train, router, options.hidden, slice, replayed);
    }
  }
  MPI_Comm_free(&trainGroup);

  double local[4] = {rolloutError, trainError, static_cast<double>(mismatches),
                     static_cast<double>(drifted)};
  std::vector<double> results(4 * static_cast<std::size_t>(ranks));
  world.allGatherHost(local, sizeof(local), results.data());
  double worst = 0.0, different = 0.0, changed = 0.0;
  for (int r = 0; r < ranks; ++r) {
    worst = std::max({worst, results[4 * r], results[4 * r + 1]});
    different += results[4 * r + 2];
    changed += results[4 * r + 3];
  }
  if (rank == 0)
    std::printf("ep-replay: %s, %lld layers, %lld tokens; rollout EP %d, "
                "training EP %d (x%d groups): replay forced the captured "
                "experts (%.0f differ; routed afresh, %.0f of %lld token-"
                "layers would change), max abs error against one rank %g\n",
                facts.name.c_str(), static_cast<long long>(L),
                static_cast<long long>(total), ranks, options.trainEp,
                ranks / options.trainEp, different, changed,
                static_cast<long long>(total * L), worst);
  return worst == 0.0 && different == 0.0 ? 0 : 1;
}

} // namespace

int main(int argc, char **argv) {
  Options options;
  CLI::App app{"Router replay across EP sizes: capture on rollout ranks, "
               "replay on training ranks regrouped (run under mpirun)"};
  app.add_option("--spec", options.specPath, "routing spec (a template)")
      ->check(CLI::ExistingFile);
  app.add_option("--tokens", options.tokens, "tokens on rollout rank 0 (rank r: +5r)")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 16));
  app.add_option("--layers", options.layers, "MoE layers")
      ->check(CLI::Range(int64_t(1), int64_t(256)));
  app.add_option("--hidden", options.hidden, "hidden size")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 14));
  app.add_option("--train-ep", options.trainEp, "EP size of the training groups");
  return samples::runUnderMpi(argc, argv, app, "moegen-sample-ep-replay",
                              [&] {
                                rt::ep::MpiCommunicator world;
                                return run(options, world);
                              });
}
