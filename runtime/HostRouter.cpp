//===- HostRouter.cpp - A router over host buffers, any backend -----------===//

#include "runtime/HostRouter.h"
#include "runtime/Error.h"
#include "runtime/Manifest.h"

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
  facts.replay = manifest.find(EntryKind::Replay) != nullptr;
  facts.dispatch = manifest.find(EntryKind::Dispatch) != nullptr;
  return facts;
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
