//===- PermuteBench.cpp - Throughput of permute and combine ---------------===//
//
// moegen-bench-permute: the CPU backend's permute and combine kernels
// (spec `permute: true`) on a template's routing, per row type, token
// count and hidden size: microseconds (median of --reps samples after a
// warm-up; a sample repeats the call until it lasts a few milliseconds) and
// GB/s of rows moved (permute: T*k rows read and written; combine: T*k rows
// read, T rows written). Each call is checked bit for bit against the
// golden reference before it is timed.
//
// --out DIR also writes every case's inputs, outputs and timings
// (DIR/<case>/*.npy, DIR/timings.json) for tests/bench/permute_peers.py,
// which checks PyTorch's results against them and times PyTorch eager and
// torch.compile on the same inputs in the same run.
//
//===----------------------------------------------------------------------===//

#include "compiler/backend/cpu/CpuHostRouter.h"
#include "compiler/spec/SpecParser.h"
#include "runtime/npy/HalfFloat.h"
#include "runtime/npy/Npy.h"
#include "tests/golden/GoldenRouter.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

using namespace moegen;
using Clock = std::chrono::steady_clock;

namespace {

struct Options {
  std::string specPath =
      std::string(MOEGEN_SOURCE_DIR) + "/templates/deepseek-v3.yaml";
  std::vector<int64_t> tokens{64, 4096};
  std::vector<int64_t> hidden{2048, 7168};
  std::vector<std::string> dtypes{"f32", "bf16"};
  int reps = 9;
  double minSampleSeconds = 0.01;
  std::string out;
};

/// Median seconds per call of `call` over `reps` samples.
double timeCall(const Options &options, const std::function<void()> &call) {
  call(); // warm-up
  std::vector<double> samples;
  for (int r = 0; r < options.reps; ++r) {
    int64_t calls = 0;
    auto start = Clock::now();
    double elapsed = 0;
    do {
      call();
      ++calls;
      elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    } while (elapsed < options.minSampleSeconds);
    samples.push_back(elapsed / double(calls));
  }
  std::sort(samples.begin(), samples.end());
  return samples[samples.size() / 2];
}

std::vector<uint8_t> encode(const std::vector<float> &values,
                            LogitsDType dtype) {
  const size_t bytes = dtype == LogitsDType::F32 ? 4 : 2;
  std::vector<uint8_t> out(std::max<size_t>(1, values.size() * bytes));
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == LogitsDType::F32) {
      std::memcpy(&out[i * 4], &values[i], 4);
    } else {
      uint16_t bits = npy::floatToBf16(values[i]);
      std::memcpy(&out[i * 2], &bits, 2);
    }
  }
  return out;
}

std::vector<float> decode(const std::vector<uint8_t> &bytes, size_t count,
                          LogitsDType dtype) {
  std::vector<float> out(count);
  for (size_t i = 0; i < count; ++i) {
    if (dtype == LogitsDType::F32) {
      std::memcpy(&out[i], &bytes[i * 4], 4);
    } else {
      uint16_t bits;
      std::memcpy(&bits, &bytes[i * 2], 2);
      out[i] = npy::bf16ToFloat(bits);
    }
  }
  return out;
}

[[noreturn]] void fail(const std::string &message) {
  std::fprintf(stderr, "moegen-bench-permute: %s\n", message.c_str());
  std::exit(1);
}

/// Writes `data` as DIR/name.npy (bf16 as its uint16 bits).
void save(const std::filesystem::path &dir, const std::string &name,
          npy::DType dtype, std::vector<int64_t> shape, const void *data) {
  npy::Array array;
  array.dtype = dtype;
  array.shape = std::move(shape);
  array.data.resize(size_t(array.numElements()) * npy::itemSize(dtype));
  std::memcpy(array.data.data(), data, array.data.size());
  std::string error;
  if (!npy::writeNpy((dir / (name + ".npy")).string(), array, error))
    fail(error);
}

