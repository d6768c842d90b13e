//===- HostRouter.h - A router over host buffers, any backend ---*- C++ -*-===//
//
// One routing call over host memory, whatever runs it: the CPU backend
// (moegen::cpu::CpuHostRouter, on the compiler side) or the NVPTX kernels
// through the CUDA runtime (moegen::rt::CudaHostRouter, which uploads the
// inputs, launches, and downloads the outputs). Tools, tests and samples
// that feed .npy files or host vectors to a router go through this
// interface and RouterInputs.h, so that they share one upload / download /
// check path; engines that keep tensors on the device use CudaRouter.
//
// Plain C++20: no LLVM, no MLIR, no CUDA.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_RUNTIME_HOSTROUTER_H
#define MOEGEN_RUNTIME_HOSTROUTER_H

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace moegen::abi {
struct Manifest;
} // namespace moegen::abi

namespace moegen::rt {

using abi::Manifest;

/// What a caller must know of a router to feed it: the spec's facts that
/// decide which tensors a call takes, their shapes and dtypes.
struct RouterFacts {
  enum class Logits { F32, BF16, F16 };

  std::string name;
  int64_t numExperts = 0;
  int64_t topK = 0;
  Logits logits = Logits::F32;
  /// route takes a bias [E] (spec score_bias: true).
  bool scoreBias = false;
  /// Selection by token id and hash table (route_hash) instead of top-k.
  bool hashSelection = false;
  /// route / route_hash write a capture buffer.
  bool capture = false;
  /// The replay entry point exists.
  bool replay = false;
  /// Route, route_hash and replay also gate the shared expert: they take
  /// shared_gate_logits [T, 1] (the logits' type) and write shared_gate
  /// [T, 1] f32 (spec shared_expert_gate: true).
  bool sharedGate = false;
  /// Dispatch metadata follows every call.
  bool dispatch = false;
  /// The route selects by top-p: ids may hold -1 in unused slots (replay
  /// and dispatch accept it; docs/semantics.md, "Top-p selection").
  bool unusedSlots = false;
  /// Dispatch keeps at most ceil(capacityFactor * T * k / E) slots per
  /// expert and marks the others' positions -1; 0 for no capacity.
  double capacityFactor = 0.0;
  /// The update_bias entry point exists (auxiliary-loss-free balancing).
  bool updateBias = false;
  /// The permute and combine entry points exist, over rows of `hidden`
  /// (the same three types as logits); `hiddenSize` is the spec's default
  /// H (calls give their own).
  bool permute = false;
  Logits hidden = Logits::BF16;
  int64_t hiddenSize = 0;

  /// Bytes per hidden element.
  size_t hiddenBytes() const { return hidden == Logits::F32 ? 4 : 2; }

  /// Bytes per logit: 4 for f32, 2 for the bf16 / f16 bit patterns.
  size_t logitBytes() const { return logits == Logits::F32 ? 4 : 2; }
  /// Capture elements are int16 while expert ids fit (vLLM's layout).
  size_t captureElementBytes() const { return numExperts <= 32767 ? 2 : 4; }
};

/// The facts of a kernel directory, from its manifest's entry points and
/// their parameters.
RouterFacts routerFactsOf(const Manifest &manifest);

/// One routing call. Tensors are dense, row-major host memory owned by the
/// caller; an empty tensor (T = 0) still needs a non-null pointer, since
/// null means "not given". E = num_experts, k = top_k.
struct HostRouteCall {
  int64_t numTokens = 0;
  /// [T, E] of the facts' logits type: float, or bf16 / f16 bit patterns.
  const void *logits = nullptr;
  /// [E]; route only, required exactly when the facts have scoreBias.
  const float *bias = nullptr;
  /// route_hash: [T] token ids and the [hashVocab, k] table.
  const int32_t *tokenIds = nullptr;
  const int32_t *hashTable = nullptr;
  int64_t hashVocab = 0;
  /// [T, k]; when given, replay runs instead of route / route_hash.
  const int32_t *forcedIds = nullptr;
  /// [T, 1] of the facts' logits type; required exactly when the facts
  /// have sharedGate, by every entry point.
  const void *sharedGateLogits = nullptr;
  /// [T, captureLayers, k] of captureElementBytes(); route / route_hash
  /// write layer captureLayer when the facts have capture.
  void *captureBuffer = nullptr;
  int64_t captureLayers = 0;
  int64_t captureLayer = 0;

