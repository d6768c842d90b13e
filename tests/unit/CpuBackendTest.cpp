//===- CpuBackendTest.cpp - CPU backend vs the golden reference -*- C++ -*-===//
//
// Differential tests of the CPU backend (fp32, JIT-compiled, multithreaded)
// against the golden reference (double, single-threaded): every template,
// seeded random specs over the whole spec language, adversarial logits, and
// every input error the contract (docs/semantics.md §2) names.
//
// Comparison rule (docs/semantics.md §1), applied per token:
//
//  * Hash and forced (replay) selection: ids equal the golden ids exactly.
//  * Top-k selection: the ids equal the golden ids, except where fp32 may see
//    a different order than double. At a position j where the backend's id a
//    differs from the reference id b, the golden selection keys (scores +
//    bias, in double) must satisfy |c_a - c_b| <= err(a) + err(b), where
//    err(e) bounds how far the backend's fp32 key of e may lie from c_e:
//
//      err(e) = 8 * FLT_EPSILON * (|s_e| * (1 + |d_e|) + |b_e|)
//             + 1e-5 * |s_e|                  (softmax with score_bias only)
//             + floor,   floor = 1e-37
//
//    - 8 ulps (FLT_EPSILON = 1 ulp at 1.0) covers a chain of about four
//      correctly-rounded-or-nearly steps (exp / log1p / sqrt or the division,
//      then the bias addition), each within ~2 ulp in a vectorized
//      polynomial implementation. It is relative to |s| + |b|, not to the
//      key, because s + b can cancel.
//    - (1 + |d_e|), d_e = l_e - max(l) for softmax (0 otherwise): the
//      backend rounds l_e - max(l) to fp32 before exp, an absolute argument
//      error of |d| * 2^-24 that exp turns into that relative error.
//    - 1e-5 * |s_e| for softmax with a bias: a rounding error of the softmax
//      denominator scales every score alike (so it keeps their order unless
//      a bias is added); the contract allows scores to be off by 1e-5
//      relative (the weight rule), so keys may move by that much.
//    - floor: 1e-37 (about 8 * FLT_MIN): scores below FLT_MIN may be
//      denormal or flushed to zero in fp32, so they are only known to about
//      FLT_MIN. (sqrtsoftplus is no exception: the backend evaluates
//      e^(l/2) where softplus(l) itself would underflow, so its scores stay
//      normal floats down to l = -174.)
//    Exactly equal golden keys are NOT a near-tie: equal logits with equal
//    bias give equal keys on every backend, so the lower expert index must
//    win there (checked separately on the backend's own ids).
//  * Grouped top-k: group scores (computed with the golden helpers) may also
//    swap at a near-tie, with err(group) = used * max_{e in group} err(e) +
//    FLT_EPSILON * |gs| (used = 2 for top2_sum, 1 for max: an order
//    statistic moves at most by the largest perturbation of its members).
//    The backend's kept groups are reconstructed from its ids (filled up
//    with the golden's best groups that do not contradict its ids: a group
//    with an expert beating a selected one, by more than rounding or on an
//    equal key with a lower index, cannot have been kept without being
//    selected from); every kept group must beat every
//    dropped one up to that tolerance (and to the lower-index rule where
//    two groups' top keys are identical), and the ids are then compared as
//    above with the top-k of the golden keys restricted to those groups.
//  * Weights: 1e-5 relative, plus an absolute floor of 1e-30 for
//    denormal-sized weights and scale * floor for the scores' own floor;
//    with normalize, scale * k * floor / (sum + 1e-20) instead, since the
//    normalizer divides the selected scores' error. When a near-tie
//    permuted or swapped ids, the expected weights are recomputed from the
//    golden scores of the backend's own ids (compared per id).
//  * Dispatch outputs equal golden::computeDispatch of the backend's own ids;
//    capture holds the backend's ids at the layer, other layers untouched.
//  * Every output buffer has guard zones before and after it that must stay
//    untouched, and starts filled with poison (ids -999, weights NaN).
//
// Headroom, measured on the first CPU backend (MLIR polynomial exp/log1p,
// AVX2) over 60 seeds of the random and adversarial suites (2820 specs):
// near-tie swaps used at most 13% of err(a) + err(b), weight errors at most
// 40% of their tolerance; about 3% of tokens differ from the golden ids by
// a near-tie, and none otherwise.
//
//===----------------------------------------------------------------------===//

#include "compiler/backend/cpu/CpuRouter.h"
#include "compiler/spec/Program.h"
#include "compiler/spec/RoutingSpec.h"
#include "compiler/spec/SpecParser.h"
#include "runtime/npy/HalfFloat.h"
#include "tests/golden/GoldenRouter.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

using namespace moegen;
using moegen::cpu::CpuCompileOptions;
using moegen::cpu::CpuRouter;
using moegen::cpu::RouterCall;

namespace {

/// CpuRouter::compile with its error as text; null on failure.
std::unique_ptr<CpuRouter> compileRouter(const RoutingSpec &spec,
                                         const CpuCompileOptions &options,
                                         std::string &error) {
  llvm::Expected<std::unique_ptr<CpuRouter>> compiled =
      CpuRouter::compile(spec, options);
  if (!compiled) {
    error = llvm::toString(compiled.takeError());
    return nullptr;
  }
  return std::move(*compiled);
}

const float kNegInf = -std::numeric_limits<float>::infinity();
const float kPosInf = std::numeric_limits<float>::infinity();
const float kNaN = std::numeric_limits<float>::quiet_NaN();

// The tolerances of the comparison rule above.
constexpr double kKeyUlps = 8.0;
constexpr double kSoftmaxSumRel = 1e-5;
constexpr double kFlushFloor = 1e-37;
constexpr double kWeightRel = 1e-5;
constexpr double kWeightAbs = 1e-30;

//===----------------------------------------------------------------------===//
// Deterministic randomness (splitmix64; no std distributions, whose output
// differs between standard libraries)
//===----------------------------------------------------------------------===//

class Rng {
public:
  explicit Rng(uint64_t seed) : state(seed) {}
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  /// Uniform in [lo, hi] (inclusive).
  int64_t uniformInt(int64_t lo, int64_t hi) {
    return lo + static_cast<int64_t>(next() % static_cast<uint64_t>(hi - lo + 1));
  }
  double uniform01() { return (next() >> 11) * 0x1.0p-53; }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform01(); }
  bool chance(double p) { return uniform01() < p; }
  /// Standard normal (Box-Muller).
  double normal() {
    double u1 = std::max(uniform01(), 1e-300);
    double u2 = uniform01();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
  template <typename T> const T &pick(const std::vector<T> &values) {
    return values[next() % values.size()];
  }
  /// k distinct values of [0, n), in random order.
  std::vector<int32_t> distinct(int64_t n, int64_t k) {
    std::vector<int32_t> all(n);
    for (int64_t i = 0; i < n; ++i)
      all[i] = static_cast<int32_t>(i);
    for (int64_t i = 0; i < k; ++i)
      std::swap(all[i], all[uniformInt(i, n - 1)]);
    all.resize(k);
    return all;
  }

private:
  uint64_t state;
};

//===----------------------------------------------------------------------===//
// Inputs
//===----------------------------------------------------------------------===//

enum class LogitsStyle { Random, Adversarial };

/// The runtime inputs of one call, in the backend's layout (int32 ids) and
/// the golden reference's (float logits).
struct Inputs {
  int64_t numTokens = 0;
  /// [T, E] as the golden reference reads them: the exact fp32 values of the
  /// bf16 / f16 logits when the spec's dtype is 16-bit.
  std::vector<float> logits;
  /// [T, E] raw bf16 / f16 bits (empty for f32).
  std::vector<uint16_t> logits16;
  std::vector<float> bias;         ///< [E]
  std::vector<int32_t> tokenIds;   ///< [T]
  std::vector<int32_t> hashTable;  ///< [vocab, k]
  int64_t hashVocab = 0;
  std::vector<int32_t> forcedIds;  ///< [T, k]
  /// [T, 1] shared gate logits, float values of the spec's dtype (rounded
  /// like the logits), and their raw 16-bit patterns (empty for f32).
  std::vector<float> sharedGateLogits;
  std::vector<uint16_t> sharedGateLogits16;

