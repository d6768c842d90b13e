//===- CudaHostRouter.cpp - The CUDA kernels over host buffers ------------===//

#include "runtime/cuda/CudaHostRouter.h"
#include "abi/KernelError.h"

#include <algorithm>
#include <cmath>

namespace moegen::rt {

CudaHostRouter::CudaHostRouter(std::unique_ptr<CudaRouter> router)
    : router(std::move(router)),
      routerFacts(routerFactsOf(this->router->manifest())) {}

std::unique_ptr<CudaHostRouter>
CudaHostRouter::load(const std::string &directory, const LoadOptions &options) {
  return std::make_unique<CudaHostRouter>(CudaRouter::load(directory, options));
}

CUdeviceptr CudaHostRouter::stage(Slot slot, const void *host, size_t bytes) {
  DeviceBuffer &buffer = buffers[slot];
  if (buffer.size() < std::max<size_t>(bytes, 8))
    buffer = router->allocate(std::max<size_t>(bytes, 8));
  if (host && bytes)
    buffer.upload(host, bytes, nullptr);
  return buffer.get();
}

void CudaHostRouter::fetch(Slot slot, void *host, size_t bytes) const {
  if (host && bytes)
    buffers[slot].download(host, bytes, nullptr);
}

std::string CudaHostRouter::run(const HostRouteCall &call) {
  const int64_t t = call.numTokens, e = routerFacts.numExperts,
                k = routerFacts.topK;
  const size_t ids = static_cast<size_t>(t * k) * 4;
  const size_t captureSize = static_cast<size_t>(t * call.captureLayers * k) *
                             routerFacts.captureElementBytes();
  RouteInputs inputs;
  inputs.numTokens = t;
  inputs.logits = stage(Logits, call.logits, t * e * routerFacts.logitBytes());
  if (call.bias)
    inputs.bias = stage(Bias, call.bias, e * 4);
  if (call.tokenIds) {
    inputs.tokenIds = stage(TokenIds, call.tokenIds, t * 4);
    inputs.hashTable = stage(HashTable, call.hashTable, call.hashVocab * k * 4);
    inputs.hashVocab = call.hashVocab;
  }
  if (call.forcedIds)
    inputs.forcedIds = stage(ForcedIds, call.forcedIds, ids);
  if (call.captureBuffer) {
    inputs.capture = stage(Capture, call.captureBuffer, captureSize);
    inputs.captureLayers = call.captureLayers;
    inputs.captureLayer = call.captureLayer;
  }
  if (call.sharedGateLogits)
    inputs.sharedGateLogits = stage(SharedGateLogits, call.sharedGateLogits,
                                    t * routerFacts.logitBytes());
  RouteOutputs outputs;
  outputs.topkIds = stage(TopkIds, nullptr, ids);
  outputs.topkWeights = stage(TopkWeights, nullptr, ids);
  if (call.sharedGate)
    outputs.sharedGate = stage(SharedGate, nullptr, t * 4);
  if (call.expertCounts) {
    outputs.expertCounts = stage(ExpertCounts, nullptr, e * 4);
    outputs.expertOffsets = stage(ExpertOffsets, nullptr, (e + 1) * 4);
    outputs.sortedSlots = stage(SortedSlots, nullptr, ids);
    outputs.slotPositions = stage(SlotPositions, nullptr, ids);
  }
  switch (entryOf(call)) {
  case HostEntry::Replay:
    router->replay(inputs, outputs, nullptr);
    break;
  case HostEntry::RouteHash:
    router->routeHash(inputs, outputs, nullptr);
    break;
  case HostEntry::Route:
    router->route(inputs, outputs, nullptr);
    break;
  }
  std::string message = router->readError(nullptr);
  // The bias is checked on the host, as the CPU backend does, and reported
  // after the logits (docs/semantics.md §2).
  if (message.empty() || message.rfind("logits[", 0) != 0)
    for (int64_t x = 0; call.bias && x < e; ++x)
      if (!std::isfinite(call.bias[x]))
        return "bias[" + std::to_string(x) +
               "] = " + formatFloatForMessage(call.bias[x]) +
               ": must be finite";
  if (!message.empty())
    return message;
  fetch(TopkIds, call.topkIds, ids);
  fetch(TopkWeights, call.topkWeights, ids);
  if (call.expertCounts) {
    fetch(ExpertCounts, call.expertCounts, e * 4);
    fetch(ExpertOffsets, call.expertOffsets, (e + 1) * 4);
    fetch(SortedSlots, call.sortedSlots, ids);
    fetch(SlotPositions, call.slotPositions, ids);
  }
  if (call.captureBuffer)
    fetch(Capture, call.captureBuffer, captureSize);
  fetch(SharedGate, call.sharedGate, t * 4);
  return "";
}

std::string CudaHostRouter::permute(const HostPermuteCall &call) {
  if (std::string error = checkPermuteCall(routerFacts, call); !error.empty())
    return error;
  const int64_t t = call.numTokens, k = routerFacts.topK;
  const size_t row = size_t(call.hiddenSize) * routerFacts.hiddenBytes();
  PermuteArgs args;
  args.numTokens = t;
  args.hiddenSize = call.hiddenSize;
  args.hidden = stage(HiddenIn, call.hidden, size_t(t) * row);
  args.sortedSlots = stage(SortedSlots, call.sortedSlots, size_t(t * k) * 4);
  args.permuted = stage(HiddenOut, nullptr, size_t(t * k) * row);
  router->permute(args, nullptr);
  if (std::string message = router->readError(nullptr);
      !message.empty())
    return message;
  fetch(HiddenOut, call.permuted, size_t(t * k) * row);
  return "";
}

std::string CudaHostRouter::combine(const HostCombineCall &call) {
  if (std::string error = checkCombineCall(routerFacts, call); !error.empty())
    return error;
  const int64_t t = call.numTokens, k = routerFacts.topK;
  const size_t row = size_t(call.hiddenSize) * routerFacts.hiddenBytes();
  CombineArgs args;
  args.numTokens = t;
  args.hiddenSize = call.hiddenSize;
  args.topkWeights = stage(TopkWeights, call.topkWeights, size_t(t * k) * 4);
  args.slotPositions =
      stage(SlotPositions, call.slotPositions, size_t(t * k) * 4);
  args.expertOutput = stage(HiddenIn, call.expertOutput, size_t(t * k) * row);
  args.combined = stage(HiddenOut, nullptr, size_t(t) * row);
  router->combine(args, nullptr);
  if (std::string message = router->readError(nullptr);
      !message.empty())
    return message;
  fetch(HiddenOut, call.combined, size_t(t) * row);
  return "";
}

std::string CudaHostRouter::updateBias(const HostUpdateBiasCall &call) {
  if (std::string error = checkUpdateBiasCall(routerFacts, call);
      !error.empty())
    return error;
  const size_t bytes = size_t(routerFacts.numExperts) * 4;
  UpdateBiasArgs args;
  args.bias = stage(HiddenIn, call.bias, bytes);
  args.expertCounts = stage(ExpertCounts, call.expertCounts, bytes);
  args.updatedBias = stage(HiddenOut, nullptr, bytes);
  router->updateBias(args, nullptr);
  if (std::string message = router->readError(nullptr);
      !message.empty())
    return message;
  fetch(HiddenOut, call.updatedBias, bytes);
  return "";
}

} // namespace moegen::rt
