//===- BenchInputs.h - Seeded routing calls for bench and autotune -*- C++ -*-===//
//
// The inputs `moegen bench` and `moegen autotune` time: seeded logits in the
// spec's dtype (normal, sigma 2), a bias, a hash table and token ids, a
// one-layer capture buffer, as the spec's facts ask, and the buffers the
// call writes; with the bytes such a call must move. Also the clock and the
// machine's name both commands record.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_COMPILER_TOOLS_MOEGEN_BENCHINPUTS_H
#define MOEGEN_COMPILER_TOOLS_MOEGEN_BENCHINPUTS_H

#include "compiler/tune/TuningDb.h"
#include "runtime/HostRouter.h"
#include "runtime/npy/HalfFloat.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <numeric>
#include <random>
#include <string>
#include <vector>

namespace moegen::tool {

using Clock = std::chrono::steady_clock;

inline double secondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

/// Seeded inputs for T tokens and the buffers the call writes.
struct BenchCall {
  std::vector<uint8_t> logits, sharedGateLogits;
  std::vector<float> bias, sharedGate;
  std::vector<int32_t> tokenIds, hashTable;
  std::vector<int16_t> capture16;
  std::vector<int32_t> capture32;
  std::vector<int32_t> ids, counts, offsets, sortedSlots, slotPositions;
  std::vector<float> weights;
  rt::HostRouteCall call;
  double bytes = 0;
};

/// The most input and output memory one benchmark call may take; larger
/// token counts are refused before anything is allocated.
inline constexpr double kMaxCallBytes = 8.0 * (1ull << 30);

/// The bytes makeCall would allocate for T tokens (inputs and outputs),
/// for the check against kMaxCallBytes.
inline double callBytes(const rt::RouterFacts &facts, int64_t tokens) {
  const double t = double(tokens), e = double(facts.numExperts),
               k = double(facts.topK);
  return t * e * double(facts.logitBytes()) + t * k * 4 * 8 + 4096 * k * 4 +
         (facts.sharedGate ? t * double(facts.logitBytes() + 4) : 0.0);
}

inline void makeCall(const rt::RouterFacts &facts, int64_t tokens, bool dispatch,
              BenchCall &c) {
  const int64_t e = facts.numExperts, k = facts.topK;
  std::mt19937 rng(uint32_t(tokens) * 2654435761u + uint32_t(e));
  std::normal_distribution<float> normal(0.0f, 2.0f);
  const size_t logitBytes = facts.logitBytes();
  // `count` normal values in the logits' type (bf16 / f16 as their bits).
  auto fillLogits = [&](std::vector<uint8_t> &bytes, int64_t count) {
    bytes.resize(std::max<size_t>(1, count * logitBytes));
    for (int64_t i = 0; i < count; ++i) {
      float x = normal(rng);
      if (logitBytes == 4) {
        std::memcpy(&bytes[i * 4], &x, 4);
      } else {
        uint16_t bits = facts.logits == rt::RouterFacts::Logits::BF16
                            ? npy::floatToBf16(x)
                            : npy::floatToHalf(x);
        std::memcpy(&bytes[i * 2], &bits, 2);
      }
    }
  };
  fillLogits(c.logits, tokens * e);
  c.call = {};
  c.call.numTokens = tokens;
  c.call.logits = c.logits.data();
  c.bytes = double(tokens * e * logitBytes);
  if (facts.scoreBias) {
    c.bias.resize(e);
    for (float &b : c.bias)
      b = 0.01f * normal(rng);
    c.call.bias = c.bias.data();
    c.bytes += double(e * 4);
  }
  if (facts.hashSelection) {
    const int64_t vocab = 4096;
    std::vector<int32_t> experts(e);
    for (int64_t row = 0; row < vocab; ++row) {
      std::iota(experts.begin(), experts.end(), 0);
      std::shuffle(experts.begin(), experts.end(), rng);
      c.hashTable.insert(c.hashTable.end(), experts.begin(), experts.begin() + k);
    }
    c.tokenIds.resize(std::max<int64_t>(1, tokens));
    for (int32_t &id : c.tokenIds)
      id = int32_t(rng() % vocab);
    c.call.tokenIds = c.tokenIds.data();
    c.call.hashTable = c.hashTable.data();
    c.call.hashVocab = vocab;
    c.bytes += double(tokens * 4 + tokens * k * 4);
  }
  if (facts.capture) {
    // One layer, as an engine capturing one layer per call would.
    c.call.captureLayers = 1;
    if (facts.captureElementBytes() == 2) {
      c.capture16.assign(std::max<int64_t>(1, tokens * k), 0);
      c.call.captureBuffer = c.capture16.data();
    } else {
      c.capture32.assign(std::max<int64_t>(1, tokens * k), 0);
      c.call.captureBuffer = c.capture32.data();
    }
    c.bytes += double(tokens * k * facts.captureElementBytes());
  }
  if (facts.sharedGate) {
    // The shared expert's gate logits: one per token, of the logits' type.
    fillLogits(c.sharedGateLogits, tokens);
    c.sharedGate.resize(std::max<int64_t>(1, tokens));
    c.call.sharedGateLogits = c.sharedGateLogits.data();
    c.call.sharedGate = c.sharedGate.data();
    c.bytes += double(tokens * (logitBytes + 4));
  }
  c.ids.resize(std::max<int64_t>(1, tokens * k));
  c.weights.resize(std::max<int64_t>(1, tokens * k));
  c.call.topkIds = c.ids.data();
  c.call.topkWeights = c.weights.data();
  c.bytes += double(tokens * k * 8);
  if (dispatch) {
    c.counts.resize(e);
    c.offsets.resize(e + 1);
    c.sortedSlots.resize(std::max<int64_t>(1, tokens * k));
    c.slotPositions.resize(std::max<int64_t>(1, tokens * k));
    c.call.expertCounts = c.counts.data();
    c.call.expertOffsets = c.offsets.data();
    c.call.sortedSlots = c.sortedSlots.data();
    c.call.slotPositions = c.slotPositions.data();
    // Dispatch reads the ids again and writes its four arrays.
    c.bytes += double(tokens * k * 4 + (2 * e + 1) * 4 + 2 * tokens * k * 4);
  }
}

/// "" when the outputs of `got` equal those of `want` (ids exactly, weights
/// within `relative` or 1e-9 absolute), else the first difference: the
/// autotuner's check of a candidate against the default configuration.
inline std::string compareOutputs(const BenchCall &got, const BenchCall &want,
                                  int64_t count, double relative) {
  for (int64_t i = 0; i < count; ++i) {
    if (got.ids[i] != want.ids[i])
      return "slot " + std::to_string(i) + ": expert " +
             std::to_string(got.ids[i]) + ", the default has " +
             std::to_string(want.ids[i]);
    const double a = got.weights[i], b = want.weights[i];
    if (!(std::fabs(a - b) <= relative * std::fabs(b) + 1e-9))
      return "slot " + std::to_string(i) + ": weight " + std::to_string(a) +
             ", the default has " + std::to_string(b);
  }
  return "";
}

/// The CPU's model name from /proc/cpuinfo, or "unknown".
using tune::cpuModel;

/// Seconds per call: the median and the 10th and 90th percentiles.
struct Timing {
  double median = 0, p10 = 0, p90 = 0;
  int64_t callsPerSample = 0;
};

/// The p-th percentile of sorted `values` (nearest rank).
inline double percentile(const std::vector<double> &values, double p) {
  size_t index = size_t(std::lround(p * double(values.size() - 1)));
  return values[std::min(index, values.size() - 1)];
}

} // namespace moegen::tool

#endif // MOEGEN_COMPILER_TOOLS_MOEGEN_BENCHINPUTS_H