  const void *logitsPointer() const {
    return logits16.empty() ? static_cast<const void *>(logits.data())
                            : static_cast<const void *>(logits16.data());
  }
};

/// A logit the spec's dtype can hold: f16 tops out at 65504, so larger
/// finite magnitudes are clamped (they would round to +-inf).
float fitToDType(float value, LogitsDType dtype) {
  if (dtype == LogitsDType::F16 && std::isfinite(value))
    return std::clamp(value, -65504.0f, 65504.0f);
  return value;
}

/// Rounds `in.logits` to the spec's dtype: fills the raw bits and replaces
/// each logit by the exact float value of those bits.
void encodeLogits(LogitsDType dtype, Inputs &in) {
  in.logits16.clear();
  if (dtype == LogitsDType::F32)
    return;
  in.logits16.resize(in.logits.size());
  for (size_t i = 0; i < in.logits.size(); ++i) {
    const float value = fitToDType(in.logits[i], dtype);
    if (dtype == LogitsDType::BF16) {
      in.logits16[i] = npy::floatToBf16(value);
      in.logits[i] = npy::bf16ToFloat(in.logits16[i]);
    } else {
      in.logits16[i] = npy::floatToHalf(value);
      in.logits[i] = npy::halfToFloat(in.logits16[i]);
    }
  }
}

/// One token's random logits: mostly Gaussian, sometimes small integers
/// (exact ties), some -inf entries, or a wide range (sigmoid saturates to
/// 1.0f, softmax and sigmoid underflow: near-ties in fp32).
void randomRow(Rng &rng, float *row, int64_t e) {
  const double regime = rng.uniform01();
  if (regime < 0.6) {
    const double sigma = rng.chance(0.5) ? 1.0 : 3.0;
    for (int64_t x = 0; x < e; ++x)
      row[x] = static_cast<float>(sigma * rng.normal());
  } else if (regime < 0.75) {
    for (int64_t x = 0; x < e; ++x)
      row[x] = static_cast<float>(rng.uniformInt(-3, 3));
  } else if (regime < 0.9) {
    for (int64_t x = 0; x < e; ++x)
      row[x] = rng.chance(0.3) ? kNegInf : static_cast<float>(rng.normal());
  } else {
    for (int64_t x = 0; x < e; ++x)
      row[x] = static_cast<float>(30.0 * rng.normal());
  }
}

/// One token's adversarial logits; `kind` cycles through the cases.
void adversarialRow(Rng &rng, float *row, int64_t e, int64_t k, int kind) {
  static const std::vector<float> kHuge = {1e30f, -1e30f, 3e38f, -3e38f,
                                           0.0f,  1.0f,   -1.0f};
  static const std::vector<float> kTiny = {1e-40f, -1e-40f, 1.4e-45f, 0.0f,
                                           -0.0f,  1e-38f,  3e-6f,   6e-8f};
  static const std::vector<float> kMixed = {
      kNegInf, -3e38f, -1e30f, -100.0f, -1e-40f, 0.0f, 1e-40f,
      1.0f,    100.0f, 1e30f,  3e38f,   -30.0f,  30.0f};
  static const std::vector<float> kEqual = {0.0f,   1.0f,    -5.0f, 1e-40f,
                                            -1e30f, 3e38f,   40.0f, -100.0f};
  static const std::vector<float> kFew = {-1.0f, 0.0f, 0.5f, 2.0f};
  switch (kind % 11) {
  case 0: // All equal.
    std::fill(row, row + e, rng.pick(kEqual));
    break;
  case 1: // Exact ties among a few values.
    for (int64_t x = 0; x < e; ++x)
      row[x] = rng.pick(kFew);
    break;
  case 2: // Huge magnitudes.
    for (int64_t x = 0; x < e; ++x)
      row[x] = rng.pick(kHuge);
    break;
  case 3: // Denormals and signed zeros.
    for (int64_t x = 0; x < e; ++x)
      row[x] = rng.pick(kTiny);
    break;
  case 4: // Half the experts masked out.
    for (int64_t x = 0; x < e; ++x)
      row[x] = rng.chance(0.5) ? kNegInf : static_cast<float>(rng.normal());
    break;
  case 5: // The whole row masked out.
    std::fill(row, row + e, kNegInf);
    break;
  case 6: // One expert available.
    std::fill(row, row + e, kNegInf);
    row[rng.uniformInt(0, e - 1)] = static_cast<float>(rng.normal());
    break;
  case 7: // Fewer available experts than k: the rest tie at score 0.
    std::fill(row, row + e, kNegInf);
    for (int32_t x : rng.distinct(e, std::max<int64_t>(1, k / 2)))
      row[x] = static_cast<float>(rng.normal());
    break;
  case 8: // Everything at once.
    for (int64_t x = 0; x < e; ++x)
      row[x] = rng.pick(kMixed);
    break;
  case 9: // Sigmoid saturation: many scores round to 1.0f.
    for (int64_t x = 0; x < e; ++x)
      row[x] = static_cast<float>(30.0 + 10.0 * rng.normal());
    break;
  default: // Deep underflow of sigmoid and softmax tails.
    for (int64_t x = 0; x < e; ++x)
      row[x] = static_cast<float>(-120.0 + 20.0 * rng.normal());
    break;
  }
}

/// Random inputs for every entry point of `spec`.
Inputs makeInputs(const RoutingSpec &spec, int64_t numTokens, uint64_t seed,
                  LogitsStyle style) {
  Rng rng(seed);
  const int64_t e = spec.numExperts;
  const int64_t k = spec.topK;
  Inputs in;
  in.numTokens = numTokens;
  in.logits.resize(numTokens * e);
  for (int64_t t = 0; t < numTokens; ++t) {
    float *row = in.logits.data() + t * e;
    if (style == LogitsStyle::Random)
      randomRow(rng, row, e);
    else
      adversarialRow(rng, row, e, k, static_cast<int>(t));
  }
  encodeLogits(spec.logitsDType, in);

  // The bias is of the order of the scores, so that it changes selections;
  // sometimes quantized, so that equal keys (exact ties) stay frequent.
  const double scale = spec.scoring == Scoring::Softmax ? 1.0 / e
                       : spec.scoring == Scoring::Sigmoid ? 0.05
                                                          : 0.2;
  const bool quantized = style == LogitsStyle::Adversarial || rng.chance(0.3);
  in.bias.resize(e);
  for (float &b : in.bias)
    b = static_cast<float>(
        quantized ? scale * static_cast<double>(rng.uniformInt(-1, 1))
                  : scale * rng.uniform(-1.0, 1.0));

  in.hashVocab = std::max<int64_t>(8, rng.uniformInt(numTokens / 2 + 1,
                                                     2 * numTokens + 1));
  in.hashTable.reserve(in.hashVocab * k);
  for (int64_t row = 0; row < in.hashVocab; ++row)
    for (int32_t id : rng.distinct(e, k))
      in.hashTable.push_back(id);
  in.tokenIds.resize(numTokens);
  for (int32_t &id : in.tokenIds)
    id = static_cast<int32_t>(rng.uniformInt(0, in.hashVocab - 1));

  in.forcedIds.reserve(numTokens * k);
  for (int64_t t = 0; t < numTokens; ++t)
    for (int32_t id : rng.distinct(e, k))
      in.forcedIds.push_back(id);

  // Shared gate logits: mostly moderate, some saturating, some -inf (a
  // gate of exactly 0).
  in.sharedGateLogits.resize(numTokens);
  for (float &x : in.sharedGateLogits)
    x = rng.chance(0.05)   ? -std::numeric_limits<float>::infinity()
        : rng.chance(0.1) ? static_cast<float>(rng.uniform(-120.0, 120.0))
                          : static_cast<float>(rng.uniform(-6.0, 6.0));
  Inputs gate;
  gate.logits = in.sharedGateLogits;
  encodeLogits(spec.logitsDType, gate);
  in.sharedGateLogits = gate.logits;
  in.sharedGateLogits16 = gate.logits16;
  return in;
}

//===----------------------------------------------------------------------===//
// Running the backend and the golden reference
//===----------------------------------------------------------------------===//

/// An output buffer with guard zones on both sides, to catch writes outside
/// the tensor the backend was given.
template <typename T> class Guarded {
public:
  static constexpr size_t kGuard = 16;
  Guarded(size_t size, T poison, T guard)
      : size(size), guard(guard), storage(size + 2 * kGuard, guard) {
    std::fill(storage.begin() + kGuard, storage.begin() + kGuard + size,
              poison);
  }
  T *data() { return storage.data() + kGuard; }
  std::vector<T> body() const {
    return std::vector<T>(storage.begin() + kGuard,
                          storage.begin() + kGuard + size);
  }
  bool guardsIntact() const {
    for (size_t i = 0; i < kGuard; ++i)
      if (std::memcmp(&storage[i], &guard, sizeof(T)) != 0 ||
          std::memcmp(&storage[kGuard + size + i], &guard, sizeof(T)) != 0)
        return false;
    return true;
  }

private:
  size_t size;
  T guard;
  std::vector<T> storage;
};

constexpr int32_t kPoisonId = -999;
constexpr int32_t kGuardId = 0x5A5A5A5A;
constexpr int16_t kCaptureSentinel = -12345;

struct CaptureRequest {
  int64_t layers = 3;
  int64_t layer = 1;
};

struct CpuResult {
  std::string error;
  std::vector<int32_t> ids;
  std::vector<float> weights;
  std::vector<int32_t> counts, offsets, sortedSlots, slotPositions;
  std::vector<int16_t> capture; ///< [T, layers, k]
  std::vector<float> sharedGate; ///< [T, 1] with shared_expert_gate
  /// Names of the outputs whose guard zones were written.
  std::string clobbered;
};

enum class Entry { Route, Replay };

/// Runs one call of the backend. Route passes the bias / hash inputs the
/// spec needs; replay passes the forced ids and nothing else.
CpuResult runCpu(CpuRouter &router, const RoutingSpec &spec, const Inputs &in,
                 Entry entry, bool withDispatch,
                 std::optional<CaptureRequest> capture = std::nullopt) {
  const int64_t numTokens = in.numTokens;
  const int64_t e = spec.numExperts;
  const int64_t slots = numTokens * spec.topK;
  Guarded<int32_t> ids(slots, kPoisonId, kGuardId);
  Guarded<float> weights(slots, kNaN, -7.0f);
  Guarded<int32_t> counts(e, kPoisonId, kGuardId);
  Guarded<int32_t> offsets(e + 1, kPoisonId, kGuardId);
  Guarded<int32_t> sorted(slots, kPoisonId, kGuardId);
  Guarded<int32_t> positions(slots, kPoisonId, kGuardId);
  const int64_t captureSize =
      capture ? numTokens * capture->layers * spec.topK : 0;
  Guarded<int16_t> captureBuffer(captureSize, kCaptureSentinel, 0x5A5A);
  Guarded<float> sharedGate(spec.sharedGate ? numTokens : 0, kNaN, -7.0f);

  RouterCall call;
  call.numTokens = numTokens;
  call.logits = in.logitsPointer();
  if (spec.sharedGate) {
    call.sharedGateLogits =
        in.sharedGateLogits16.empty()
            ? static_cast<const void *>(in.sharedGateLogits.data())
            : static_cast<const void *>(in.sharedGateLogits16.data());
    call.sharedGate = sharedGate.data();
  }
  if (entry == Entry::Replay) {
    call.forcedIds = in.forcedIds.data();
  } else {
    if (spec.scoreBias)
      call.bias = in.bias.data();
    if (spec.selection == Selection::Hash) {
      call.tokenIds = in.tokenIds.data();
      call.hashTable = in.hashTable.data();
      call.hashVocab = in.hashVocab;
    }
    if (capture) {
      call.captureBuffer = captureBuffer.data();
      call.captureLayers = capture->layers;
      call.captureLayer = capture->layer;
    }
  }
  call.topkIds = ids.data();
  call.topkWeights = weights.data();
  if (withDispatch) {
    call.expertCounts = counts.data();
    call.expertOffsets = offsets.data();
    call.sortedSlots = sorted.data();
    call.slotPositions = positions.data();
  }

  CpuResult result;
  result.error = router.run(call);
  result.ids = ids.body();
  result.weights = weights.body();
  if (withDispatch) {
    result.counts = counts.body();
    result.offsets = offsets.body();
    result.sortedSlots = sorted.body();
    result.slotPositions = positions.body();
  }
  if (capture)
    result.capture = captureBuffer.body();
  result.sharedGate = sharedGate.body();
  const std::pair<const char *, bool> guards[] = {
      {"shared_gate", sharedGate.guardsIntact()},
      {"topk_ids", ids.guardsIntact()},
      {"topk_weights", weights.guardsIntact()},
      {"expert_counts", counts.guardsIntact()},
      {"expert_offsets", offsets.guardsIntact()},
      {"sorted_slots", sorted.guardsIntact()},
      {"slot_positions", positions.guardsIntact()},
      {"capture_buffer", captureBuffer.guardsIntact()}};
  for (const auto &[name, intact] : guards)
    if (!intact)
      result.clobbered += std::string(result.clobbered.empty() ? "" : ", ") +
                          name;
  return result;
}

golden::RouterResult runGolden(const RoutingSpec &spec, const Inputs &in,
                               Entry entry) {
  golden::RouterInputs g;
  g.numTokens = in.numTokens;
  g.logits = in.logits.data();
  if (spec.sharedGate)
    g.sharedGateLogits = in.sharedGateLogits.data();
  std::vector<int64_t> tokenIds(in.tokenIds.begin(), in.tokenIds.end());
  std::vector<int64_t> forcedIds(in.forcedIds.begin(), in.forcedIds.end());
  if (entry == Entry::Replay) {
    g.forcedIds = forcedIds.data();
  } else {
    if (spec.scoreBias)
      g.bias = in.bias.data();
    if (spec.selection == Selection::Hash) {
      g.tokenIds = tokenIds.data();
      g.hashTable = in.hashTable.data();
      g.hashVocab = in.hashVocab;
    }
  }
  return golden::route(spec, g);
}

//===----------------------------------------------------------------------===//
// The comparison rule
//===----------------------------------------------------------------------===//

std::string formatIds(const int32_t *ids, int64_t k) {
  std::ostringstream os;
  os << "[";
  for (int64_t j = 0; j < k; ++j)
    os << (j ? ", " : "") << ids[j];
  os << "]";
  return os.str();
}

std::string formatDouble(double value) {
  std::ostringstream os;
  os.precision(17);
  os << value;
  return os.str();
}

/// How well an fp32 evaluation knows a score near zero (see the top).
double scoreFloor(const RoutingSpec &) {
  return kFlushFloor;
}

/// What the golden reference knows about one token, with the fp32 error
/// bound of each selection key.
struct TokenAnalysis {
  std::vector<double> scores, keys, errs;
};

TokenAnalysis analyzeToken(const RoutingSpec &spec, const Inputs &in,
                           int64_t t, bool withBias) {
  const int64_t e = spec.numExperts;
  const float *logits = in.logits.data() + t * e;
  TokenAnalysis a;
  a.scores = golden::scoreToken(spec, logits);
  a.keys = golden::selectionKeys(a.scores, withBias ? in.bias.data() : nullptr);
  double maxLogit = -std::numeric_limits<double>::infinity();
  for (int64_t x = 0; x < e; ++x)
    maxLogit = std::max(maxLogit, static_cast<double>(logits[x]));
  a.errs.resize(e);
  for (int64_t x = 0; x < e; ++x) {
    const double s = std::fabs(a.scores[x]);
    const double b = withBias ? std::fabs(static_cast<double>(in.bias[x])) : 0;
    double d = 0;
    if (spec.scoring == Scoring::Softmax && s > 0 && std::isfinite(maxLogit))
      d = std::fabs(static_cast<double>(logits[x]) - maxLogit);
    double err = kKeyUlps * FLT_EPSILON * (s * (1.0 + d) + b) + scoreFloor(spec);
    if (spec.scoring == Scoring::Softmax && withBias)
      err += kSoftmaxSumRel * s;
    a.errs[x] = err;
  }
  return a;
}

/// Checks one token's top-k ids against the golden ones under the rule at the
/// top of this file. Returns why they are unacceptable, or nullopt.
std::optional<std::string> checkTopKToken(const RoutingSpec &spec,
                                          const Inputs &in, int64_t t,
                                          const int32_t *cpu,
                                          const int32_t *gold) {
  const int64_t k = spec.topK;
  const int64_t e = spec.numExperts;
  if (std::equal(cpu, cpu + k, gold))
    return std::nullopt;

  const TokenAnalysis a = analyzeToken(spec, in, t, spec.scoreBias);
  std::ostringstream why;
  auto describe = [&](int32_t x) {
    std::ostringstream os;
    os << "expert " << x << " (logit " << formatDouble(in.logits[t * e + x])
       << ", key " << formatDouble(a.keys[x]) << " +- "
       << formatDouble(a.errs[x]) << ")";
    return os.str();
  };

  std::vector<bool> selectable(e, true);
  if (spec.isGrouped()) {
    const int64_t groups = spec.groups;
    const int64_t perGroup = spec.expertsPerGroup();
    const int64_t used =
        spec.groupScore == GroupScore::Top2Sum ? std::min<int64_t>(2, perGroup)
                                               : 1;
    // Group scores from the golden helpers: the `used` best keys of each
    // group, by golden::topKExperts.
    std::vector<double> score(groups), err(groups);
    std::vector<std::vector<double>> top(groups);
    for (int64_t g = 0; g < groups; ++g) {
      std::vector<double> members(a.keys.begin() + g * perGroup,
                                  a.keys.begin() + (g + 1) * perGroup);
      double maxErr = 0;
      for (int64_t x = g * perGroup; x < (g + 1) * perGroup; ++x)
        maxErr = std::max(maxErr, a.errs[x]);
      for (int32_t m : golden::topKExperts(
               members, std::vector<bool>(perGroup, true), used))
        top[g].push_back(members[m]);
      score[g] = 0;
      for (double v : top[g])
        score[g] += v;
      err[g] = used * maxErr + FLT_EPSILON * std::fabs(score[g]);
    }
    std::vector<int32_t> order = golden::topKExperts(
        score, std::vector<bool>(groups, true), groups);

    // The backend's kept groups: those of its ids, then the golden's best
    // among the groups it cannot have kept without selecting from them: a
    // kept group holding an expert that beats a selected one (by more than
    // rounding, or on an equal key with a lower index) would have given
    // that expert instead. Groups that contradict the ids come last, so that
    // the checks below report them.
    std::vector<bool> kept(groups, false);
    int64_t numKept = 0;
    for (int64_t j = 0; j < k; ++j) {
      if (cpu[j] < 0 || cpu[j] >= e)
        return "id " + std::to_string(cpu[j]) + " out of range";
      const int64_t g = cpu[j] / perGroup;
      if (!kept[g]) {
        kept[g] = true;
        ++numKept;
      }
    }
    if (numKept > spec.topkGroups)
      return "the ids come from " + std::to_string(numKept) +
             " groups; topk_groups = " + std::to_string(spec.topkGroups);
    auto contradicts = [&](int64_t g) {
      for (int64_t x = g * perGroup; x < (g + 1) * perGroup; ++x)
        for (int64_t j = 0; j < k; ++j) {
          const int32_t y = cpu[j];
          if (a.keys[x] - a.keys[y] > a.errs[x] + a.errs[y] ||
              (a.keys[x] == a.keys[y] && x < y))
            return true;
        }
      return false;
    };
    for (bool allowContradiction : {false, true})
      for (int32_t g : order) {
        if (numKept == spec.topkGroups)
          break;
        if (!kept[g] && (allowContradiction || !contradicts(g))) {
          kept[g] = true;
          ++numKept;
        }
      }
    for (int64_t g = 0; g < groups; ++g) {
      if (!kept[g])
        continue;
      for (int64_t h = 0; h < groups; ++h) {
        if (kept[h])
          continue;
        // Dropped h must not beat kept g by more than rounding, and on
        // identical top keys the lower group index wins.
        if (score[h] - score[g] > err[g] + err[h] ||
            (top[h] == top[g] && h < g))
          return "group " + std::to_string(g) + " (score " +
                 formatDouble(score[g]) + " +- " + formatDouble(err[g]) +
                 ") kept over group " + std::to_string(h) + " (score " +
                 formatDouble(score[h]) + " +- " + formatDouble(err[h]) + ")";
      }
    }
    for (int64_t x = 0; x < e; ++x)
      selectable[x] = kept[x / perGroup];
  }

  const std::vector<int32_t> reference = golden::topKExperts(a.keys, selectable, k);
  if (static_cast<int64_t>(reference.size()) != k)
    return std::string("test bug: fewer than k selectable experts");
  for (int64_t j = 0; j < k; ++j) {
    if (cpu[j] < 0 || cpu[j] >= e)
      return "id " + std::to_string(cpu[j]) + " out of range";
    if (!selectable[cpu[j]])
      return "expert " + std::to_string(cpu[j]) + " is in a dropped group";
    if (cpu[j] == reference[j])
      continue;
    const int32_t x = cpu[j], y = reference[j];
    if (!(std::fabs(a.keys[x] - a.keys[y]) <= a.errs[x] + a.errs[y]))
      return "position " + std::to_string(j) + ": " + describe(x) +
             " where the reference has " + describe(y) +
             ", not within fp32 rounding";
  }
  // Exactly equal keys are real ties, decided by the lower index, both for
  // the order and for which experts are chosen.
  for (int64_t j = 0; j < k; ++j) {
    for (int64_t i = j + 1; i < k; ++i)
      if (a.keys[cpu[i]] == a.keys[cpu[j]] && cpu[i] < cpu[j])
        return "equal keys: " + describe(cpu[j]) + " before " +
               describe(cpu[i]) + " (lower index must come first)";
    for (int64_t x = 0; x < cpu[j]; ++x)
      if (selectable[x] && a.keys[x] == a.keys[cpu[j]] &&
          std::find(cpu, cpu + k, x) == cpu + k)
        return "equal keys: " + describe(cpu[j]) + " chosen over " +
               describe(x) + " (lower index must win)";
  }
  return std::nullopt;
}

/// The weights the golden reference gives to `ids` of token t.
std::vector<double> weightsFor(const RoutingSpec &spec, const Inputs &in,
                               int64_t t, const int32_t *ids, double *sum) {
  const std::vector<double> scores =
      golden::scoreToken(spec, in.logits.data() + t * spec.numExperts);
  std::vector<double> w;
  double total = 0;
  for (int64_t j = 0; j < spec.topK; ++j) {
    const double score = ids[j] == -1 ? 0.0 : scores[ids[j]]; // unused slot
    w.push_back(score);
    total += score;
  }
  if (spec.normalize)
    for (double &v : w)
      v /= total + spec.normalizeEpsilon;
  for (double &v : w)
    v *= spec.scalingFactor;
  *sum = total;
  return w;
}

/// Compares a backend call with the golden one, token by token. At most a few
/// failing tokens are reported in detail.
void expectMatchesGolden(const RoutingSpec &spec, const Inputs &in,
                         const CpuResult &cpu,
                         const golden::RouterOutputs &gold, Entry entry,
                         LogitsStyle style = LogitsStyle::Random) {
  const int64_t k = spec.topK;
  const int64_t e = spec.numExperts;
  const int64_t numTokens = in.numTokens;
  ASSERT_EQ(cpu.ids.size(), static_cast<size_t>(numTokens * k));
  ASSERT_EQ(gold.topkIds.size(), static_cast<size_t>(numTokens * k));
  const bool topkSelection =
      entry == Entry::Route && spec.selection == Selection::TopK;

  int64_t badTokens = 0;
  std::ostringstream details;
  auto fail = [&](int64_t t, const std::string &why) {
    if (++badTokens <= 5)
      details << "\n  token " << t << ": cpu ids "
              << formatIds(&cpu.ids[t * k], k) << ", golden ids "
              << formatIds(&gold.topkIds[t * k], k) << ": " << why;
  };

  int64_t nearTies = 0;
  for (int64_t t = 0; t < numTokens; ++t) {
    const int32_t *ids = &cpu.ids[t * k];
    const int32_t *goldIds = &gold.topkIds[t * k];
    bool idsValid = true;
    // A router with unused slots (top-p, expert choice) leaves -1 at the
    // end of a token's ids.
    const int64_t used =
        spec.unusedSlots ? std::find(ids, ids + k, -1) - ids : k;
    if (std::any_of(ids + used, ids + k, [](int32_t id) { return id != -1; })) {
      fail(t, "an id after an unused slot");
      idsValid = false;
    }
    for (int64_t j = 0; j < used && idsValid; ++j)
      if (ids[j] < 0 || ids[j] >= e ||
          std::find(ids, ids + j, ids[j]) != ids + j) {
        fail(t, "invalid or repeated id at position " + std::to_string(j));
        idsValid = false;
      }
    if (!idsValid)
      continue;
    const bool same = std::equal(ids, ids + k, goldIds);
    if (!same) {
      if (!topkSelection || spec.unusedSlots) {
        fail(t, "hash, forced, top-p and expert-choice ids must match "
                "exactly");
        continue;
      }
      if (auto why = checkTopKToken(spec, in, t, ids, goldIds)) {
        fail(t, *why);
        continue;
      }
      ++nearTies;
    }

    // Weights, per id: the golden's own when the ids agree, else the golden
    // scores of the backend's ids.
    double sum = 0;
    std::vector<double> expected = weightsFor(spec, in, t, ids, &sum);
    if (same)
      expected.assign(gold.topkWeights.begin() + t * k,
                      gold.topkWeights.begin() + (t + 1) * k);
    const double floor =
        kWeightAbs + spec.scalingFactor * scoreFloor(spec) *
                         (spec.normalize ? static_cast<double>(k) /
                                               (sum + spec.normalizeEpsilon)
                                         : 1.0);
    for (int64_t j = 0; j < k; ++j) {
      const double got = cpu.weights[t * k + j];
      const double tolerance = kWeightRel * std::fabs(expected[j]) + floor;
      if (!(std::fabs(got - expected[j]) <= tolerance)) {
        fail(t, "weight of expert " + std::to_string(ids[j]) + " is " +
                    formatDouble(got) + ", expected " +
                    formatDouble(expected[j]) + " +- " +
                    formatDouble(tolerance));
        break;
      }
    }
  }
  // The shared expert's gate: one sigmoid per token, within the weights'
  // tolerance.
  if (spec.sharedGate) {
    ASSERT_EQ(cpu.sharedGate.size(), static_cast<size_t>(numTokens));
    ASSERT_EQ(gold.sharedGate.size(), static_cast<size_t>(numTokens));
    for (int64_t t = 0; t < numTokens; ++t) {
      const double expected = gold.sharedGate[t];
      const double tolerance = kWeightRel * expected + kWeightAbs;
      if (!(std::fabs(cpu.sharedGate[t] - expected) <= tolerance))
        fail(t, "shared gate is " + formatDouble(cpu.sharedGate[t]) +
                    ", expected " + formatDouble(expected));
    }
  }
  EXPECT_EQ(badTokens, 0) << badTokens << " of " << numTokens
                          << " tokens differ from the golden reference ("
                          << spec.name << ", E=" << e << ", k=" << k << ")"
                          << details.str();
  // With random logits near-ties must stay rare (about a tenth of the
  // tokens saturate sigmoid), or the tolerance hides real differences;
  // adversarial rows are near-ties by design.
  if (style == LogitsStyle::Random) {
    EXPECT_LE(nearTies, std::max<int64_t>(2, numTokens / 4))
        << "suspiciously many near-tie differences";
  }
}

/// Dispatch outputs must be exactly those of the backend's own ids.
void expectDispatchConsistent(const RoutingSpec &spec, int64_t numTokens,
                              const CpuResult &cpu) {
  golden::RouterOutputs expected;
  const std::string error =
      golden::computeDispatch(spec.numExperts, numTokens, spec.topK, cpu.ids,
                              expected, spec.unusedSlots, spec.capacityFactor);
  ASSERT_EQ(error, "") << "the backend's ids are invalid";
  EXPECT_EQ(cpu.counts, expected.expertCounts) << "expert_counts";
  EXPECT_EQ(cpu.offsets, expected.expertOffsets) << "expert_offsets";
  EXPECT_EQ(cpu.sortedSlots, expected.sortedSlots) << "sorted_slots";
  EXPECT_EQ(cpu.slotPositions, expected.slotPositions) << "slot_positions";
}

/// The capture buffer holds the ids at the layer, every other layer is
/// untouched.
void expectCaptured(const RoutingSpec &spec, int64_t numTokens,
                    const CaptureRequest &request, const CpuResult &cpu) {
  const int64_t k = spec.topK;
  ASSERT_EQ(cpu.capture.size(),
            static_cast<size_t>(numTokens * request.layers * k));
  int64_t wrong = 0;
  std::string first;
  for (int64_t t = 0; t < numTokens; ++t)
    for (int64_t layer = 0; layer < request.layers; ++layer)
      for (int64_t j = 0; j < k; ++j) {
        const int16_t got = cpu.capture[(t * request.layers + layer) * k + j];
        const int32_t want =
            layer == request.layer ? cpu.ids[t * k + j] : kCaptureSentinel;
        if (got != want && wrong++ == 0)
          first = "capture[" + std::to_string(t) + "][" +
                  std::to_string(layer) + "][" + std::to_string(j) + "] = " +
                  std::to_string(got) + ", expected " + std::to_string(want);
      }
  EXPECT_EQ(wrong, 0) << wrong << " wrong capture entries; first: " << first;
}

//===----------------------------------------------------------------------===//
// One spec, every entry point
//===----------------------------------------------------------------------===//

std::unique_ptr<CpuRouter> compileRouter(const RoutingSpec &spec,
                                         const CpuCompileOptions &options) {
  std::string error;
  std::unique_ptr<CpuRouter> router = compileRouter(spec, options, error);
  EXPECT_TRUE(router) << "compile failed: " << error;
  if (router) {
    EXPECT_EQ(error, "");
    EXPECT_EQ(printRoutingSpec(router->spec()), printRoutingSpec(spec));
    EXPECT_GE(router->vectorWidth(), 1);
    EXPECT_GE(router->tokensPerTask(), 1);
    if (options.vectorWidth) {
      EXPECT_EQ(router->vectorWidth(), options.vectorWidth);
    }
    if (options.tokensPerTask) {
      EXPECT_EQ(router->tokensPerTask(), options.tokensPerTask);
    }
  }
  return router;
}

/// Compiles `spec` and checks route (or route_hash) with dispatch and
/// capture as the spec asks, and replay when it has one.
void checkEveryEntryPoint(const RoutingSpec &spec,
                          const CpuCompileOptions &options, int64_t numTokens,
                          uint64_t seed, LogitsStyle style) {
  std::unique_ptr<CpuRouter> router = compileRouter(spec, options);
  ASSERT_TRUE(router);
  const Inputs in = makeInputs(spec, numTokens, seed, style);

  SCOPED_TRACE("spec:\n" + printRoutingSpec(spec));
  {
    SCOPED_TRACE("route");
    std::optional<CaptureRequest> capture;
    if (spec.capture)
      capture = CaptureRequest{3, static_cast<int64_t>(seed % 3)};
    const CpuResult cpu =
        runCpu(*router, spec, in, Entry::Route, spec.dispatch, capture);
    ASSERT_EQ(cpu.error, "");
    EXPECT_EQ(cpu.clobbered, "") << "wrote outside its outputs";
    const golden::RouterResult gold = runGolden(spec, in, Entry::Route);
    ASSERT_TRUE(gold.ok()) << "test bug: " << gold.error;
    expectMatchesGolden(spec, in, cpu, gold.outputs, Entry::Route, style);
    if (spec.dispatch)
      expectDispatchConsistent(spec, numTokens, cpu);
    if (capture)
      expectCaptured(spec, numTokens, *capture, cpu);
  }
  if (spec.replay) {
    SCOPED_TRACE("replay");
    const CpuResult replayed =
        runCpu(*router, spec, in, Entry::Replay, spec.dispatch);
    ASSERT_EQ(replayed.error, "");
    EXPECT_EQ(replayed.clobbered, "") << "wrote outside its outputs";
    EXPECT_EQ(replayed.ids, in.forcedIds) << "replay must output forced ids";
    const golden::RouterResult goldReplay = runGolden(spec, in, Entry::Replay);
    ASSERT_TRUE(goldReplay.ok()) << "test bug: " << goldReplay.error;
    expectMatchesGolden(spec, in, replayed, goldReplay.outputs, Entry::Replay,
                        style);
    if (spec.dispatch)
      expectDispatchConsistent(spec, numTokens, replayed);
  }
}

RoutingSpec makeSpec(std::string name, int64_t e, int64_t k, Scoring scoring) {
  RoutingSpec spec;
  spec.name = std::move(name);
  spec.numExperts = e;
  spec.topK = k;
  spec.scoring = scoring;
  return spec;
}

//===----------------------------------------------------------------------===//
// Templates
//===----------------------------------------------------------------------===//

std::vector<std::string> templateFiles() {
  std::vector<std::string> files;
  for (const auto &entry : std::filesystem::directory_iterator(
           std::filesystem::path(MOEGEN_SOURCE_DIR) / "templates"))
    if (entry.path().extension() == ".yaml")
      files.push_back(entry.path().string());
  std::sort(files.begin(), files.end());
  return files;
}

class CpuBackendTemplate : public ::testing::TestWithParam<std::string> {};

TEST(CpuBackendTemplates, AllSevenArePresent) {
  // A lost template directory would make the parameterized suite empty.
  EXPECT_GE(templateFiles().size(), 7u);
}

TEST_P(CpuBackendTemplate, MatchesGolden) {
  std::string error;
  std::optional<RoutingSpec> spec = parseRoutingSpecFile(GetParam(), error);
  ASSERT_TRUE(spec) << error;
  checkEveryEntryPoint(*spec, {}, 257, std::hash<std::string>{}(spec->name),
                       LogitsStyle::Random);
}

INSTANTIATE_TEST_SUITE_P(
    Templates, CpuBackendTemplate, ::testing::ValuesIn(templateFiles()),
    [](const ::testing::TestParamInfo<std::string> &info) {
      std::string name = std::filesystem::path(info.param).stem().string();
      std::replace_if(
          name.begin(), name.end(), [](char c) { return !std::isalnum(c); },
          '_');
      return name;
    });

//===----------------------------------------------------------------------===//
// Random specs
//===----------------------------------------------------------------------===//

struct DiffCase {
  std::string label;
  RoutingSpec spec;
  CpuCompileOptions options;
  int64_t numTokens = 0;
  uint64_t seed = 0;
};

std::string caseLabel(const RoutingSpec &spec, const CpuCompileOptions &o) {
  std::ostringstream os;
  os << "E" << spec.numExperts << "_k" << spec.topK << "_"
     << toString(spec.scoring);
  if (spec.selection == Selection::Hash)
    os << "_hash";
  if (spec.scoreBias)
    os << "_bias";
  if (spec.isGrouped())
    os << "_g" << spec.groups << "keep" << spec.topkGroups << "_"
       << toString(spec.groupScore);
  if (spec.normalize)
    os << "_norm";
  if (spec.scalingFactor != 1.0)
    os << "_scaled";
  if (spec.replay)
    os << "_replay";
  if (spec.dispatch)
    os << "_dispatch";
  if (spec.capture)
    os << "_capture";
  os << "_" << toString(spec.logitsDType);
  if (o.tokensPerTask)
    os << "_tpt" << o.tokensPerTask;
  if (o.threads)
    os << "_thr" << o.threads;
  return os.str();
}

/// A random valid spec with E experts and top-k k. The scoring and the
/// dtype rotate with `index` so that every combination occurs.
RoutingSpec randomSpec(Rng &rng, int64_t e, int64_t k, int64_t index) {
  static const Scoring kScorings[] = {Scoring::Softmax, Scoring::Sigmoid,
                                      Scoring::SqrtSoftplus};
  static const LogitsDType kDTypes[] = {LogitsDType::F32, LogitsDType::BF16,
                                        LogitsDType::F16};
  RoutingSpec spec =
      makeSpec("random_" + std::to_string(index), e, k, kScorings[index % 3]);
  spec.logitsDType = kDTypes[(index / 3) % 3];
  if (index % 5 == 4) {
    spec.selection = Selection::Hash;
  } else {
    spec.scoreBias = rng.chance(0.5);
    if (rng.chance(0.5)) {
      std::vector<int64_t> divisors;
      for (int64_t d = 2; d <= e; ++d)
        if (e % d == 0)
          divisors.push_back(d);
      spec.groups = rng.pick(divisors);
      const int64_t perGroup = e / spec.groups;
      spec.topkGroups =
          rng.uniformInt((k + perGroup - 1) / perGroup, spec.groups);
      spec.groupScore = perGroup >= 2 && rng.chance(0.6) ? GroupScore::Top2Sum
                                                         : GroupScore::Max;
    }
  }
  spec.normalize = rng.chance(0.6);
  spec.scalingFactor = rng.pick(std::vector<double>{1.0, 2.5, 0.125, 2.827});
  spec.replay = rng.chance(0.4);
  spec.dispatch = rng.chance(0.5);
  spec.capture = rng.chance(0.4);
  // LFM2-style epsilons (and none), where the spec normalizes.
  if (spec.normalize && rng.chance(0.3))
    spec.normalizeEpsilon = rng.pick(std::vector<double>{0.0, 1e-6, 0.25});
  // Logit temperature and soft cap (Grok-style routers, sharpened or
  // softened softmax).
  if (rng.chance(0.25))
    spec.temperature = rng.pick(std::vector<double>{0.5, 2.0, 0.7});
  if (rng.chance(0.25))
    spec.logitSoftcap = rng.pick(std::vector<double>{1.0, 5.0, 30.0});
  return spec;
}

std::vector<DiffCase> randomCases() {
  static const int64_t kExperts[] = {2,   8,   60,  64,   128, 160,
                                     256, 384, 512, 1000, 4096};
  Rng rng(0x6d6f6567656e0001ull);
  std::vector<DiffCase> cases;
  int64_t index = 0;
  for (int64_t e : kExperts) {
    const int64_t maxK = std::min<int64_t>(e, kMaxTopK);
    std::vector<int64_t> ks = {1, maxK};
    for (int extra = 0; extra < (maxK > 8 ? 2 : 1); ++extra)
      if (maxK > 2)
        ks.push_back(rng.uniformInt(2, maxK - 1));
    std::sort(ks.begin(), ks.end());
    ks.erase(std::unique(ks.begin(), ks.end()), ks.end());
    for (int64_t k : ks) {
      DiffCase c;
      c.spec = randomSpec(rng, e, k, index++);
      c.options.tokensPerTask = rng.pick(std::vector<int64_t>{0, 0, 0, 1, 7, 64});
      c.options.threads = static_cast<unsigned>(
          rng.pick(std::vector<int64_t>{0, 0, 0, 1, 3}));
      c.numTokens = e >= 1000 ? rng.uniformInt(64, 100) : rng.uniformInt(64, 300);
      c.seed = rng.next();
      c.label = caseLabel(c.spec, c.options);
      cases.push_back(std::move(c));
    }
  }
  return cases;
}

void PrintTo(const DiffCase &c, std::ostream *os) { *os << c.label; }

class CpuBackendRandom : public ::testing::TestWithParam<DiffCase> {};

TEST_P(CpuBackendRandom, MatchesGolden) {
  const DiffCase &c = GetParam();
  ASSERT_FALSE(validateRoutingSpec(c.spec).has_value())
      << "test bug: " << validateRoutingSpec(c.spec)->message;
  checkEveryEntryPoint(c.spec, c.options, c.numTokens, c.seed,
                       LogitsStyle::Random);
}

INSTANTIATE_TEST_SUITE_P(Specs, CpuBackendRandom,
                         ::testing::ValuesIn(randomCases()),
                         [](const ::testing::TestParamInfo<DiffCase> &info) {
                           return std::to_string(info.index) + "_" +
                                  info.param.label;
                         });

TEST(CpuBackendRandomCoverage, SpecsCoverTheLanguage) {
  // The generator is deterministic; this pins that it still reaches every
  // feature, so that a change to it cannot silently drop coverage.
  const std::vector<DiffCase> cases = randomCases();
  EXPECT_LE(cases.size(), 60u) << "keep the suite's runtime bounded";
  std::map<std::string, int> seen;
  for (const DiffCase &c : cases) {
    const RoutingSpec &s = c.spec;
    ++seen[std::string(toString(s.scoring)) + "/" +
           std::string(toString(s.logitsDType))];
    seen["hash"] += s.selection == Selection::Hash;
    seen["bias"] += s.scoreBias;
    seen["top2_sum"] += s.isGrouped() && s.groupScore == GroupScore::Top2Sum;
    seen["max"] += s.isGrouped() && s.groupScore == GroupScore::Max;
    seen["normalize"] += s.normalize;
    seen["scaled"] += s.scalingFactor != 1.0;
    seen["replay"] += s.replay;
    seen["hash+replay"] += s.selection == Selection::Hash && s.replay;
    seen["dispatch"] += s.dispatch;
    seen["capture"] += s.capture;
    seen["k=1"] += s.topK == 1;
    seen["k=64"] += s.topK == 64;
    seen["tokens per task"] += c.options.tokensPerTask != 0;
    seen["threads"] += c.options.threads != 0;
    seen["bias+groups+sigmoid"] +=
        s.scoreBias && s.isGrouped() && s.scoring == Scoring::Sigmoid;
  }
  for (const char *scoring : {"softmax", "sigmoid", "sqrtsoftplus"})
    for (const char *dtype : {"f32", "bf16", "f16"})
      EXPECT_GT((seen[std::string(scoring) + "/" + dtype]), 0)
          << scoring << "/" << dtype;
  for (const char *feature :
       {"hash", "bias", "top2_sum", "max", "normalize", "scaled", "replay",
        "hash+replay", "dispatch", "capture", "k=1", "k=64",
        "tokens per task", "threads", "bias+groups+sigmoid"})
    EXPECT_GT(seen[feature], 0) << feature;
}

//===----------------------------------------------------------------------===//
// Adversarial logits
//===----------------------------------------------------------------------===//

struct AdversarialCase {
  std::string label;
  RoutingSpec spec;
};

std::vector<AdversarialCase> adversarialCases() {
  auto make = [](std::string label, Scoring scoring, LogitsDType dtype,
                 bool biasAndGroups, GroupScore groupScore, bool normalize) {
    RoutingSpec spec = makeSpec("adversarial", 64, 8, scoring);
    spec.logitsDType = dtype;
    if (biasAndGroups) {
      spec.scoreBias = true;
      spec.groups = 8;
      spec.topkGroups = 3;
      spec.groupScore = groupScore;
    }
    spec.normalize = normalize;
    spec.scalingFactor = 2.5;
    spec.dispatch = true;
    return AdversarialCase{std::move(label), spec};
  };
  return {
      make("softmax_f32", Scoring::Softmax, LogitsDType::F32, false,
           GroupScore::Top2Sum, true),
      make("softmax_bf16_bias_groups_max", Scoring::Softmax, LogitsDType::BF16,
           true, GroupScore::Max, true),
      make("sigmoid_f32_bias_groups_top2", Scoring::Sigmoid, LogitsDType::F32,
           true, GroupScore::Top2Sum, true),
      make("sigmoid_f16", Scoring::Sigmoid, LogitsDType::F16, false,
           GroupScore::Top2Sum, false),
      make("sqrtsoftplus_bf16", Scoring::SqrtSoftplus, LogitsDType::BF16,
           false, GroupScore::Top2Sum, true),
      make("sqrtsoftplus_f32_bias_groups_top2", Scoring::SqrtSoftplus,
           LogitsDType::F32, true, GroupScore::Top2Sum, false),
  };
}

void PrintTo(const AdversarialCase &c, std::ostream *os) { *os << c.label; }

class CpuBackendAdversarial : public ::testing::TestWithParam<AdversarialCase> {
};

TEST_P(CpuBackendAdversarial, MatchesGolden) {
  // 11 kinds of rows, 12 of each; small tasks so rows of every kind meet
  // the vectorized loop's remainder handling in several tasks.
  CpuCompileOptions options;
  options.tokensPerTask = 5;
  checkEveryEntryPoint(GetParam().spec, options, 132, 0xad5e7 + GetParam().label.size(),
                       LogitsStyle::Adversarial);
}

INSTANTIATE_TEST_SUITE_P(
    Logits, CpuBackendAdversarial, ::testing::ValuesIn(adversarialCases()),
    [](const ::testing::TestParamInfo<AdversarialCase> &info) {
      return info.param.label;
    });

TEST(CpuBackendEdge, TiesGoToTheLowerIndexExactly) {
  // Hand-checked rather than through the tolerance: logits {1, 2, 2, 1, 2}
  // tie exactly, so top-4 is {1, 2, 4, 0} on every backend; the uniform row
  // gives {0, 1, 2, 3}, and the all -inf softmax row is uniform 1/E.
  RoutingSpec spec = makeSpec("ties", 5, 4, Scoring::Softmax);
  spec.normalize = false;
  std::unique_ptr<CpuRouter> router = compileRouter(spec, {});
  ASSERT_TRUE(router);
  Inputs in;
  in.numTokens = 3;
  in.logits = {1, 2, 2, 1, 2, //
               7, 7, 7, 7, 7, //
               kNegInf, kNegInf, kNegInf, kNegInf, kNegInf};
  const CpuResult cpu = runCpu(*router, spec, in, Entry::Route, false);
  ASSERT_EQ(cpu.error, "");
  EXPECT_EQ(cpu.ids, (std::vector<int32_t>{1, 2, 4, 0, //
                                           0, 1, 2, 3, //
                                           0, 1, 2, 3}));
  for (int64_t j = 8; j < 12; ++j)
    EXPECT_NEAR(cpu.weights[j], 0.2, 1e-7);
}

TEST(CpuBackendEdge, ZeroAndOneToken) {
  RoutingSpec spec = makeSpec("few_tokens", 16, 4, Scoring::Sigmoid);
  spec.scoreBias = true;
  spec.dispatch = true;
  std::unique_ptr<CpuRouter> router = compileRouter(spec, {});
  ASSERT_TRUE(router);
  for (int64_t numTokens : {0, 1}) {
    SCOPED_TRACE("T = " + std::to_string(numTokens));
    const Inputs in = makeInputs(spec, numTokens, 42, LogitsStyle::Random);
    const CpuResult cpu = runCpu(*router, spec, in, Entry::Route, true);
    ASSERT_EQ(cpu.error, "");
    EXPECT_EQ(cpu.clobbered, "");
    const golden::RouterResult gold = runGolden(spec, in, Entry::Route);
    ASSERT_TRUE(gold.ok()) << gold.error;
    expectMatchesGolden(spec, in, cpu, gold.outputs, Entry::Route);
    expectDispatchConsistent(spec, numTokens, cpu);
  }
}

TEST(CpuBackendEdge, DispatchOutputsAreOptional) {
  // A dispatch spec may be called without the dispatch outputs.
  RoutingSpec spec = makeSpec("no_dispatch_outputs", 32, 4, Scoring::Softmax);
  spec.dispatch = true;
  std::unique_ptr<CpuRouter> router = compileRouter(spec, {});
  ASSERT_TRUE(router);
  const Inputs in = makeInputs(spec, 50, 7, LogitsStyle::Random);
  const CpuResult cpu = runCpu(*router, spec, in, Entry::Route, false);
  ASSERT_EQ(cpu.error, "");
  const golden::RouterResult gold = runGolden(spec, in, Entry::Route);
  expectMatchesGolden(spec, in, cpu, gold.outputs, Entry::Route);
}

TEST(CpuBackendEdge, ExplicitVectorWidths) {
  // Widths that do not divide E exercise the remainder loops.
  struct Width {
    int64_t experts, width;
  };
  for (Width w : {Width{60, 1}, Width{60, 16}, Width{1000, 4}, Width{1000, 8}}) {
    SCOPED_TRACE("E = " + std::to_string(w.experts) +
                 ", vector width = " + std::to_string(w.width));
    RoutingSpec spec = makeSpec("widths", w.experts, 8, Scoring::Sigmoid);
    spec.scoreBias = true;
    spec.groups = w.experts == 60 ? 6 : 8;
    spec.topkGroups = 3;
    spec.normalize = true;
    CpuCompileOptions options;
    options.vectorWidth = w.width;
    checkEveryEntryPoint(spec, options, 90, 1000 + w.width,
                         LogitsStyle::Random);
  }
}

TEST(CpuBackendEdge, EveryTopKMethod) {
  // The kernel config picks how a row's top-k is found; every method must
  // give the golden ids on every shape: tails, groups (-inf keys), ties.
  // Rows of 1000 and 4096 experts are wider than 16 chunks a lane: their
  // lane lists stream (WideRowLaneLists) or, with fewer lanes than k, fall
  // back to the passes.
  struct Case {
    int64_t experts, k, groups;
    LogitsStyle style;
  };
  for (const char *method : {"argmax_passes", "insertion", "lane_lists",
                             "lane_tree", "token_lanes"})
    for (Case c : {Case{8, 8, 1, LogitsStyle::Random},
                   Case{60, 7, 6, LogitsStyle::Random},
                   Case{100, 12, 1, LogitsStyle::Adversarial},
                   // 3 groups of 4 chunks: chunked, but not transposed.
                   Case{96, 8, 3, LogitsStyle::Adversarial},
                   Case{256, 8, 8, LogitsStyle::Adversarial},
                   Case{1000, 64, 1, LogitsStyle::Random},
                   Case{4096, 33, 8, LogitsStyle::Adversarial}}) {
      SCOPED_TRACE(std::string(method) + ", E = " +
                   std::to_string(c.experts) + ", k = " + std::to_string(c.k));
      RoutingSpec spec = makeSpec("topk_method", c.experts, c.k,
                                  Scoring::Softmax);
      spec.scoreBias = true;
      spec.groups = c.groups;
      spec.topkGroups = c.groups > 1 ? c.groups / 2 + 1 : 1;
      spec.normalize = true;
      CpuCompileOptions options;
      options.topk = method;
      checkEveryEntryPoint(spec, options, 70, 77 + c.experts, c.style);
    }
}

TEST(CpuBackendEdge, TokenLanes) {
  // Tokens across the lanes: every scoring (with temperature and soft
  // cap), a bias, capture, replay (which keeps the token-per-row layout),
  // dispatch, widths of 4 to 16 tokens a group, token counts that leave a
  // tail, expert counts from 2 to 64, ties (adversarial logits).
  struct Case {
    int64_t experts, k;
    Scoring scoring;
    bool bias;
    int64_t width;
    LogitsStyle style;
  };
  for (Case c : {Case{8, 2, Scoring::Softmax, false, 8, LogitsStyle::Random},
                 Case{8, 2, Scoring::Softmax, false, 8, LogitsStyle::Adversarial},
                 Case{2, 1, Scoring::Softmax, false, 4, LogitsStyle::Random},
                 Case{3, 3, Scoring::Sigmoid, true, 8, LogitsStyle::Adversarial},
                 Case{16, 4, Scoring::Sigmoid, true, 16, LogitsStyle::Random},
                 Case{16, 4, Scoring::SqrtSoftplus, true, 8, LogitsStyle::Random},
                 Case{33, 6, Scoring::Softmax, false, 8, LogitsStyle::Adversarial},
                 Case{64, 8, Scoring::Softmax, true, 8, LogitsStyle::Random}})
    for (int64_t tokens : {1, 7, 70}) {
      SCOPED_TRACE("E = " + std::to_string(c.experts) + ", k = " +
                   std::to_string(c.k) + ", width " + std::to_string(c.width) +
                   ", T = " + std::to_string(tokens));
      RoutingSpec spec = makeSpec("token_lanes", c.experts, c.k, c.scoring);
      spec.scoreBias = c.bias;
      spec.normalize = c.k > 1;
      spec.scalingFactor = 2.5;
      spec.capture = true;
      spec.replay = true;
      spec.dispatch = true;
      if (c.experts == 16) {
        spec.temperature = 0.7;
        spec.logitSoftcap = 5.0;
      }
      spec.logitsDType = c.experts == 8 ? LogitsDType::BF16 : LogitsDType::F32;
      CpuCompileOptions options;
      options.topk = "token_lanes";
      options.vectorWidth = c.width;
      checkEveryEntryPoint(spec, options, tokens, 5 + tokens + c.experts,
                           c.style);
    }
}

TEST(CpuBackendEdge, TokenLanesGroupWithABadLogit) {
  // A group holding a NaN or +inf logit goes one token at a time: the
  // first violation is reported, as in the token-per-row layout.
  RoutingSpec spec = makeSpec("token_lanes_errors", 8, 2, Scoring::Softmax);
  spec.normalize = true;
  CpuCompileOptions options;
  options.topk = "token_lanes";
  std::unique_ptr<CpuRouter> router = compileRouter(spec, options);
  ASSERT_TRUE(router);
  Inputs in = makeInputs(spec, 40, 7, LogitsStyle::Random);
  in.logits[33 * 8 + 6] = std::numeric_limits<float>::infinity();
  in.logits[12 * 8 + 3] = std::nanf("");
  in.logits[12 * 8 + 1] = std::numeric_limits<float>::infinity();
  const CpuResult cpu = runCpu(*router, spec, in, Entry::Route, false,
                               std::nullopt);
  EXPECT_NE(cpu.error.find("logits[12][1]"), std::string::npos) << cpu.error;
  EXPECT_EQ(cpu.clobbered, "");
}

TEST(CpuBackendEdge, WideRowLaneLists) {
  // Rows of more than 16 chunks a lane take the lane lists in two streaming
  // passes: only keys at or above a bound from the lanes' maxima enter a
  // lane's list. Groups narrower than a chunk leave most lanes without a
  // finite key on some tokens (no bound: the arg-max passes take over);
  // fewer lanes than k always take the passes.
  struct Case {
    int64_t experts, k, groups, keep, width;
    Scoring scoring;
    LogitsStyle style;
  };
  for (Case c :
       {Case{1000, 8, 1, 1, 16, Scoring::Softmax, LogitsStyle::Random},
        Case{1024, 6, 1, 1, 32, Scoring::Sigmoid, LogitsStyle::Adversarial},
        Case{4096, 8, 8, 3, 32, Scoring::Sigmoid, LogitsStyle::Adversarial},
        Case{1024, 8, 256, 2, 32, Scoring::Sigmoid, LogitsStyle::Random},
        Case{2048, 32, 1, 1, 32, Scoring::Softmax, LogitsStyle::Adversarial},
        Case{2048, 16, 1, 1, 8, Scoring::Softmax, LogitsStyle::Random}}) {
    SCOPED_TRACE("E = " + std::to_string(c.experts) + ", k = " +
                 std::to_string(c.k) + ", groups = " +
                 std::to_string(c.groups) + ", width = " +
                 std::to_string(c.width));
    RoutingSpec spec = makeSpec("wide_lane_lists", c.experts, c.k, c.scoring);
    spec.scoreBias = c.scoring == Scoring::Sigmoid;
    spec.groups = c.groups;
    spec.topkGroups = c.keep;
    spec.normalize = true;
    spec.dispatch = true;
    CpuCompileOptions options;
    options.vectorWidth = c.width;
    // The streamed lists merged by rounds, and by the bitonic tree.
    for (const char *method : {"lane_lists", "lane_tree"}) {
      SCOPED_TRACE(method);
      options.topk = method;
      checkEveryEntryPoint(spec, options, 61, 5 + c.experts + c.k, c.style);
    }
  }
}

TEST(CpuBackendEdge, ResultsIndependentOfTaskSplit) {
  // Tokens are independent: any split into tasks and any thread count must
  // give bit-identical outputs.
  RoutingSpec spec = makeSpec("split", 256, 8, Scoring::Sigmoid);
  spec.scoreBias = true;
  spec.groups = 8;
  spec.topkGroups = 4;
  spec.normalize = true;
  spec.scalingFactor = 2.5;
  spec.dispatch = true;
  CpuCompileOptions fine;
  fine.tokensPerTask = 1;
  fine.threads = 3;
  std::unique_ptr<CpuRouter> a = compileRouter(spec, fine);
  std::unique_ptr<CpuRouter> b = compileRouter(spec, {});
  ASSERT_TRUE(a && b);
  const Inputs in = makeInputs(spec, 3001, 99, LogitsStyle::Random);
  const CpuResult ra = runCpu(*a, spec, in, Entry::Route, true);
  const CpuResult rb = runCpu(*b, spec, in, Entry::Route, true);
  const CpuResult rb2 = runCpu(*b, spec, in, Entry::Route, true);
  ASSERT_EQ(ra.error, "");
  ASSERT_EQ(rb.error, "");
  EXPECT_EQ(ra.ids, rb.ids);
  EXPECT_EQ(rb.ids, rb2.ids);
  EXPECT_EQ(0, std::memcmp(ra.weights.data(), rb.weights.data(),
                           ra.weights.size() * sizeof(float)));
  EXPECT_EQ(ra.sortedSlots, rb.sortedSlots);
  const golden::RouterResult gold = runGolden(spec, in, Entry::Route);
  expectMatchesGolden(spec, in, rb, gold.outputs, Entry::Route);
}

//===----------------------------------------------------------------------===//
// Bad input
//===----------------------------------------------------------------------===//

/// A router compiled once per process for the error tests: several tasks per
/// call (64 tokens each over 5000 tokens), so that the first violation in
/// token order must win over one found earlier by another task.
constexpr int64_t kErrorTokens = 5000;
constexpr int64_t kEarly = 1200, kLate = 4000;

CpuRouter *errorRouter(Selection selection) {
  // Never destroyed: no JIT teardown races static destructors at exit.
  static auto *routers = new std::map<Selection, std::unique_ptr<CpuRouter>>;
  std::unique_ptr<CpuRouter> &router = (*routers)[selection];
  if (!router) {
    RoutingSpec spec = makeSpec("errors", 64, 4, Scoring::Softmax);
    spec.selection = selection;
    spec.scoreBias = selection == Selection::TopK;
    spec.normalize = true;
    spec.replay = true;
    spec.dispatch = true;
    spec.capture = true;
    spec.sharedGate = true;
    CpuCompileOptions options;
    options.tokensPerTask = 64;
    std::string error;
    router = compileRouter(spec, options, error);
    if (!router)
      ADD_FAILURE() << "compile failed: " << error;
  }
  return router.get();
}

/// Declares `CpuRouter &var` for the error tests; fails the test when the
/// router did not compile.
#define ERROR_ROUTER(var, selection)                                           \
  CpuRouter *var##Pointer = errorRouter(Selection::selection);                 \
  ASSERT_NE(var##Pointer, nullptr);                                            \
  CpuRouter &var = *var##Pointer

struct ErrorCall {
  const RoutingSpec &spec;
  Inputs in;
  explicit ErrorCall(CpuRouter &router)
      : spec(router.spec()),
        in(makeInputs(router.spec(), kErrorTokens, 2024, LogitsStyle::Random)) {}
};

/// Runs a call that must fail: one line, naming `expected` (tensor and
/// index), not naming the later violation, nothing written outside the
/// outputs. Also checks the golden reference agrees on the location.
void expectError(CpuRouter &router, const Inputs &in, Entry entry,
                 const std::string &expected, const std::string &notExpected,
                 std::optional<CaptureRequest> capture = std::nullopt) {
  const RoutingSpec &spec = router.spec();
  const CpuResult cpu = runCpu(router, spec, in, entry, spec.dispatch, capture);
  EXPECT_NE(cpu.error, "") << "the call succeeded";
  EXPECT_EQ(cpu.error.find('\n'), std::string::npos)
      << "not one line: " << cpu.error;
  EXPECT_NE(cpu.error.find(expected), std::string::npos)
      << "expected the message to name " << expected << ", got: " << cpu.error;
  if (!notExpected.empty()) {
    EXPECT_EQ(cpu.error.find(notExpected), std::string::npos)
        << "reported a later violation: " << cpu.error;
  }
  EXPECT_EQ(cpu.clobbered, "") << "wrote outside its outputs after an error";
  if (!capture) {
    const golden::RouterResult gold = runGolden(spec, in, entry);
    EXPECT_NE(gold.error.find(expected), std::string::npos)
        << "test bug: the golden reference reports " << gold.error;
    // Same format as the golden reference (docs/semantics.md §2).
    EXPECT_EQ(cpu.error, gold.error) << "wording differs from the golden";
  }
}

TEST(CpuBackendErrors, SharedGateLogitsAfterEveryOtherInput) {
  // Checked like the logits, in every entry point, and reported after
  // every other input's violation (docs/semantics.md §2).
  for (Selection selection : {Selection::TopK, Selection::Hash}) {
    CpuRouter *router = errorRouter(selection);
    ASSERT_NE(router, nullptr);
    ErrorCall c(*router);
    c.in.sharedGateLogits[kLate] = std::numeric_limits<float>::infinity();
    c.in.sharedGateLogits[kEarly] = kNaN;
    expectError(*router, c.in, Entry::Route,
                "shared_gate_logits[1200][0] is nan: shared gate logits must "
                "be finite or -inf",
                "shared_gate_logits[4000]");
    expectError(*router, c.in, Entry::Replay, "shared_gate_logits[1200][0]",
                "shared_gate_logits[4000]");
    c.in.logits[kLate * 64 + 5] = kNaN;
    expectError(*router, c.in, Entry::Route, "logits[4000][5]",
                "shared_gate_logits");
  }
}

TEST(CpuBackendErrors, NaNLogitFirstInTokenOrder) {
  ERROR_ROUTER(router, TopK);
  ErrorCall c(router);
  c.in.logits[kLate * 64 + 3] = kNaN;
  c.in.logits[kEarly * 64 + 17] = kNaN;
  expectError(router, c.in, Entry::Route, "logits[1200][17]", "logits[4000]");
}

TEST(CpuBackendErrors, PosInfLogitLowestIndexInToken) {
  ERROR_ROUTER(router, TopK);
  ErrorCall c(router);
  c.in.logits[kLate * 64 + 0] = kPosInf;
  c.in.logits[kEarly * 64 + 40] = kNaN;
  c.in.logits[kEarly * 64 + 5] = kPosInf;
  c.in.logits[kEarly * 64 + 6] = kNegInf; // allowed
  expectError(router, c.in, Entry::Route, "logits[1200][5]", "logits[1200][40]");
}

TEST(CpuBackendErrors, BadLogitInReplayAndHashCalls) {
  // The logits are checked by every entry point.
  ERROR_ROUTER(router, TopK);
  ErrorCall c(router);
  c.in.logits[kLate * 64 + 9] = kNaN;
  c.in.logits[kEarly * 64 + 63] = kPosInf;
  expectError(router, c.in, Entry::Replay, "logits[1200][63]", "logits[4000]");

  ERROR_ROUTER(hash, Hash);
  ErrorCall h(hash);
  h.in.logits[kLate * 64 + 9] = kNaN;
  h.in.logits[kEarly * 64 + 0] = kNaN;
  expectError(hash, h.in, Entry::Route, "logits[1200][0]", "logits[4000]");
}

TEST(CpuBackendErrors, BadLogitWithCapture) {
  ERROR_ROUTER(router, TopK);
  ErrorCall c(router);
  c.in.logits[kLate * 64 + 1] = kNaN;
  c.in.logits[kEarly * 64 + 2] = kNaN;
  expectError(router, c.in, Entry::Route, "logits[1200][2]", "logits[4000]",
              CaptureRequest{2, 1});
}

TEST(CpuBackendErrors, ForcedIdOutOfRange) {
  ERROR_ROUTER(router, TopK);
  ErrorCall c(router);
  c.in.forcedIds[kLate * 4 + 1] = 64;
  c.in.forcedIds[kEarly * 4 + 2] = -1;
  expectError(router, c.in, Entry::Replay, "forced_ids[1200][2]",
              "forced_ids[4000]");
  ErrorCall d(router);
  d.in.forcedIds[kEarly * 4 + 0] = 64;
  expectError(router, d.in, Entry::Replay, "forced_ids[1200][0]", "");
}

TEST(CpuBackendErrors, ForcedIdRepeated) {
  ERROR_ROUTER(router, TopK);
  ErrorCall c(router);
  c.in.forcedIds[kLate * 4 + 0] = 1000;
  c.in.forcedIds[kEarly * 4 + 3] = c.in.forcedIds[kEarly * 4 + 1];
  expectError(router, c.in, Entry::Replay, "forced_ids[1200][3]",
              "forced_ids[4000]");
}

TEST(CpuBackendErrors, LogitsBeforeEarlierForcedIds) {
  // semantics.md §2 orders by category first: a bad logit of a late token
  // wins over a bad forced id of an early token, in another task.
  ERROR_ROUTER(router, TopK);
  ErrorCall c(router);
  c.in.forcedIds[kEarly * 4 + 1] = 64;
  c.in.logits[kLate * 64 + 7] = kNaN;
  expectError(router, c.in, Entry::Replay, "logits[4000][7]", "forced_ids");
}

TEST(CpuBackendErrors, LogitsBeforeBias) {
  // The bias is checked on the host but reported in its place: after logits.
  ERROR_ROUTER(router, TopK);
  ErrorCall c(router);
  c.in.bias[7] = kPosInf;
  c.in.logits[kLate * 64 + 2] = kNaN;
  expectError(router, c.in, Entry::Route, "logits[4000][2]", "bias");
}

TEST(CpuBackendErrors, HashTokenIdBeforeLaterHashEntry) {
  // Within a category, token order: token 1200's bad token id comes before
  // token 4000's bad table row, although the entry error is a "later" code.
  ERROR_ROUTER(router, Hash);
  ErrorCall c(router);
  c.in.tokenIds[kEarly] = static_cast<int32_t>(c.in.hashVocab);
  int32_t row = c.in.tokenIds[kLate];
  c.in.hashTable[row * 4 + 2] = -3;
  for (int64_t t = 0; t < kLate; ++t)
    if (c.in.tokenIds[t] == row)
      c.in.tokenIds[t] = (row + 1) % static_cast<int32_t>(c.in.hashVocab);
  expectError(router, c.in, Entry::Route, "token_ids[1200]", "hash_table");
}

TEST(CpuBackendErrors, LogitsBeforeForcedIds) {
  // Both orders (by category, by token) agree here: the logit comes first.
  ERROR_ROUTER(router, TopK);
  ErrorCall c(router);
  c.in.forcedIds[kLate * 4 + 0] = -5;
  c.in.logits[kEarly * 64 + 0] = kNaN;
  expectError(router, c.in, Entry::Replay, "logits[1200][0]", "forced_ids");
}

TEST(CpuBackendErrors, TokenIdOutsideTable) {
  ERROR_ROUTER(router, Hash);
  ErrorCall c(router);
  c.in.tokenIds[kLate] = static_cast<int32_t>(c.in.hashVocab);
  c.in.tokenIds[kEarly] = -3;
  expectError(router, c.in, Entry::Route, "token_ids[1200]", "token_ids[4000]");
}

/// Points tokens kEarly and kLate at rows no other token uses.
std::pair<int32_t, int32_t> privateRows(Inputs &in) {
  const int32_t early = static_cast<int32_t>(in.hashVocab);
  const int32_t late = early + 1;
  in.hashVocab += 2;
  const size_t k = in.hashTable.size() / (in.hashVocab - 2);
  for (int rows = 0; rows < 2; ++rows)
    for (size_t j = 0; j < k; ++j)
      in.hashTable.push_back(static_cast<int32_t>(j));
  in.tokenIds[kEarly] = early;
  in.tokenIds[kLate] = late;
  return {early, late};
}

TEST(CpuBackendErrors, HashEntryOutOfRange) {
  ERROR_ROUTER(router, Hash);
  ErrorCall c(router);
  auto [early, late] = privateRows(c.in);
  c.in.hashTable[late * 4 + 0] = -1;
  c.in.hashTable[early * 4 + 2] = 64;
  expectError(router, c.in, Entry::Route,
              "hash_table[" + std::to_string(early) + "][2]",
              "hash_table[" + std::to_string(late) + "]");
}

TEST(CpuBackendErrors, HashEntryRepeated) {
  ERROR_ROUTER(router, Hash);
  ErrorCall c(router);
  auto [early, late] = privateRows(c.in);
  c.in.hashTable[late * 4 + 1] = 99;
  c.in.hashTable[early * 4 + 3] = c.in.hashTable[early * 4 + 0];
  expectError(router, c.in, Entry::Route,
              "hash_table[" + std::to_string(early) + "][3]",
              "hash_table[" + std::to_string(late) + "]");
}

TEST(CpuBackendErrors, UnusedHashRowsAreNotChecked) {
  // Rows no token looks up may hold anything (docs/semantics.md §7).
  ERROR_ROUTER(router, Hash);
  const RoutingSpec &spec = router.spec();
  Inputs in = makeInputs(spec, 300, 5, LogitsStyle::Random);
  const int32_t reserved = static_cast<int32_t>(in.hashVocab);
  in.hashVocab += 1;
  for (int32_t v : {-7, 64, 3, 3})
    in.hashTable.push_back(v);
  ASSERT_EQ(std::count(in.tokenIds.begin(), in.tokenIds.end(), reserved), 0);
  const CpuResult cpu = runCpu(router, spec, in, Entry::Route, true);
  ASSERT_EQ(cpu.error, "");
  const golden::RouterResult gold = runGolden(spec, in, Entry::Route);
  ASSERT_TRUE(gold.ok()) << gold.error;
  expectMatchesGolden(spec, in, cpu, gold.outputs, Entry::Route);
}

TEST(CpuBackendErrors, NonFiniteBias) {
  ERROR_ROUTER(router, TopK);
  ErrorCall c(router);
  c.in.bias[5] = kPosInf;
  c.in.bias[9] = kNaN;
  expectError(router, c.in, Entry::Route, "bias[5]", "bias[9]");
}

TEST(CpuBackendErrors, CaptureLayerOutOfRange) {
  ERROR_ROUTER(router, TopK);
  for (int64_t layer : {3, -1, 1000}) {
    SCOPED_TRACE("layer " + std::to_string(layer));
    ErrorCall c(router);
    const CpuResult cpu = runCpu(router, c.spec, c.in, Entry::Route, true,
                                 CaptureRequest{3, layer});
    EXPECT_NE(cpu.error, "") << "the call succeeded";
    EXPECT_EQ(cpu.error.find('\n'), std::string::npos) << cpu.error;
    std::string lower = cpu.error;
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char ch) { return std::tolower(ch); });
    EXPECT_NE(lower.find("capture"), std::string::npos) << cpu.error;
    EXPECT_NE(cpu.error.find(std::to_string(layer)), std::string::npos)
        << cpu.error;
    EXPECT_EQ(cpu.clobbered, "");
  }
}

