//===- RoutingSpec.cpp - Spellings and rules of the spec language ---------===//
//
// validateRoutingSpec is the single statement of the spec language's value
// rules; the YAML parser only checks syntax, types and spellings and then
// defers to it, so a spec built in code obeys exactly the same rules.
//
//===----------------------------------------------------------------------===//

#include "compiler/spec/RoutingSpec.h"
#include "compiler/spec/Program.h"
#include "support/Quote.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

namespace moegen {

std::string_view toString(Scoring scoring) {
  switch (scoring) {
  case Scoring::Softmax:
    return "softmax";
  case Scoring::Sigmoid:
    return "sigmoid";
  case Scoring::SqrtSoftplus:
    return "sqrtsoftplus";
  case Scoring::Identity:
    return "identity";
  }
  return "?";
}

std::string_view toString(Selection selection) {
  return selection == Selection::TopK ? "topk" : "hash";
}

std::string_view toString(GroupScore groupScore) {
  return groupScore == GroupScore::Top2Sum ? "top2_sum" : "max";
}

std::string_view toString(LogitsDType dtype) {
  switch (dtype) {
  case LogitsDType::F32:
    return "f32";
  case LogitsDType::BF16:
    return "bf16";
  case LogitsDType::F16:
    return "f16";
  }
  return "?";
}

std::optional<Scoring> parseScoring(std::string_view text) {
  for (Scoring s : {Scoring::Softmax, Scoring::Sigmoid, Scoring::SqrtSoftplus})
    if (toString(s) == text)
      return s;
  return std::nullopt;
}

std::optional<Selection> parseSelection(std::string_view text) {
  for (Selection s : {Selection::TopK, Selection::Hash})
    if (toString(s) == text)
      return s;
  return std::nullopt;
}

std::optional<GroupScore> parseGroupScore(std::string_view text) {
  for (GroupScore g : {GroupScore::Top2Sum, GroupScore::Max})
    if (toString(g) == text)
      return g;
  return std::nullopt;
}

std::optional<LogitsDType> parseLogitsDType(std::string_view text) {
  for (LogitsDType d : {LogitsDType::F32, LogitsDType::BF16, LogitsDType::F16})
    if (toString(d) == text)
      return d;
  return std::nullopt;
}

std::string quoteForDiagnostic(std::string_view text, size_t maxLength) {
  return support::escape(text, support::QuoteStyle{maxLength});
}

namespace {

bool isIdentifier(const std::string &name) {
  auto isAlpha = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  };
  auto isAlnum = [&](char c) { return isAlpha(c) || (c >= '0' && c <= '9'); };
  return !name.empty() && isAlpha(name[0]) &&
         std::all_of(name.begin(), name.end(), isAlnum);
}

// The normal f32 range, rounded inwards to 8 digits so that the bounds the
// message and docs print are themselves accepted.
constexpr double kMaxF32 = 3.4028234e38;
constexpr double kMinNormalF32 = 1.1754944e-38;
static_assert(kMaxF32 <= std::numeric_limits<float>::max() &&
              kMinNormalF32 >= std::numeric_limits<float>::min());
constexpr const char *kMaxF32Text = "3.4028234e38";
constexpr const char *kMinNormalF32Text = "1.1754944e-38";

template <typename... Parts>
SpecViolation violation(const char *key, const Parts &...parts) {
  std::ostringstream os;
  (os << ... << parts);
  return {key, os.str()};
}

} // namespace

