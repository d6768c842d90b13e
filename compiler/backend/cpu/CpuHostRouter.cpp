//===- CpuHostRouter.cpp - The CPU backend as a HostRouter ----------------===//

#include "compiler/backend/cpu/CpuHostRouter.h"

namespace moegen::cpu {

rt::RouterFacts routerFactsOf(const RoutingSpec &spec) {
  rt::RouterFacts facts;
  facts.name = spec.name;
  facts.numExperts = spec.numExperts;
  facts.topK = spec.topK;
  facts.logits =
      spec.logitsDType == LogitsDType::BF16  ? rt::RouterFacts::Logits::BF16
      : spec.logitsDType == LogitsDType::F16 ? rt::RouterFacts::Logits::F16
                                             : rt::RouterFacts::Logits::F32;
  facts.scoreBias = spec.scoreBias;
  facts.hashSelection = spec.selection == Selection::Hash;
  facts.capture = spec.capture;
  facts.sharedGate = spec.sharedGate;
  facts.replay = spec.replay;
  facts.dispatch = spec.dispatch;
  facts.unusedSlots = spec.unusedSlots;
  facts.capacityFactor = spec.capacityFactor;
  facts.updateBias = spec.updateBias;
  facts.permute = spec.permute;
  facts.hidden =
      spec.hiddenDType == LogitsDType::BF16  ? rt::RouterFacts::Logits::BF16
      : spec.hiddenDType == LogitsDType::F16 ? rt::RouterFacts::Logits::F16
                                             : rt::RouterFacts::Logits::F32;
  facts.hiddenSize = spec.hiddenSize;
  return facts;
}

CpuHostRouter::CpuHostRouter(std::unique_ptr<CpuRouter> router)
    : router(std::move(router)),
      routerFacts(routerFactsOf(this->router->spec())) {}

llvm::Expected<std::unique_ptr<CpuHostRouter>>
CpuHostRouter::compile(const RoutingSpec &spec,
                       const CpuCompileOptions &options) {
  llvm::Expected<std::unique_ptr<CpuRouter>> router =
      CpuRouter::compile(spec, options);
  if (!router)
    return router.takeError();
  return std::make_unique<CpuHostRouter>(std::move(*router));
}

std::string CpuHostRouter::run(const rt::HostRouteCall &call) {
  // CpuRouter takes the same call; it picks replay by the forced ids and
  // route or route_hash by the spec, which the inputs were checked against
  // (rt::checkInputsUsed).
  return router->run(call);
}

std::string CpuHostRouter::permute(const rt::HostPermuteCall &call) {
  return router->permute(call);
}

std::string CpuHostRouter::combine(const rt::HostCombineCall &call) {
  return router->combine(call);
}

std::string CpuHostRouter::updateBias(const rt::HostUpdateBiasCall &call) {
  return router->updateBias(call);
}

} // namespace moegen::cpu