TEST(CpuBackendErrors, MissingOrInconsistentPointers) {
  ERROR_ROUTER(router, TopK);
  const RoutingSpec &spec = router.spec();
  Inputs in = makeInputs(spec, 10, 3, LogitsStyle::Random);
  std::vector<int32_t> ids(10 * 4), counts(64), offsets(65), sorted(40),
      positions(40);
  std::vector<float> weights(10 * 4), gate(10);
  auto baseCall = [&] {
    RouterCall call;
    call.numTokens = 10;
    call.logits = in.logits.data();
    call.bias = in.bias.data();
    call.sharedGateLogits = in.sharedGateLogits.data();
    call.topkIds = ids.data();
    call.topkWeights = weights.data();
    call.sharedGate = gate.data();
    return call;
  };
  ASSERT_EQ(router.run(baseCall()), "");
  auto expectOneLineError = [&](const RouterCall &call, const char *what) {
    SCOPED_TRACE(what);
    const std::string error = router.run(call);
    EXPECT_NE(error, "");
    EXPECT_EQ(error.find('\n'), std::string::npos) << error;
  };
  RouterCall call = baseCall();
  call.logits = nullptr;
  expectOneLineError(call, "no logits");
  call = baseCall();
  call.bias = nullptr;
  expectOneLineError(call, "no bias with score_bias");
  call = baseCall();
  call.topkIds = nullptr;
  expectOneLineError(call, "no ids output");
  call = baseCall();
  call.topkWeights = nullptr;
  expectOneLineError(call, "no weights output");
  call = baseCall();
  call.expertCounts = counts.data();
  call.expertOffsets = offsets.data();
  expectOneLineError(call, "two of the four dispatch outputs");
  call = baseCall();
  call.numTokens = -1;
  expectOneLineError(call, "negative token count");
  call = baseCall();
  call.sharedGateLogits = nullptr;
  expectOneLineError(call, "no shared gate logits with shared_expert_gate");
  call = baseCall();
  call.sharedGate = nullptr;
  expectOneLineError(call, "no shared gate output");
}

