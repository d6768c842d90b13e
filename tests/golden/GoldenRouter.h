//===- GoldenRouter.h - Reference semantics of MoE routing ------*- C++ -*-===//
//
// The golden reference: a plain, double-precision, single-threaded definition
// of what a routing spec computes. Every backend (CPU and GPU) is checked
// against it, so it favours being obviously correct over being fast. The only
// performance rule is that nothing is quadratic in the number of tokens.
//
// Semantics, per token t with logits l (E values):
//   scores     s = scoring(l), in double, after l /= temperature and
//              l = softcap * tanh(l / softcap) when the spec has them
//              (-inf stays -inf);
//   keys       c = s + bias (score_bias with top-k selection), else c = s;
//   selection  top-k of c (ties to the lower expert index; gating programs
//              may cut it by top-p, leaving -1 in unused slots), optionally only
//              among the best `topkGroups` groups (ties to the lower group
//              index); or ids = hash_table[token_ids[t]]; or, when forced ids
//              are given (router replay), ids = forced_ids[t];
//   weights    w_j = s[id_j] (unbiased), optionally w_j /= sum w +
//              normalizeEpsilon (1e-20 unless the spec says), then
//              w_j *= scalingFactor;
//   dispatch   per-expert counts, exclusive offsets, and the permutation of
//              the slots t*k+j sorted by (expert, slot);
//   permute    permuted[p] = hidden[sorted_slots[p] / k], rows copied;
//   combine    combined[t] = sum_j w[t][j] * expert_output[slot_positions[
//              t*k+j]], in f32 with one fused multiply-add per slot, in slot
//              order (the one place the reference computes in f32: the
//              contract is bit-exact, and the caller rounds once to the
//              hidden type).
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_TESTS_GOLDEN_GOLDENROUTER_H
#define MOEGEN_TESTS_GOLDEN_GOLDENROUTER_H

#include "compiler/spec/RoutingSpec.h"

#include <cstdint>
#include <string>
#include <vector>