std::optional<SpecViolation> validateRoutingSpec(const RoutingSpec &spec) {
  if (!isIdentifier(spec.name) ||
      spec.name.size() > static_cast<size_t>(kMaxNameLength))
    return violation("name", "'name' = '", quoteForDiagnostic(spec.name),
                     "' must be an identifier ([A-Za-z_][A-Za-z0-9_]*, at "
                     "most ",
                     kMaxNameLength, " characters)");

  const int64_t experts = spec.numExperts;
  if (experts < kMinExperts || experts > kMaxExperts)
    return violation("num_experts", "'num_experts' = ", experts,
                     " must be in [", kMinExperts, ", ", kMaxExperts, "]");

  const int64_t maxK = std::min(kMaxTopK, experts);
  if (spec.topK < 1 || spec.topK > maxK)
    return violation("top_k", "'top_k' = ", spec.topK, " must be in [1, ",
                     maxK, "] (at most min(", kMaxTopK,
                     ", num_experts = ", experts, "))");

  if (spec.groups < 1 || spec.groups > experts)
    return violation("groups", "'groups' = ", spec.groups, " must be in [1, ",
                     experts, "] (at most num_experts)");
  if (experts % spec.groups != 0)
    return violation("groups", "'groups' = ", spec.groups,
                     " must divide num_experts = ", experts,
                     " into equal contiguous groups");
  if (spec.topkGroups < 1 || spec.topkGroups > spec.groups)
    return violation("topk_groups", "'topk_groups' = ", spec.topkGroups,
                     " must be in [1, groups = ", spec.groups, "]");

  if (spec.isGrouped()) {
    const int64_t perGroup = spec.expertsPerGroup();
    if (spec.groupScore == GroupScore::Top2Sum && perGroup < 2)
      return violation("group_score",
                       "'group_score' = top2_sum needs at least 2 experts per "
                       "group, but num_experts / groups = ",
                       perGroup, " (use 'max' or fewer groups)");
    const int64_t selectable = spec.topkGroups * perGroup;
    if (spec.topK > selectable)
      return violation("top_k", "'top_k' = ", spec.topK, " exceeds the ",
                       selectable, " experts in the topk_groups = ",
                       spec.topkGroups, " kept groups of ", perGroup,
                       " (top_k <= topk_groups * num_experts / groups)");
  }

  if (!std::isfinite(spec.scalingFactor) || spec.scalingFactor <= 0)
    return violation("scaling_factor", "'scaling_factor' = ",
                     spec.scalingFactor, " must be finite and > 0");
  // The weights are scaled in f32: a factor beyond f32's largest value
  // would give infinite weights, one below its smallest normal value zero
  // or denormal weights from finite logits. Compared as doubles, so no
  // out-of-range conversion is ever made.
  if (spec.scalingFactor > kMaxF32 || spec.scalingFactor < kMinNormalF32)
    return violation("scaling_factor",
                     "'scaling_factor' = ", spec.scalingFactor,
                     " must be a normal f32 value, in [", kMinNormalF32Text,
                     ", ", kMaxF32Text, "] (the weights are scaled in f32)");

  // Both divide logits in f32: normal f32 values, as scaling_factor.
  if (!std::isfinite(spec.temperature) || spec.temperature > kMaxF32 ||
      spec.temperature < kMinNormalF32)
    return violation("temperature", "'temperature' = ", spec.temperature,
                     " must be a normal f32 value > 0, in [",
                     kMinNormalF32Text, ", ", kMaxF32Text,
                     "] (1 leaves the logits alone)");
  if (spec.logitSoftcap != 0.0 &&
      (!std::isfinite(spec.logitSoftcap) || spec.logitSoftcap > kMaxF32 ||
       spec.logitSoftcap < kMinNormalF32))
    return violation("logit_softcap", "'logit_softcap' = ", spec.logitSoftcap,
                     " must be 0 (none) or a normal f32 value > 0, in [",
                     kMinNormalF32Text, ", ", kMaxF32Text, "]");
  if (spec.normalizeEpsilon != kNormalizeEpsilon) {
    if (!spec.normalize)
      return violation("normalize_epsilon", "'normalize_epsilon' = ",
                       spec.normalizeEpsilon,
                       " has no effect without normalize: true; remove it");
    // Added in f32: 0 or a normal f32 value, as for scaling_factor.
    if (!std::isfinite(spec.normalizeEpsilon) ||
        (spec.normalizeEpsilon != 0 &&
         (spec.normalizeEpsilon > kMaxF32 ||
          spec.normalizeEpsilon < kMinNormalF32)))
      return violation("normalize_epsilon", "'normalize_epsilon' = ",
                       spec.normalizeEpsilon,
                       " must be 0 or a normal f32 value, in [",
                       kMinNormalF32Text, ", ", kMaxF32Text,
                       "] (it is added in f32)");
  }
  if (spec.hiddenSize < 1 || spec.hiddenSize > kMaxHiddenSize)
    return violation("hidden_size", "'hidden_size' = ", spec.hiddenSize,
                     " must be in [1, ", kMaxHiddenSize, "]");
  if (!spec.permute && spec.hiddenDType != RoutingSpec().hiddenDType)
    return violation("hidden_dtype", "'hidden_dtype' = ",
                     toString(spec.hiddenDType),
                     " has no effect without permute: true; remove it");
  if (!spec.permute && spec.hiddenSize != RoutingSpec().hiddenSize)
    return violation("hidden_size", "'hidden_size' = ", spec.hiddenSize,
                     " has no effect without permute: true; remove it");
  if (spec.permute && !spec.dispatch)
    return violation("permute",
                     "'permute' = true needs dispatch: true (permute reads "
                     "dispatch's sorted_slots, combine its slot_positions)");

  if (spec.isProgram()) {
    // The keys a program replaces keep their defaults, and the facts it
    // determines are the ones it states.
    RoutingSpec keys;
    if (spec.scoring != keys.scoring || spec.temperature != keys.temperature ||
        spec.logitSoftcap != keys.logitSoftcap || spec.groups != keys.groups ||
        spec.topkGroups != keys.topkGroups ||
        spec.groupScore != keys.groupScore || spec.normalize != keys.normalize ||
        spec.normalizeEpsilon != keys.normalizeEpsilon ||
        spec.scalingFactor != keys.scalingFactor)
      return violation("program",
                       "a spec with 'program' takes no scoring, selection or "
                       "weighting keys: the program states them");
    program::ProgramError error;
    std::optional<program::Program> parsed = program::parseProgram(
        spec.program, {spec.numExperts, spec.logitsDType, spec.hiddenDType},
        error);
    if (!parsed)
      return violation("program", "program:", error.loc.line, ":",
                       error.loc.column, ": ", error.message);
    RoutingSpec facts = spec;
    program::applyProgramFacts(*parsed, facts);
    if (facts.topK != spec.topK || facts.selection != spec.selection ||
        facts.scoreBias != spec.scoreBias || facts.capture != spec.capture ||
        facts.replay != spec.replay || facts.dispatch != spec.dispatch ||
        facts.permute != spec.permute || facts.sharedGate != spec.sharedGate)
      return violation("program",
                       "the spec's top_k, selection, score_bias, capture, "
                       "replay, dispatch, permute or shared_expert_gate "
                       "differ from what its program states (set them with "
                       "applyProgramFacts)");
    return std::nullopt;
  }

  if (spec.selection == Selection::Hash) {
    if (spec.scoreBias)
      return violation("score_bias",
                       "'score_bias' = true has no effect with selection: hash "
                       "(the bias only steers top-k selection); remove it");
    if (spec.isGrouped())
      return violation("groups", "'groups' = ", spec.groups,
                       " has no effect with selection: hash (groups only "
                       "restrict top-k selection); remove it");
  }
  return std::nullopt;
}

} // namespace moegen
