//===- RoutingSpec.h - The routing spec, as plain C++ ----------*- C++ -*-===//
//
// A routing spec describes one MoE gating layer: how experts are scored,
// selected and weighted, and which extra entry points to emit. It is parsed
// from YAML (SpecParser.h), turned into `moe` dialect IR (SpecToMoE.h) and
// executed by the golden reference (tests/golden) and the backends.
//
// This header is deliberately free of LLVM/MLIR so that the runtime and the
// golden reference can use it without linking the compiler.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_COMPILER_SPEC_ROUTINGSPEC_H
#define MOEGEN_COMPILER_SPEC_ROUTINGSPEC_H

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace moegen {

/// How gate logits become per-expert scores s.
enum class Scoring {
  Softmax,      ///< s = exp(l - max l) / sum exp(l - max l)
  Sigmoid,      ///< s = 1 / (1 + exp(-l))
  SqrtSoftplus, ///< s = sqrt(log(1 + exp(l))), softplus computed stably
  /// s = l: gating programs only (`identity(logits)`); the `scoring` key
  /// does not offer it, since selecting and weighting by raw logits needs
  /// more than the keys can say (Phi-3.5-MoE's sparsemixer).
  Identity,
};

/// How the k experts of a token are chosen.
enum class Selection {
  TopK, ///< the k largest selection keys (optionally within the best groups)
  Hash, ///< ids = hash_table[token_id], a [vocab, k] int32 table
};

/// How a group of experts is scored for grouped top-k.
enum class GroupScore {
  Top2Sum, ///< sum of the two largest selection keys in the group
  Max,     ///< the largest selection key in the group
};

/// Element type of the logits tensor. Scores are always computed in fp32.
enum class LogitsDType { F32, BF16, F16 };

/// Limits of the spec language, shared by the parser, the dialect verifiers'
/// documentation and the tests.
inline constexpr int64_t kMinExperts = 2;
inline constexpr int64_t kMaxExperts = 8192;
inline constexpr int64_t kMaxTopK = 64;
inline constexpr int64_t kMaxNameLength = 128;
/// The hidden sizes a spec may name as its default (permute and combine take
/// any H at run time; the default sizes what tools generate).
inline constexpr int64_t kMaxHiddenSize = 65536;
/// Added to the sum of the selected weights before normalizing, unless the
/// spec says otherwise (normalize_epsilon: LFM2 adds 1e-6, for one).
inline constexpr double kNormalizeEpsilon = 1e-20;

struct RoutingSpec {
  std::string name;
  int64_t numExperts = 0;
  int64_t topK = 0;
  Scoring scoring = Scoring::Softmax;
  /// Logits are divided by the temperature (1: none) and then soft-capped,
  /// l = cap * tanh(l / cap) (0: none), before scoring; -inf stays -inf.
  double temperature = 1.0;
  double logitSoftcap = 0.0;
  Selection selection = Selection::TopK;
  /// A per-expert bias added to the scores for selection only.
  bool scoreBias = false;
  /// Grouped top-k: `groups` contiguous groups of numExperts / groups experts,
  /// of which the best `topkGroups` (by `groupScore`) stay selectable.
  int64_t groups = 1;
  int64_t topkGroups = 1;
  GroupScore groupScore = GroupScore::Top2Sum;
  /// w_j /= (sum_j w_j + normalizeEpsilon) when set.
  bool normalize = false;
  double normalizeEpsilon = kNormalizeEpsilon;
  /// w_j *= scalingFactor, after normalization.
  double scalingFactor = 1.0;
  /// Emit the forced-ids entry point (router replay).
  bool replay = false;
  /// Emit expert counts, offsets and the token permutation.
  bool dispatch = false;
  /// Write the selected ids to a capture buffer.
  bool capture = false;
  /// Route, route_hash and replay also gate the shared expert (Qwen2-MoE):
  /// shared_gate [T, 1] = sigmoid(shared_gate_logits [T, 1]).
  bool sharedGate = false;
  /// The selection is top-p or expert choice (gating programs only): a
  /// token may use fewer than k slots, the rest hold the id -1, which
  /// replay, dispatch, permute and combine accept (docs/semantics.md,
  /// "Top-p selection").
  bool unusedSlots = false;
  /// The route selects by expert choice (gating programs only): it spans
  /// the tokens of a call, one task on the host, one cooperative grid on
  /// the GPU, and its schedule has no tokens per task or top-k method to
  /// tune (docs/semantics.md, "Expert-choice selection").
  bool expertChoice = false;
  /// Dispatch keeps at most ceil(capacityFactor * T * k / E) slots per
  /// expert, the first in slot order, and drops the rest (gating programs
  /// only; 0 for no capacity). docs/semantics.md §10, "Capacity".
  double capacityFactor = 0.0;
  /// Emit the update_bias entry point (auxiliary-loss-free balancing;
  /// gating programs only).
  bool updateBias = false;
  LogitsDType logitsDType = LogitsDType::F32;
  /// Emit the permute and combine entry points (hidden rows into expert
  /// order and the weighted sum back); needs dispatch, whose sorted_slots
  /// and slot_positions they read.
  bool permute = false;
  /// Their row type (the same three types as logits) and default H.
  LogitsDType hiddenDType = LogitsDType::BF16;
  int64_t hiddenSize = 4096;

  /// A gating program (Program.h, docs/spec-language.md) in place of the
  /// keys above: when set, the program alone says how experts are scored,
  /// selected and weighted, and topK, selection, scoreBias, capture, replay,
  /// dispatch, permute and sharedGate are the facts it determines
  /// (applyProgramFacts);
  /// the other keys keep their defaults.
  std::string program;

  bool isGrouped() const { return groups > 1; }
  bool isProgram() const { return !program.empty(); }
  int64_t expertsPerGroup() const { return numExperts / groups; }
};

/// Spelling of each enumerator as it appears in YAML and in the IR.
std::string_view toString(Scoring scoring);
std::string_view toString(Selection selection);
std::string_view toString(GroupScore groupScore);
std::string_view toString(LogitsDType dtype);

std::optional<Scoring> parseScoring(std::string_view text);
std::optional<Selection> parseSelection(std::string_view text);
std::optional<GroupScore> parseGroupScore(std::string_view text);
std::optional<LogitsDType> parseLogitsDType(std::string_view text);

/// `text` as it may appear inside a one-line diagnostic: control characters
/// and quotes escaped (\n, \t, \xNN), and cut to `maxLength` characters
/// with "..." so that no message spans lines or floods a terminal. The same
/// as support::escape (support/Quote.h), kept for the spec layer.
std::string quoteForDiagnostic(std::string_view text, size_t maxLength = 40);

/// A broken rule of the spec language: the key it is reported at and a
/// message that names the rule and what is allowed.
struct SpecViolation {
  std::string key;
  std::string message;
};

/// Checks every value and cross-key rule of a spec built in code or parsed
/// from YAML. Returns the first violation, in key order, or nullopt.
std::optional<SpecViolation> validateRoutingSpec(const RoutingSpec &spec);

} // namespace moegen

#endif // MOEGEN_COMPILER_SPEC_ROUTINGSPEC_H
