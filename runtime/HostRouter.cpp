//===- HostRouter.cpp - A router over host buffers, any backend -----------===//

#include "runtime/HostRouter.h"
#include "runtime/Error.h"
#include "runtime/Manifest.h"

#include <algorithm>
#include <limits>

namespace moegen::rt {

RouterFacts routerFactsOf(const Manifest &manifest) {
  RouterFacts facts;
  facts.name = manifest.specName;
  facts.numExperts = manifest.numExperts;
  facts.topK = manifest.topK;
  facts.logits = manifest.logitsDType == DType::BF16 ? RouterFacts::Logits::BF16
                 : manifest.logitsDType == DType::F16
                     ? RouterFacts::Logits::F16
                     : RouterFacts::Logits::F32;
  // A spec has route or route_hash, never both; its parameters say the rest.
  const Kernel *route = manifest.find(EntryKind::Route);
  facts.hashSelection = route == nullptr;
  facts.scoreBias = route && route->findParam("bias") >= 0;
  facts.capture = manifest.captureDType.has_value();
  const Kernel *selection = route ? route : manifest.find(EntryKind::RouteHash);
  facts.sharedGate =
      selection && selection->findParam("shared_gate_logits") >= 0;
  facts.replay = manifest.find(EntryKind::Replay) != nullptr;
  facts.dispatch = manifest.find(EntryKind::Dispatch) != nullptr;
  facts.unusedSlots = manifest.unusedSlots;
  facts.capacityFactor = manifest.capacityFactor;
  facts.updateBias = manifest.find(EntryKind::UpdateBias) != nullptr;
  facts.permute = manifest.find(EntryKind::Permute) != nullptr &&
                  manifest.find(EntryKind::Combine) != nullptr &&
                  manifest.hiddenDType.has_value();
  if (manifest.hiddenDType)
    facts.hidden = *manifest.hiddenDType == DType::F32
                       ? RouterFacts::Logits::F32
                   : *manifest.hiddenDType == DType::F16
                       ? RouterFacts::Logits::F16
                       : RouterFacts::Logits::BF16;
  facts.hiddenSize = manifest.hiddenSize;
  return facts;
}

std::string checkUpdateBiasCall(const RouterFacts &facts,
                                const HostUpdateBiasCall &call) {
  if (!facts.updateBias)
    return "bias: the router has no update_bias entry point (a gating "
           "program's update_bias(bias, expert_counts))";
  if (!call.bias || !call.expertCounts || !call.updatedBias)
    return "bias, expert_counts, updated_bias: every buffer is required";
  return {};
}

std::string checkRowMovementSizes(const RouterFacts &facts, const char *entry,
                                  int64_t numTokens, int64_t hiddenSize) {
  if (!facts.permute)
    return std::string(entry) +
           ": the spec has no permute and combine entry points (set "
           "permute: true)";
  if (numTokens < 0)
    return "num_tokens = " + std::to_string(numTokens) +
           ": must not be negative";
  const int64_t k = facts.topK;
  if (numTokens > std::numeric_limits<int32_t>::max() / k)
    return "num_tokens = " + std::to_string(numTokens) +
           ": num_tokens * top_k must fit in int32";
  if (hiddenSize < 1)
    return "hidden_size = " + std::to_string(hiddenSize) +
           ": must be at least 1";
  // The largest buffer, [T * k, H], must be addressable in bytes.
  const int64_t rowBytes = static_cast<int64_t>(facts.hiddenBytes());
  if (hiddenSize > std::numeric_limits<int64_t>::max() / rowBytes /
                       std::max<int64_t>(1, numTokens * k))
    return "hidden_size = " + std::to_string(hiddenSize) +
           ": num_tokens * top_k * hidden_size elements overflow";
  return {};
}

std::string checkPermuteCall(const RouterFacts &facts,
                             const HostPermuteCall &call) {
  if (std::string error =
          checkRowMovementSizes(facts, "permute", call.numTokens, call.hiddenSize);
      !error.empty())
    return error;
  if (call.numTokens > 0 &&
      (!call.hidden || !call.sortedSlots || !call.permuted))
    return "hidden, sorted_slots, permuted: buffers required when num_tokens "
           "> 0";
  return {};
}

std::string checkCombineCall(const RouterFacts &facts,
                             const HostCombineCall &call) {
  if (std::string error =
          checkRowMovementSizes(facts, "combine", call.numTokens, call.hiddenSize);
      !error.empty())
    return error;
  if (call.numTokens > 0 && (!call.topkWeights || !call.slotPositions ||
                             !call.expertOutput || !call.combined))
    return "topk_weights, slot_positions, expert_output, combined: buffers "
           "required when num_tokens > 0";
  return {};
}

HostEntry entryOf(const HostRouteCall &call) {
  if (call.forcedIds)
    return HostEntry::Replay;
  if (call.tokenIds || call.hashTable)
    return HostEntry::RouteHash;
  return HostEntry::Route;
}

std::string HostRouter::runAs(HostEntry entry, const HostRouteCall &call) {
  static constexpr const char *kNames[] = {"route", "route_hash", "replay"};
  HostEntry given = entryOf(call);
  if (given != entry)
    throw Error(Error::Kind::InvalidArgument,
                std::string(kNames[static_cast<int>(entry)]) +
                    ": the call's inputs are those of " +
                    kNames[static_cast<int>(given)]);
  return run(call);
}

} // namespace moegen::rt
