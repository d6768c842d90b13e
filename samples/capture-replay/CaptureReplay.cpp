//===- CaptureReplay.cpp - Router replay over a stack of MoE layers -------===//
//
// Router replay as an RL stack uses it, on a DeepSeek-V3-like stack of
// routers with random weights:
//
//   rollout   route every layer's gate logits, capturing the chosen experts
//             into one [tokens, layers, k] buffer (vLLM's layout), saved as
//             .npy;
//   training  the trainer computes the same logits with other numerics
//             (modelled as noise on the logits). Routing them afresh picks
//             other experts for some tokens; replay loads the capture and
//             forces the rollout's experts, recomputing only their weights.
//
// Per layer it prints how many tokens' expert sets the fresh routing and
// the replay share with the rollout, and how far the replayed weights moved.
// Replay must agree on every token; the program exits 1 when it does not.
//
//   moegen-sample-capture-replay --backend cpu
//   moegen-sample-capture-replay --backend cuda --tokens 8192 --layers 58
//
// --backend cpu runs the spec through the CPU backend (moegen::cpu), and
// --backend cuda through the NVPTX kernels, compiled on first use into the
// JIT cache and launched by the runtime (moegen::jit::loadRouter). Both sit
// behind the runtime's HostRouter, which takes host buffers (the CUDA one
// uploads and downloads them), so the sample has one code path for both.
//
//===----------------------------------------------------------------------===//

#include "runtime/Error.h"
#include "runtime/HostRouter.h"
#include "runtime/Manifest.h"
#include "runtime/Recorder.h"
#include "runtime/npy/HalfFloat.h"

// The runtime-only build (moegen-sample-capture-replay-rt) links no LLVM or
// MLIR, for GPU machines without the compiler: it runs a kernel directory
// (--kernels) on the GPU and has neither the CPU backend nor the JIT.
#ifndef MOEGEN_SAMPLE_RUNTIME_ONLY
#include "compiler/backend/cpu/CpuHostRouter.h"
#include "compiler/spec/SpecParser.h"
#endif
#ifdef MOEGEN_HAVE_CUDA_RUNTIME
#ifndef MOEGEN_SAMPLE_RUNTIME_ONLY
#include "compiler/jit/KernelJit.h"
#endif
#include "runtime/JitCache.h"
#include "runtime/cuda/CudaHostRouter.h"
#endif

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

namespace {

namespace rt = moegen::rt;
using rt::RouterFacts;

constexpr int kExitBadInput = 2;

struct Options {
#ifdef MOEGEN_SAMPLE_RUNTIME_ONLY
  std::string specPath;
  std::string backend = "cuda";
#else
  std::string specPath = MOEGEN_SOURCE_DIR "/templates/deepseek-v3.yaml";
  std::string backend = "cpu";
#endif
  /// A `moegen compile --emit=cubin` directory to run instead of compiling
  /// the spec (--backend cuda only).
  std::string kernelsDir;
  int64_t layers = 6;
  int64_t tokens = 2048;
  int64_t hidden = 128;
  double noise = 0.01;
  uint64_t seed = 2026;
  std::string capturePath;
};

/// splitmix64 and Box-Muller: the same numbers on every platform, which
/// std::normal_distribution does not promise.
class Random {
public:
  explicit Random(uint64_t seed) : state(seed) {}
  uint64_t next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  /// Uniform in (0, 1).
  double uniform() { return (static_cast<double>(next() >> 11) + 0.5) * 0x1p-53; }
  float normal() {
    double r = std::sqrt(-2.0 * std::log(uniform()));
    return static_cast<float>(r * std::cos(2.0 * M_PI * uniform()));
  }

private:
  uint64_t state;
};

/// The model: per layer, hidden states [T, H] (a residual stream: each
/// layer keeps most of the one before) and gate weights [H, E], plus the
/// selection-only bias [E] when the spec has one.
struct RouterStack {
  int64_t layers, tokens, hidden, experts;
  std::vector<std::vector<float>> states, gates, biases;