TEST(CpuBackendErrors, InvalidSpecDoesNotCompile) {
  std::string error;
  RoutingSpec badK = makeSpec("bad_k", 64, 0, Scoring::Softmax);
  EXPECT_EQ(compileRouter(badK, {}, error), nullptr);
  EXPECT_NE(error.find("top_k"), std::string::npos) << error;
  EXPECT_EQ(error.find('\n'), std::string::npos) << error;

  error.clear();
  RoutingSpec badGroups = makeSpec("bad_groups", 64, 4, Scoring::Sigmoid);
  badGroups.groups = 3;
  badGroups.topkGroups = 2;
  EXPECT_EQ(compileRouter(badGroups, {}, error), nullptr);
  EXPECT_NE(error.find("groups"), std::string::npos) << error;
  EXPECT_EQ(error.find('\n'), std::string::npos) << error;

  error.clear();
  RoutingSpec badHash = makeSpec("bad_hash", 64, 4, Scoring::Sigmoid);
  badHash.selection = Selection::Hash;
  badHash.scoreBias = true;
  EXPECT_EQ(compileRouter(badHash, {}, error), nullptr);
  EXPECT_NE(error, "");
}

//===----------------------------------------------------------------------===//
// Gating programs
//===----------------------------------------------------------------------===//

