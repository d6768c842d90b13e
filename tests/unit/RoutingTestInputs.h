//===- RoutingTestInputs.h - Seeded inputs for backend differential tests -===//
//
// Random logits (in the spec's dtype), bias, token ids, a hash table and
// forced ids for T tokens, the same for a given seed on every backend the
// differential tests compare (GpuBackendTest, GpuEmuBackendTest).
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_TESTS_UNIT_ROUTINGTESTINPUTS_H
#define MOEGEN_TESTS_UNIT_ROUTINGTESTINPUTS_H

#include "compiler/spec/RoutingSpec.h"
#include "runtime/npy/HalfFloat.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

namespace moegen::routingtest {

struct Inputs {
  int64_t tokens = 0;
  std::vector<uint8_t> logits; // raw bytes in the spec's dtype
  std::vector<float> bias;
  std::vector<int32_t> tokenIds, hashTable, forcedIds;
  int64_t vocab = 0;
  /// [T, 1] shared gate logits, raw bytes in the spec's dtype.
  std::vector<uint8_t> sharedGateLogits;
};

inline Inputs makeInputs(const RoutingSpec &spec, int64_t tokens,
                         uint32_t seed) {
  Inputs in;
  in.tokens = tokens;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  const int64_t e = spec.numExperts, k = spec.topK;
  const size_t elementBytes = spec.logitsDType == LogitsDType::F32 ? 4 : 2;
  auto encode = [&](std::vector<uint8_t> &bytes, int64_t i, float x) {
    if (spec.logitsDType == LogitsDType::F32) {
      std::memcpy(&bytes[i * 4], &x, 4);
    } else {
      uint16_t bits = spec.logitsDType == LogitsDType::BF16
                          ? npy::floatToBf16(x)
                          : npy::floatToHalf(x);
      std::memcpy(&bytes[i * 2], &bits, 2);
    }
  };
  in.logits.resize(std::max<size_t>(1, tokens * e * elementBytes));
  for (int64_t i = 0; i < tokens * e; ++i)
    encode(in.logits, i, normal(rng));
  in.bias.resize(e);
  for (float &b : in.bias)
    b = 0.1f * normal(rng);
  in.vocab = 97;
  for (int64_t t = 0; t < tokens; ++t)
    in.tokenIds.push_back(static_cast<int32_t>(rng() % in.vocab));
  std::vector<int32_t> experts(e);
  for (int64_t row = 0; row < in.vocab; ++row) {
    std::iota(experts.begin(), experts.end(), 0);
    std::shuffle(experts.begin(), experts.end(), rng);
    in.hashTable.insert(in.hashTable.end(), experts.begin(),
                        experts.begin() + k);
  }
  for (int64_t t = 0; t < tokens; ++t) {
    std::iota(experts.begin(), experts.end(), 0);
    std::shuffle(experts.begin(), experts.end(), rng);
    in.forcedIds.insert(in.forcedIds.end(), experts.begin(),
                        experts.begin() + k);
  }
  // Drawn last, so that the other inputs of a seed stay as they were.
  in.sharedGateLogits.resize(std::max<size_t>(1, tokens * elementBytes));
  for (int64_t t = 0; t < tokens; ++t)
    encode(in.sharedGateLogits, t, 2.0f * normal(rng));
  return in;
}

} // namespace moegen::routingtest

#endif // MOEGEN_TESTS_UNIT_ROUTINGTESTINPUTS_H