  RouterStack(const Options &options, const RouterFacts &spec)
      : layers(options.layers), tokens(options.tokens),
        hidden(options.hidden), experts(spec.numExperts) {
    Random random(options.seed);
    std::vector<float> state(tokens * hidden);
    for (float &x : state)
      x = random.normal();
    const float gateScale = 1.0f / std::sqrt(static_cast<float>(hidden));
    for (int64_t l = 0; l < layers; ++l) {
      if (l > 0)
        for (float &x : state)
          x = 0.8f * x + 0.6f * random.normal();
      states.push_back(state);
      std::vector<float> gate(hidden * experts);
      for (float &w : gate)
        w = gateScale * random.normal();
      gates.push_back(std::move(gate));
      std::vector<float> bias;
      if (spec.scoreBias) {
        bias.resize(experts);
        for (float &b : bias)
          b = 0.1f * random.normal();
      }
      biases.push_back(std::move(bias));
    }
  }

  /// Gate logits of `layer`, [T, E]: states · gate, plus N(0, noise²) per
  /// logit when `noise` > 0 (the trainer's numerics).
  std::vector<float> logits(int64_t layer, double noise, Random &random) const {
    std::vector<float> out(tokens * experts, 0.0f);
    const std::vector<float> &x = states[layer], &w = gates[layer];
    for (int64_t t = 0; t < tokens; ++t) {
      float *row = &out[t * experts];
      for (int64_t h = 0; h < hidden; ++h) {
        const float xh = x[t * hidden + h];
        const float *wRow = &w[h * experts];
        for (int64_t e = 0; e < experts; ++e)
          row[e] += xh * wRow[e];
      }
      if (noise > 0)
        for (int64_t e = 0; e < experts; ++e)
          row[e] += static_cast<float>(noise) * random.normal();
    }
    return out;
  }
};

/// The logits in the spec's dtype: f32 as is, bf16 / f16 as bit patterns.
std::vector<uint8_t> encodeLogits(const std::vector<float> &logits,
                                  RouterFacts::Logits dtype) {
  if (dtype == RouterFacts::Logits::F32) {
    std::vector<uint8_t> bytes(logits.size() * 4);
    std::memcpy(bytes.data(), logits.data(), bytes.size());
    return bytes;
  }
  std::vector<uint8_t> bytes(logits.size() * 2);
  for (size_t i = 0; i < logits.size(); ++i) {
    uint16_t bits = dtype == RouterFacts::Logits::BF16
                        ? moegen::npy::floatToBf16(logits[i])
                        : moegen::npy::floatToHalf(logits[i]);
    std::memcpy(&bytes[i * 2], &bits, 2);
  }
  return bytes;
}

/// One layer's routing result, [T, k] each.
struct Routed {
  std::vector<int32_t> ids;
  std::vector<float> weights;
};

/// A [T, k] result of `router` on `logits`; throws rt::Error naming the
/// layer when the kernels refuse the input.
class LayerCall {
public:
  LayerCall(const RouterFacts &spec, int64_t tokens,
            const std::vector<uint8_t> &logits)
      : out{std::vector<int32_t>(tokens * spec.topK),
            std::vector<float>(tokens * spec.topK)} {
    call.numTokens = tokens;
    call.logits = logits.data();
    call.topkIds = out.ids.data();
    call.topkWeights = out.weights.data();
  }
  rt::HostRouteCall call;
  Routed out;
};

void check(const std::string &error, int64_t layer) {
  if (!error.empty())
    throw rt::Error(rt::Error::Kind::Kernel,
                    "layer " + std::to_string(layer) + ": " + error);
}

/// Routes `layer`, writing its ids into `capture` at that layer.
Routed routeLayer(rt::HostRouter &router, int64_t layer,
                  const std::vector<uint8_t> &logits,
                  const std::vector<float> &bias, rt::Recorder &capture) {
  LayerCall layerCall(router.facts(), capture.numTokens(), logits);
  rt::HostRouteCall &call = layerCall.call;
  call.bias = bias.empty() ? nullptr : bias.data();
  call.captureBuffer = capture.data();
  call.captureLayers = capture.numLayers();
  call.captureLayer = layer;
  check(router.route(call), layer);
  return std::move(layerCall.out);
}

/// Replays `layer` with the ids forced from `forcedIds` ([T, k]).
Routed replayLayer(rt::HostRouter &router, int64_t layer,
                   const std::vector<uint8_t> &logits,
                   const std::vector<int32_t> &forcedIds) {
  int64_t tokens =
      static_cast<int64_t>(forcedIds.size()) / router.facts().topK;
  LayerCall layerCall(router.facts(), tokens, logits);
  layerCall.call.forcedIds = forcedIds.data();
  check(router.replay(layerCall.call), layer);
  return std::move(layerCall.out);
}

#ifdef MOEGEN_HAVE_CUDA_RUNTIME
/// The NVPTX kernels of `kernelsDir` through the runtime; `jitRouter`, when
/// given, came from the JIT cache instead (`how` says whether it compiled).
std::unique_ptr<rt::HostRouter>
cudaHostRouter(std::unique_ptr<rt::CudaRouter> jitRouter,
               const std::string &kernelsDir, const std::string &jitDirectory,
               const std::string &how) {
  std::unique_ptr<rt::CudaRouter> router = std::move(jitRouter);
  if (!router)
    router = rt::CudaRouter::load(kernelsDir);
  std::printf("kernels: %s (%s, %s)\n",
              (jitDirectory.empty() ? kernelsDir : jitDirectory).c_str(),
              router->manifest().archText.c_str(), how.c_str());
  return std::make_unique<rt::CudaHostRouter>(std::move(router));
}
#endif // MOEGEN_HAVE_CUDA_RUNTIME

/// Tokens whose k experts, as sets, are the same in `a` and `b`.
int64_t agreeingTokens(const std::vector<int32_t> &a,
                       const std::vector<int32_t> &b, int64_t k) {
  int64_t agree = 0;
  std::vector<int32_t> x(k), y(k);
  for (size_t t = 0; t * k < a.size(); ++t) {
    std::copy_n(&a[t * k], k, x.begin());
    std::copy_n(&b[t * k], k, y.begin());
    std::sort(x.begin(), x.end());
    std::sort(y.begin(), y.end());
    agree += x == y;
  }
  return agree;
}

double percent(int64_t part, int64_t whole) {
  return whole ? 100.0 * static_cast<double>(part) / static_cast<double>(whole)
               : 100.0;
}

int fail(const std::string &message) {
  std::fprintf(stderr, "moegen-sample-capture-replay: error: %s\n",
               message.c_str());
  return kExitBadInput;
}

int run(const Options &options) {
  if (!options.kernelsDir.empty() && options.backend != "cuda")
    return fail("--kernels: only with --backend cuda");
  std::optional<RouterFacts> spec;
  std::optional<rt::Manifest> manifest;
  if (!options.kernelsDir.empty())
    manifest = rt::loadManifest(options.kernelsDir);
#ifdef MOEGEN_SAMPLE_RUNTIME_ONLY
  if (!manifest)
    return fail("--kernels DIR is required (a moegen compile --emit=cubin "
                "directory): this build has no compiler");
  spec = rt::routerFactsOf(*manifest);
  const std::string source = manifest->path;
#else
  std::string error;
  std::optional<moegen::RoutingSpec> parsed =
      moegen::parseRoutingSpecFile(options.specPath, error);
  if (!parsed)
    return fail(error);
  spec = moegen::cpu::routerFactsOf(*parsed);
  const std::string source = options.specPath;
  if (manifest) {
    RouterFacts compiled = rt::routerFactsOf(*manifest);
    if (compiled.numExperts != spec->numExperts ||
        compiled.topK != spec->topK || compiled.logits != spec->logits ||
        compiled.scoreBias != spec->scoreBias)
      return fail(manifest->path + ": the kernels are for spec '" +
                  compiled.name + "', not for " + options.specPath +
                  " (E, k, logits dtype or bias differ)");
  }
#endif
  if (!spec->capture || !spec->replay)
    return fail(source +
                ": the sample needs a spec with capture: true and replay: "
                "true (templates/deepseek-v3.yaml has both)");
  if (spec->hashSelection)
    return fail(source +
                ": the sample routes by top-k; this spec selects by hash "
                "table (replay a hash layer by its token ids instead)");
  const int64_t k = spec->topK, t = options.tokens, l = options.layers;
  // Host memory the stack needs (states, gates, the rollout's ids and
  // weights, two layers of logits): refuse what would not fit rather than
  // be killed half-way.
  const double bytes =
      4.0 * l * (t * options.hidden + options.hidden * spec->numExperts +
                 2 * t * k) +
      8.0 * t * spec->numExperts;
  constexpr double kMaxBytes = 16.0 * (1ull << 30);
  if (bytes > kMaxBytes)
    return fail("--layers " + std::to_string(l) + " x --tokens " +
                std::to_string(t) + " x --hidden " +
                std::to_string(options.hidden) + " needs " +
                std::to_string(static_cast<long long>(bytes / (1 << 20))) +
                " MiB of host memory; the sample allows 16 GiB");

  std::printf("spec %s: E = %lld, k = %lld; %lld layers x %lld tokens, hidden "
              "%lld; backend %s; trainer's logit noise %.3g\n",
              spec->name.c_str(), static_cast<long long>(spec->numExperts),
              static_cast<long long>(k), static_cast<long long>(l),
              static_cast<long long>(t), static_cast<long long>(options.hidden),
              options.backend.c_str(), options.noise);
  std::fflush(stdout);
  std::unique_ptr<rt::HostRouter> backend;
  if (options.backend == "cpu") {
#ifndef MOEGEN_SAMPLE_RUNTIME_ONLY
    auto compiled = moegen::cpu::CpuHostRouter::compile(*parsed, {});
    if (!compiled)
      throw rt::Error(rt::Error::Kind::Compile,
                      llvm::toString(compiled.takeError()));
    backend = std::move(*compiled);
#endif
  } else {
#ifdef MOEGEN_HAVE_CUDA_RUNTIME
    std::unique_ptr<rt::CudaRouter> jitRouter;
    rt::CacheEntry entry;
#ifndef MOEGEN_SAMPLE_RUNTIME_ONLY
    if (options.kernelsDir.empty())
      jitRouter = moegen::jit::loadRouter(*parsed, moegen::jit::JitOptions{},
                                          rt::LoadOptions{}, &entry);
#endif
    backend = cudaHostRouter(std::move(jitRouter), options.kernelsDir,
                             entry.directory,
                             entry.directory.empty() ? "loaded"
                             : entry.compiled        ? "compiled now"
                                                     : "from the JIT cache");
#else
    return fail("--backend cuda: built without the CUDA runtime (cuda.h was "
                "not found; set CUDA_HOME and rebuild)");
#endif
  }

  RouterStack stack(options, *spec);

  // Rollout: route every layer, capturing into one buffer, and save it.
  rt::Recorder capture(t, l, k, spec->numExperts);
  std::vector<Routed> rollout;
  Random exact(0);
  for (int64_t layer = 0; layer < l; ++layer)
    rollout.push_back(routeLayer(
        *backend, layer,
        encodeLogits(stack.logits(layer, 0.0, exact), spec->logits),
        stack.biases[layer], capture));
  std::string path = options.capturePath;
  bool temporary = path.empty();
  if (temporary)
    path = (std::filesystem::temp_directory_path() /
            ("moegen-capture-" + std::to_string(::getpid()) + ".npy"))
               .string();
  capture.save(path);
  std::printf("capture: %s ([%lld, %lld, %lld] %s, %zu bytes)\n",
              temporary ? "(temporary file)" : path.c_str(),
              static_cast<long long>(t), static_cast<long long>(l),
              static_cast<long long>(k),
              capture.elementBytes() == 2 ? "int16" : "int32",
              capture.sizeBytes());

  // Training: the same logits with the trainer's numerics, routed afresh
  // and replayed from the saved capture.
  rt::Recorder replayed = rt::Recorder::load(path, spec->numExperts);
  if (temporary)
    std::filesystem::remove(path);
  rt::Recorder scratch(t, l, k, spec->numExperts);
  Random trainer(options.seed ^ 0x5eedull);
  std::printf("%5s  %23s  %23s  %14s\n", "layer", "fresh routing agrees",
              "replay agrees", "max |dweight|");
  int64_t freshTotal = 0, replayTotal = 0;
  for (int64_t layer = 0; layer < l; ++layer) {
    std::vector<uint8_t> logits = encodeLogits(
        stack.logits(layer, options.noise, trainer), spec->logits);
    Routed fresh =
        routeLayer(*backend, layer, logits, stack.biases[layer], scratch);
    Routed forced =
        replayLayer(*backend, layer, logits, replayed.layer(layer).forcedIds());
    int64_t freshAgree = agreeingTokens(fresh.ids, rollout[layer].ids, k);
    int64_t replayAgree = agreeingTokens(forced.ids, rollout[layer].ids, k);
    // Replay keeps the rollout's order of experts, so weights compare
    // position by position.
    float drift = 0;
    for (size_t i = 0; i < forced.weights.size(); ++i)
      drift = std::max(drift, std::fabs(forced.weights[i] -
                                        rollout[layer].weights[i]));
    freshTotal += freshAgree;
    replayTotal += replayAgree;
    std::printf("%5lld  %8lld/%-6lld %6.2f%%  %8lld/%-6lld %6.2f%%  %14.3g\n",
                static_cast<long long>(layer),
                static_cast<long long>(freshAgree), static_cast<long long>(t),
                percent(freshAgree, t), static_cast<long long>(replayAgree),
                static_cast<long long>(t), percent(replayAgree, t), drift);
  }
  std::printf("%5s  %8lld/%-6lld %6.2f%%  %8lld/%-6lld %6.2f%%\n", "all",
              static_cast<long long>(freshTotal),
              static_cast<long long>(t * l), percent(freshTotal, t * l),
              static_cast<long long>(replayTotal),
              static_cast<long long>(t * l), percent(replayTotal, t * l));
  if (replayTotal != t * l) {
    std::fprintf(stderr, "moegen-sample-capture-replay: replay chose other "
                         "experts than the rollout on %lld token-layers\n",
                 static_cast<long long>(t * l - replayTotal));
    return 1;
  }
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  Options options;
  CLI::App app{"Router replay on a DeepSeek-V3-like stack of routers with "
               "random weights: route and capture (rollout), then route "
               "afresh and replay the capture under perturbed logits "
               "(training), and print per layer how many tokens' expert "
               "sets agree with the rollout."};
#ifdef MOEGEN_SAMPLE_RUNTIME_ONLY
  app.add_option("--backend", options.backend, "cuda (GPU 0)")
      ->check(CLI::IsMember({"cuda"}))
      ->capture_default_str();
  app.add_option("--kernels", options.kernelsDir,
                 "a moegen compile --emit=cubin directory of a spec with "
                 "capture and replay")
      ->required();
#else
  app.add_option("--spec", options.specPath,
                 "routing spec with capture and replay")
      ->capture_default_str();
  app.add_option("--backend", options.backend, "cpu, or cuda (GPU 0)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  app.add_option("--kernels", options.kernelsDir,
                 "with --backend cuda: run this moegen compile --emit=cubin "
                 "directory (of the same spec) instead of the JIT's kernels");
#endif
  app.add_option("--layers", options.layers, "MoE layers")
      ->check(CLI::Range(int64_t{1}, int64_t{1024}))
      ->capture_default_str();
  app.add_option("--tokens", options.tokens, "tokens per layer")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20))
      ->capture_default_str();
  app.add_option("--hidden", options.hidden, "hidden size of the stack")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 14))
      ->capture_default_str();
  app.add_option("--noise", options.noise,
                 "standard deviation of the trainer's logit noise")
      ->check(CLI::Range(0.0, 100.0))
      ->capture_default_str();
  app.add_option("--seed", options.seed, "seed of the weights and noise")
      ->capture_default_str();
  app.add_option("--capture", options.capturePath,
                 "where to save the capture (.npy); default: a temporary "
                 "file, removed after loading");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError &e) {
    int code = app.exit(e);
    return code == 0 ? 0 : kExitBadInput;
  }
  try {
    return run(options);
  } catch (const rt::Error &e) {
    // A compiler failure is ours (exit 1); the rest is the input's or the
    // machine's (exit 2).
    int code = fail(e.what());
    return e.kind() == rt::Error::Kind::Compile ? 1 : code;
  } catch (const std::bad_alloc &) {
    return fail("out of memory for " + std::to_string(options.layers) +
                " layers x " + std::to_string(options.tokens) +
                " tokens x hidden " + std::to_string(options.hidden) +
                " (use smaller sizes)");
  } catch (const std::exception &e) {
    return fail(e.what());
  }
}