  /// Outputs, always: [T, k] each.
  int32_t *topkIds = nullptr;
  float *topkWeights = nullptr;
  /// [T, 1]: sigmoid(sharedGateLogits), required with them.
  float *sharedGate = nullptr;
  /// Dispatch outputs, all four or none: [E], [E + 1], [T * k], [T * k].
  int32_t *expertCounts = nullptr;
  int32_t *expertOffsets = nullptr;
  int32_t *sortedSlots = nullptr;
  int32_t *slotPositions = nullptr;
};

/// One permute call: `permuted[p, :] = hidden[sortedSlots[p] / k, :]` for
/// p < T * k, rows of H = hiddenSize elements of the facts' hidden type
/// (float, or bf16 / f16 bit patterns). sortedSlots is dispatch's output.
struct HostPermuteCall {
  int64_t numTokens = 0;
  int64_t hiddenSize = 0;
  const void *hidden = nullptr;          ///< [T, H]
  const int32_t *sortedSlots = nullptr;  ///< [T * k]
  void *permuted = nullptr;              ///< [T * k, H], written
};

/// One combine call: `combined[t, :] = sum_j topkWeights[t, j] *
/// expertOutput[slotPositions[t * k + j], :]`, in f32, rounded once to the
/// hidden type. slotPositions is dispatch's output.
struct HostCombineCall {
  int64_t numTokens = 0;
  int64_t hiddenSize = 0;
  const float *topkWeights = nullptr;      ///< [T, k]
  const int32_t *slotPositions = nullptr;  ///< [T * k]
  const void *expertOutput = nullptr;      ///< [T * k, H]
  void *combined = nullptr;                ///< [T, H], written
};

/// The size checks of permute and combine (`entry` names the call): the
/// entry points exist, T >= 0, T * k fits in int32, H >= 1 and the largest
/// buffer ([T * k, H]) is addressable. "" or one line.
std::string checkRowMovementSizes(const RouterFacts &facts, const char *entry,
                                  int64_t numTokens, int64_t hiddenSize);

/// What every backend checks before a permute or combine call: the entry
/// points exist, sizes are in range (T * k and T * k * H addressable), and
/// every buffer a non-empty call reads or writes is given. "" or one line.
std::string checkPermuteCall(const RouterFacts &facts,
                             const HostPermuteCall &call);
std::string checkCombineCall(const RouterFacts &facts,
                             const HostCombineCall &call);

/// One update_bias call, [E] each: updatedBias[e] = bias[e] + rate *
/// sign(mean(expertCounts) - expertCounts[e]) (docs/semantics.md, "Bias
/// update"). expertCounts are loads: dispatch's counts, or their sum over
/// a step's batches.
struct HostUpdateBiasCall {
  const float *bias = nullptr;
  const int32_t *expertCounts = nullptr;
  float *updatedBias = nullptr; ///< written; may be `bias` itself
};

/// What every backend checks before an update_bias call: the entry point
/// exists and every buffer is given. "" or one line.
std::string checkUpdateBiasCall(const RouterFacts &facts,
                                const HostUpdateBiasCall &call);

/// The entry point a call runs, chosen by the inputs it gives.
enum class HostEntry { Route, RouteHash, Replay };
HostEntry entryOf(const HostRouteCall &call);

class HostRouter {
public:
  virtual ~HostRouter() = default;

  virtual const RouterFacts &facts() const = 0;
  /// "cpu" or "cuda", for messages.
  virtual std::string_view backendName() const = 0;

  /// Runs route, route_hash or replay (entryOf(call)), then dispatch when
  /// the call has dispatch outputs, and returns once the outputs (and the
  /// capture buffer) hold the results. Returns "" or the one-line message
  /// of the first input violation, worded and ordered as docs/semantics.md
  /// §2 says for every backend; outputs are unspecified after one. Throws
  /// rt::Error for what is not the input's fault (driver, device, memory).
  virtual std::string run(const HostRouteCall &call) = 0;

  /// run() with the entry point named: throws Error(InvalidArgument) when
  /// the call's inputs select another one.
  std::string route(const HostRouteCall &call) {
    return runAs(HostEntry::Route, call);
  }
  std::string routeHash(const HostRouteCall &call) {
    return runAs(HostEntry::RouteHash, call);
  }
  std::string replay(const HostRouteCall &call) {
    return runAs(HostEntry::Replay, call);
  }

  /// The permute and combine entry points (facts().permute): "" or the
  /// one-line message of the first input violation (a row index outside
  /// [0, T * k)), as run() does.
  virtual std::string permute(const HostPermuteCall &call) = 0;
  virtual std::string combine(const HostCombineCall &call) = 0;
  /// The update_bias entry point (facts().updateBias): "" or the one-line
  /// message of the first input violation (a negative load, a non-finite
  /// bias, the lowest expert first).
  virtual std::string updateBias(const HostUpdateBiasCall &call) = 0;

private:
  std::string runAs(HostEntry entry, const HostRouteCall &call);
};

} // namespace moegen::rt

#endif // MOEGEN_RUNTIME_HOSTROUTER_H