int run(const Options &options) {
  std::string error;
  std::optional<RoutingSpec> parsed =
      parseRoutingSpecFile(options.specPath, error);
  if (!parsed) {
    std::fprintf(stderr, "moegen-bench-permute: %s\n", error.c_str());
    return 2;
  }
  const int64_t maxTokens =
      *std::max_element(options.tokens.begin(), options.tokens.end());
  std::string timings = "[\n";
  std::printf("%-5s %6s %6s %12s %9s %12s %9s\n", "rows", "T", "H",
              "permute us", "GB/s", "combine us", "GB/s");
  for (const std::string &dtypeName : options.dtypes) {
    RoutingSpec spec = *parsed;
    spec.dispatch = spec.permute = true;
    spec.hiddenDType = *parseLogitsDType(dtypeName);
    auto compiled = cpu::CpuHostRouter::compile(spec, {});
    if (!compiled)
      fail(llvm::toString(compiled.takeError()));
    rt::HostRouter &router = **compiled;
    const int64_t e = spec.numExperts, k = spec.topK;
    const size_t bytes = dtypeName == "f32" ? 4 : 2;

    // Routing of the largest token count; smaller counts use its prefix,
    // re-dispatched (a prefix of the ids is a routing of its own).
    std::mt19937 rng(1);
    std::normal_distribution<float> normal(0.0f, 2.0f);
    std::vector<float> values(static_cast<size_t>(maxTokens * e));
    std::vector<float> bias(static_cast<size_t>(e));
    for (float &x : values)
      x = normal(rng);
    for (float &x : bias)
      x = 0.1f * normal(rng);
    // The logits in the spec's dtype (bf16 / f16 bit patterns).
    std::vector<uint8_t> logits;
    for (float x : values) {
      if (spec.logitsDType == LogitsDType::F32) {
        const auto *bytes = reinterpret_cast<const uint8_t *>(&x);
        logits.insert(logits.end(), bytes, bytes + 4);
        continue;
      }
      uint16_t bits = spec.logitsDType == LogitsDType::BF16
                          ? npy::floatToBf16(x)
                          : npy::floatToHalf(x);
      const auto *bytes = reinterpret_cast<const uint8_t *>(&bits);
      logits.insert(logits.end(), bytes, bytes + 2);
    }
    for (int64_t t : options.tokens) {
      std::vector<int32_t> ids(static_cast<size_t>(std::max<int64_t>(1, t * k)));
      std::vector<int32_t> counts(static_cast<size_t>(e));
      std::vector<int32_t> offsets(static_cast<size_t>(e + 1));
      std::vector<int32_t> sorted(ids.size()), positions(ids.size());
      std::vector<float> weights(ids.size());
      rt::HostRouteCall call;
      call.numTokens = t;
      call.logits = logits.data();
      if (spec.scoreBias)
        call.bias = bias.data();
      std::vector<uint8_t> capture;
      if (spec.capture) {
        capture.resize(size_t(std::max<int64_t>(1, t * k)) * 4);
        call.captureBuffer = capture.data();
        call.captureLayers = 1;
      }
      call.topkIds = ids.data();
      call.topkWeights = weights.data();
      call.expertCounts = counts.data();
      call.expertOffsets = offsets.data();
      call.sortedSlots = sorted.data();
      call.slotPositions = positions.data();
      if (std::string failed = router.run(call); !failed.empty())
        fail("routing: " + failed);

      for (int64_t h : options.hidden) {
        std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
        std::vector<float> rows(size_t(t * h)), outputs(size_t(t * k * h));
        for (float &x : rows)
          x = uniform(rng);
        for (float &x : outputs)
          x = uniform(rng);
        const LogitsDType dtype = spec.hiddenDType;
        std::vector<uint8_t> hiddenBytes = encode(rows, dtype);
        std::vector<uint8_t> outputBytes = encode(outputs, dtype);
        rows = decode(hiddenBytes, rows.size(), dtype);
        outputs = decode(outputBytes, outputs.size(), dtype);
        std::vector<uint8_t> permuted(size_t(std::max<int64_t>(1, t * k * h)) *
                                      bytes);
        std::vector<uint8_t> combined(size_t(std::max<int64_t>(1, t * h)) *
                                      bytes);
        rt::HostPermuteCall permute;
        permute.numTokens = t;
        permute.hiddenSize = h;
        permute.hidden = hiddenBytes.data();
        permute.sortedSlots = sorted.data();
        permute.permuted = permuted.data();
        rt::HostCombineCall combine;
        combine.numTokens = t;
        combine.hiddenSize = h;
        combine.topkWeights = weights.data();
        combine.slotPositions = positions.data();
        combine.expertOutput = outputBytes.data();
        combine.combined = combined.data();

        // Checked before timed.
        std::vector<float> want;
        if (std::string failed = router.permute(permute); !failed.empty())
          fail("permute: " + failed);
        golden::permute(t, k, h, rows, sorted, want);
        if (encode(want, dtype) != permuted)
          fail("permute differs from the golden reference");
        if (std::string failed = router.combine(combine); !failed.empty())
          fail("combine: " + failed);
        golden::combine(t, k, h, weights, positions, outputs, want);
        if (encode(want, dtype) != combined)
          fail("combine differs from the golden reference");

        const double permuteSeconds =
            timeCall(options, [&] { router.permute(permute); });
        const double combineSeconds =
            timeCall(options, [&] { router.combine(combine); });
        const double permuteBytes = 2.0 * double(t * k * h * int64_t(bytes));
        const double combineBytes =
            double((t * k + t) * h * int64_t(bytes)) + double(t * k * 8);
        std::printf("%-5s %6lld %6lld %12.1f %9.2f %12.1f %9.2f\n",
                    dtypeName.c_str(), static_cast<long long>(t),
                    static_cast<long long>(h), permuteSeconds * 1e6,
                    permuteBytes / permuteSeconds / 1e9, combineSeconds * 1e6,
                    combineBytes / combineSeconds / 1e9);
        std::fflush(stdout);

        if (!options.out.empty()) {
          const std::string name = dtypeName + "-t" + std::to_string(t) +
                                   "-h" + std::to_string(h);
          std::filesystem::path dir = std::filesystem::path(options.out) / name;
          std::filesystem::create_directories(dir);
          const npy::DType rowType =
              dtypeName == "f32" ? npy::DType::F32 : npy::DType::U16;
          save(dir, "hidden", rowType, {t, h}, hiddenBytes.data());
          save(dir, "sorted_slots", npy::DType::I32, {t * k}, sorted.data());
          save(dir, "slot_positions", npy::DType::I32, {t * k},
               positions.data());
          save(dir, "topk_weights", npy::DType::F32, {t, k}, weights.data());
          save(dir, "expert_output", rowType, {t * k, h}, outputBytes.data());
          save(dir, "permuted", rowType, {t * k, h}, permuted.data());
          save(dir, "combined", rowType, {t, h}, combined.data());
          char line[256];
          std::snprintf(line, sizeof line,
                        "%s  {\"case\": \"%s\", \"dtype\": \"%s\", \"tokens\": "
                        "%lld, \"hidden\": %lld, \"k\": %lld, \"permute_us\": "
                        "%.3f, \"combine_us\": %.3f}",
                        timings.size() > 2 ? ",\n" : "", name.c_str(),
                        dtypeName.c_str(), static_cast<long long>(t),
                        static_cast<long long>(h), static_cast<long long>(k),
                        permuteSeconds * 1e6, combineSeconds * 1e6);
          timings += line;
        }
      }
    }
  }
  if (!options.out.empty()) {
    std::ofstream json(std::filesystem::path(options.out) / "timings.json");
    json << timings << "\n]\n";
    if (!json)
      fail(options.out + "/timings.json: cannot write");
  }
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  Options options;
  CLI::App app{"moegen-bench-permute: the CPU backend's permute and combine "
               "kernels, checked against the golden reference, then timed"};
  app.add_option("--spec", options.specPath, "routing spec (a template)")
      ->check(CLI::ExistingFile);
  app.add_option("--tokens", options.tokens, "token counts")
      ->delimiter(',')
      ->check(CLI::Range(int64_t(0), int64_t(1) << 20));
  app.add_option("--hidden", options.hidden, "hidden sizes")
      ->delimiter(',')
      ->check(CLI::Range(int64_t(1), int64_t(1) << 16));
  app.add_option("--dtypes", options.dtypes, "row types (f32, bf16)")
      ->delimiter(',')
      ->check(CLI::IsMember({"f32", "bf16"}));
  app.add_option("--reps", options.reps, "samples per figure (median)")
      ->check(CLI::Range(1, 1000));
  app.add_option("--out", options.out,
                 "write inputs, outputs and timings here for "
                 "tests/bench/permute_peers.py");
  bool quick = false;
  app.add_flag("--quick", quick, "one small case (a smoke test)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError &e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (quick) {
    options.tokens = {16};
    options.hidden = {100};
    options.reps = 1;
    options.minSampleSeconds = 0;
  }
  return run(options);
}