RoutingSpec parseProgramSpec(const std::string &text) {
  std::string error;
  std::optional<RoutingSpec> spec = parseRoutingSpec(text, "program", error);
  EXPECT_TRUE(spec) << error << "\n" << text;
  return spec.value_or(RoutingSpec{});
}

TEST(CpuBackendPrograms, TemplateTwinsMatchTheGoldenInterpreter) {
  // The twin runs through the golden reference's program interpreter,
  // the template through its key path: the same numbers, to the bit.
  for (const std::string &file : templateFiles()) {
    std::string error;
    std::optional<RoutingSpec> spec = parseRoutingSpecFile(file, error);
    ASSERT_TRUE(spec) << error;
    RoutingSpec twin = program::programTwin(*spec);
    ASSERT_TRUE(twin.isProgram());
    SCOPED_TRACE(twin.program);
    const Inputs in = makeInputs(*spec, 33, 3, LogitsStyle::Random);
    for (Entry entry : {Entry::Route, Entry::Replay}) {
      if (entry == Entry::Replay && !spec->replay)
        continue;
      golden::RouterResult keys = runGolden(*spec, in, entry);
      golden::RouterResult programmed = runGolden(twin, in, entry);
      ASSERT_TRUE(keys.ok() && programmed.ok())
          << keys.error << programmed.error;
      EXPECT_EQ(keys.outputs.topkIds, programmed.outputs.topkIds);
      EXPECT_EQ(keys.outputs.topkWeights, programmed.outputs.topkWeights);
      EXPECT_EQ(keys.outputs.sortedSlots, programmed.outputs.sortedSlots);
    }
    // Identical IR, so identical kernels: the same bits on the CPU. (The
    // template itself is checked against the golden reference above.)
    std::unique_ptr<CpuRouter> keysRouter = compileRouter(*spec, {});
    std::unique_ptr<CpuRouter> twinRouter = compileRouter(twin, {});
    ASSERT_TRUE(keysRouter && twinRouter);
    for (Entry entry : {Entry::Route, Entry::Replay}) {
      if (entry == Entry::Replay && !spec->replay)
        continue;
      std::optional<CaptureRequest> capture;
      if (spec->capture && entry == Entry::Route)
        capture = CaptureRequest{2, 1};
      CpuResult a = runCpu(*keysRouter, *spec, in, entry, spec->dispatch, capture);
      CpuResult b = runCpu(*twinRouter, twin, in, entry, spec->dispatch, capture);
      ASSERT_EQ(a.error, "");
      ASSERT_EQ(b.error, "");
      EXPECT_EQ(a.ids, b.ids);
      EXPECT_EQ(a.weights, b.weights);
      EXPECT_EQ(a.sortedSlots, b.sortedSlots);
      EXPECT_EQ(a.capture, b.capture);
    }
  }
}