namespace moegen::golden {

/// Borrowed views of the runtime inputs of one routing call.
struct RouterInputs {
  int64_t numTokens = 0;
  /// [numTokens, spec.numExperts], row-major, already converted to float.
  const float *logits = nullptr;
  /// [numExperts]; required iff spec.scoreBias and the selection is top-k
  /// (and no forced ids are given); ignored otherwise.
  const float *bias = nullptr;
  /// [numTokens]; required for Selection::Hash (without forced ids).
  const int64_t *tokenIds = nullptr;
  /// [hashVocab, spec.topK]; required for Selection::Hash (without forced ids).
  const int32_t *hashTable = nullptr;
  int64_t hashVocab = 0;
  /// [numTokens, spec.topK]; when non-null the selection is replayed from it
  /// (router replay), whatever spec.selection says; bias, groups and the hash
  /// inputs then play no role and are neither required nor checked.
  const int64_t *forcedIds = nullptr;
  /// [numTokens] (the [T, 1] tensor), already converted to float; required
  /// iff spec.sharedGate.
  const float *sharedGateLogits = nullptr;
};

struct RouterOutputs {
  std::vector<int32_t> topkIds;    ///< [T*k], slot t*k+j
  std::vector<double> topkWeights; ///< [T*k]
  /// [T], sigmoid(shared_gate_logits); filled only when spec.sharedGate.
  std::vector<double> sharedGate;
  // Filled only when spec.dispatch (or by computeDispatch):
  std::vector<int32_t> expertCounts;  ///< [E]
  std::vector<int32_t> expertOffsets; ///< [E+1], exclusive prefix sum
  std::vector<int32_t> sortedSlots; ///< [T*k], slots ordered by (expert, slot)
  std::vector<int32_t> slotPositions; ///< [T*k], inverse of sortedSlots
};

struct RouterResult {
  RouterOutputs outputs;
  /// Empty on success; otherwise one line naming the tensor, the index and
  /// the broken rule, and `outputs` is left empty.
  std::string error;
  bool ok() const { return error.empty(); }
};

/// Scores one token's logits (E values) per the spec's scoring, in double.
/// Logits must be finite or -inf.
std::vector<double> scoreToken(const RoutingSpec &spec, const float *logits);

/// The keys top-k selection compares: scores plus the bias (promoted to
/// double) when `bias` is non-null, else the scores themselves.
std::vector<double> selectionKeys(const std::vector<double> &scores,
                                  const float *bias);

/// Which experts grouped top-k may select: `groups` contiguous groups of
/// keys.size() / groups experts are scored (sum of the two largest keys, or
/// the largest) and the best `topkGroups` stay selectable; equal group scores
/// go to the lower group index. With groups <= 1 every expert is selectable.
std::vector<bool> selectableExperts(const std::vector<double> &keys,
                                    int64_t groups, int64_t topkGroups,
                                    GroupScore groupScore);

/// The `k` selectable experts with the largest keys, in descending order of
/// key; equal keys go to the lower expert index. Fewer than k when fewer
/// experts are selectable (which valid specs exclude).
std::vector<int32_t> topKExperts(const std::vector<double> &keys,
                                 const std::vector<bool> &selectable,
                                 int64_t k);

/// Full routing of all tokens. Precondition: the spec is valid (validated
/// elsewhere); the inputs are checked here, and the first violation (in the
/// order logits, bias, hash inputs, forced ids, the shared gate's logits;
/// lowest token, then lowest index within each) is reported in
/// RouterResult::error.
RouterResult route(const RoutingSpec &spec, const RouterInputs &inputs);

/// Dispatch metadata alone from ids [numTokens*k] (used by route when
/// spec.dispatch). Returns an empty string on success, or one line naming
/// the violation (wrong ids size, an id outside [0, numExperts)) and leaves
/// `out` untouched; checked in every build type, not by assert. With
/// `unusedSlots` (a top-p router) an id of -1 is an unused slot: counted
/// nowhere, its slot position -1, and sortedSlots past the used slots -1.
/// With `capacityFactor` > 0 each expert keeps its first
/// dispatchCapacity(...) slots in slot order and drops the others alike.
std::string computeDispatch(int64_t numExperts, int64_t numTokens,
                            int64_t topK, const std::vector<int32_t> &ids,
                            RouterOutputs &out, bool unusedSlots = false,
                            double capacityFactor = 0.0);

/// Auxiliary-loss-free balancing's step: updated[e] = bias[e] + rate *
/// sign(mean(counts) - counts[e]), the sign decided in integers and the
/// sum in f32. Returns "" or, for the lowest bad expert, the kernels'
/// message (a non-finite bias before a negative count), leaving `updated`
/// untouched.
std::string updateBias(const std::vector<float> &bias,
                       const std::vector<int32_t> &counts, double rate,
                       std::vector<float> &updated);

/// C = ceil(capacityFactor * T * k / E) in double, at most T * k: the
/// slots an expert keeps under a capacity.
int64_t dispatchCapacity(double capacityFactor, int64_t numTokens,
                         int64_t topK, int64_t numExperts);

/// Expert-choice selection (semantics.md, "Expert-choice selection"): each
/// expert takes the expertChoiceCapacity(...) tokens with the largest keys
/// (ties to the lower token), and each token lists the experts that took
/// it, by descending key (ties to the lower expert), at most `topK`, then
/// -1. `keys` is [numTokens * numExperts], compared as f32 by
/// expertChoiceOrder.
std::vector<int32_t> expertChoiceIds(const std::vector<float> &keys,
                                     int64_t numTokens, int64_t numExperts,
                                     int64_t topK, double capacityFactor);
/// c = min(T, ceil(capacityFactor * T / E)) in double.
int64_t expertChoiceCapacity(double capacityFactor, int64_t numTokens,
                             int64_t numExperts);
/// The total order of expert-choice keys: larger f32 values give larger
/// integers, -0 and +0 the same one, a NaN its bits' place (a positive NaN
/// above +inf).
uint32_t expertChoiceOrder(float key);

/// Permute over rows of `hiddenSize` floats (bf16 / f16 rows converted
/// exactly by the caller): permuted[p] = hidden[sortedSlots[p] / topK] for
/// p < numTokens * topK. Returns "" or, for the lowest p whose slot lies
/// outside [0, numTokens * topK), the kernels' one-line message, leaving
/// `permuted` untouched.
std::string permute(int64_t numTokens, int64_t topK, int64_t hiddenSize,
                    const std::vector<float> &hidden,
                    const std::vector<int32_t> &sortedSlots,
                    std::vector<float> &permuted, bool unusedSlots = false);

/// Combine: combined[t][h] = fma chain over j of weights[t*k+j] *
/// expertOutput[slotPositions[t*k+j]][h], from 0.0f, in f32. Returns "" or
/// the message for the lowest bad position, leaving `combined` untouched.
std::string combine(int64_t numTokens, int64_t topK, int64_t hiddenSize,
                    const std::vector<float> &weights,
                    const std::vector<int32_t> &slotPositions,
                    const std::vector<float> &expertOutput,
                    std::vector<float> &combined, bool unusedSlots = false);

} // namespace moegen::golden

#endif // MOEGEN_TESTS_GOLDEN_GOLDENROUTER_H