/// Routers the spec keys cannot write, each on the CPU backend against the
/// golden reference's interpreter.
TEST(CpuBackendPrograms, VariantsMatchTheGoldenInterpreter) {
  const char *programs[] = {
      // Selection from capped sigmoid scores plus a bias; weights from a
      // softmax at temperature 2, renormalized with LFM2's epsilon.
      R"(name: two_scorings
num_experts: 64
program: |
  route(logits, bias) -> (ids, weights):
    sel = sigmoid(logits, softcap: 30)
    ids = topk(sel + bias, 4)
    p = softmax(logits, temperature: 2)
    weights = scale(normalize(gather(p, ids), epsilon: 1e-6), 1.5)
  replay(logits, forced_ids) -> (ids, weights):
    p = softmax(logits, temperature: 2)
    ids = forced(forced_ids)
    weights = scale(normalize(gather(p, ids), epsilon: 1e-6), 1.5)
  dispatch(topk_ids) -> (counts, offsets, sorted_slots, slot_positions):
    counts, offsets, sorted_slots, slot_positions = dispatch(topk_ids)
)",
      // Weights from the biased, group-masked keys themselves, scaled
      // before they are normalized (so the scale cancels but the
      // epsilon does not).
      R"(name: biased_weights
num_experts: 96
logits_dtype: bf16
program: |
  route(logits, bias, capture, layer) -> (ids, weights, captured):
    c = group_mask(sqrtsoftplus(logits) + bias, groups: 12, keep: 3, by: max)
    ids = topk(c, 6)
    weights = normalize(scale(gather(c, ids), 0.5), epsilon: 0.25)
    captured = capture(ids, capture, layer)
)",
      // Hash selection with softmax weights of soft-capped logits.
      R"(name: hash_softcap
num_experts: 32
logits_dtype: f16
program: |
  route_hash(logits, token_ids, hash_table) -> (ids, weights):
    ids = hash(token_ids, hash_table, 3)
    weights = gather(softmax(logits, softcap: 5), ids)
)",
  };
  for (const char *text : programs) {
    RoutingSpec spec = parseProgramSpec(text);
    ASSERT_TRUE(spec.isProgram());
    checkEveryEntryPoint(spec, {}, 77, 5, LogitsStyle::Random);
  }
}

TEST(CpuBackendPrograms, WideLaneListsPickMaskedLogitsByTheLowerId) {
  // Raw logits as keys keep -inf (a masked expert). A row with fewer
  // finite logits than k leaves the streaming lane lists without a bound:
  // the arg-max passes pick the -inf experts by the lower id, as the
  // golden reference does; rows with k or more finite logits stay on the
  // lists.
  RoutingSpec spec = parseProgramSpec(R"(name: wide_masked
num_experts: 1024
program: |
  route(logits) -> (ids, weights):
    l = identity(logits)
    ids = topk(l, 8)
    weights = gather(softmax(logits), ids)
)");
  CpuCompileOptions options;
  options.topk = "lane_lists";
  options.vectorWidth = 32;
  std::unique_ptr<CpuRouter> router = compileRouter(spec, options);
  ASSERT_TRUE(router);
  Inputs in = makeInputs(spec, 40, 17, LogitsStyle::Random);
  Rng rng(5);
  for (int64_t t = 0; t < in.numTokens; ++t) {
    // About 0 to 15 finite logits; a few tokens keep all of them.
    const int64_t finite =
        t % 10 == 9 ? spec.numExperts : rng.uniformInt(0, 15);
    for (int64_t e = 0; e < spec.numExperts; ++e)
      if (rng.uniformInt(0, spec.numExperts - 1) >= finite)
        in.logits[t * spec.numExperts + e] =
            -std::numeric_limits<float>::infinity();
  }
  const CpuResult cpu = runCpu(*router, spec, in, Entry::Route, false);
  ASSERT_EQ(cpu.error, "");
  const golden::RouterResult gold = runGolden(spec, in, Entry::Route);
  ASSERT_TRUE(gold.ok()) << gold.error;
  expectMatchesGolden(spec, in, cpu, gold.outputs, Entry::Route);
}

} // namespace
