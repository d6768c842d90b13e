//===- KernelAbi.cpp - The kernel ABI compiler and runtime share ----------===//

#include "abi/KernelAbi.h"

namespace moegen::abi {

namespace {

constexpr std::array<std::string_view, 6> kDTypeNames = {"f32", "bf16", "f16",
                                                         "i16", "i32",  "i64"};
constexpr std::array<std::string_view, 7> kEntryNames = {
    "route",   "route_hash", "replay",     "dispatch",
    "permute", "combine",    "update_bias"};
constexpr std::array<std::string_view, 3> kAccessNames = {"read", "write",
                                                          "readwrite"};
constexpr std::array<std::string_view, 6> kRoleNames = {
    "tensor", "scalar", "error_record", "token_begin", "token_end", "scratch"};

template <size_t N>
std::optional<size_t> indexOf(const std::array<std::string_view, N> &names,
                              std::string_view text) {
  for (size_t i = 0; i < N; ++i)
    if (names[i] == text)
      return i;
  return std::nullopt;
}

using enum DimRule;

constexpr ArgSpec tensor(std::string_view name, std::array<DimRule, 3> dims,
                         int rank, DType dtype, Access access,
                         bool required = true,
                         DTypeRule rule = DTypeRule::Fixed) {
  return ArgSpec{name, ArgRole::Tensor, dims, rank, rule, dtype, access,
                 required};
}

// The arguments every row kernel ends with.
constexpr ArgSpec kTopkIdsOut =
    tensor("topk_ids", {Tokens, TopK}, 2, DType::I32, Access::Write);
constexpr ArgSpec kTopkWeightsOut =
    tensor("topk_weights", {Tokens, TopK}, 2, DType::F32, Access::Write);
constexpr ArgSpec kErrorRecord{"error",        ArgRole::ErrorRecord,
                               {ErrorWords},   1,
                               DTypeRule::Fixed, DType::I64,
                               Access::ReadWrite};
constexpr ArgSpec kTokenBegin{"token_begin", ArgRole::TokenBegin, {}, 0,
                              DTypeRule::Fixed, DType::I64, Access::Read};
constexpr ArgSpec kTokenEnd{"token_end", ArgRole::TokenEnd, {}, 0,
                            DTypeRule::Fixed, DType::I64, Access::Read};
constexpr ArgSpec kLogits = tensor("logits", {Tokens, Experts}, 2, DType::F32,
                                   Access::Read, true, DTypeRule::Logits);
constexpr ArgSpec kCapture =
    tensor("capture", {Tokens, Layers, TopK}, 3, DType::I16,
           Access::ReadWrite, /*required=*/false, DTypeRule::Capture);
constexpr ArgSpec kLayer{"layer",          ArgRole::Scalar, {}, 0,
                         DTypeRule::Fixed, DType::I64,      Access::Read,
                         /*required=*/false};

// The shared expert's gate (Qwen2-MoE): one logit per token in, its
// sigmoid out, beside the routed experts' ids and weights.
constexpr ArgSpec kSharedGateLogits =
    tensor("shared_gate_logits", {Tokens, One}, 2, DType::F32, Access::Read,
           /*required=*/false, DTypeRule::Logits);
constexpr ArgSpec kSharedGateOut = tensor("shared_gate", {Tokens, One}, 2,
                                          DType::F32, Access::Write,
                                          /*required=*/false);

// A route with a fused dispatch (docs/kernel-abi.md, "Fused dispatch")
// also writes the dispatch's outputs and takes its scratch buffer.
constexpr ArgSpec fusedOnly(ArgSpec arg) {
  arg.required = false;
  arg.fusedDispatchOnly = true;
  return arg;
}
constexpr ArgSpec kFusedCounts = fusedOnly(
    tensor("expert_counts", {Experts}, 1, DType::I32, Access::Write));
constexpr ArgSpec kFusedOffsets = fusedOnly(
    tensor("expert_offsets", {ExpertsPlus1}, 1, DType::I32, Access::Write));
constexpr ArgSpec kFusedSortedSlots =
    fusedOnly(tensor("sorted_slots", {Slots}, 1, DType::I32, Access::Write));
constexpr ArgSpec kFusedSlotPositions =
    fusedOnly(tensor("slot_positions", {Slots}, 1, DType::I32, Access::Write));
constexpr ArgSpec kFusedScratch = fusedOnly(
    ArgSpec{"dispatch_scratch", ArgRole::Scratch, {DispatchScratchWords}, 1,
            DTypeRule::Fixed, DType::I32, Access::ReadWrite});

constexpr ArgSpec kRoute[] = {
    kLogits,
    tensor("bias", {Experts}, 1, DType::F32, Access::Read, false),
    kCapture,
    kLayer,
    kSharedGateLogits,
    kTopkIdsOut,
    kTopkWeightsOut,
    kSharedGateOut,
    kFusedCounts,
    kFusedOffsets,
    kFusedSortedSlots,
    kFusedSlotPositions,
    kFusedScratch,
    kErrorRecord,
    kTokenBegin,
    kTokenEnd,
    // GPU expert-choice routes only: the radix select's histograms and
    // thresholds, and the grid barrier.
    ArgSpec{"scratch", ArgRole::Scratch, {ExpertChoiceScratchWords}, 1,
            DTypeRule::Fixed, DType::I32, Access::ReadWrite,
            /*required=*/false}};
constexpr ArgSpec kRouteHash[] = {
    kLogits,
    tensor("token_ids", {Tokens}, 1, DType::I32, Access::Read),
    tensor("hash_table", {HashRows, TopK}, 2, DType::I32, Access::Read),
    kCapture,
    kLayer,
    kSharedGateLogits,
    kTopkIdsOut,
    kTopkWeightsOut,
    kSharedGateOut,
    kFusedCounts,
    kFusedOffsets,
    kFusedSortedSlots,
    kFusedSlotPositions,
    kFusedScratch,
    kErrorRecord,
    kTokenBegin,
    kTokenEnd};
constexpr ArgSpec kReplay[] = {
    kLogits,
    tensor("forced_ids", {Tokens, TopK}, 2, DType::I32, Access::Read),
    kSharedGateLogits,
    kTopkIdsOut,
    kTopkWeightsOut,
    kSharedGateOut,
    kFusedCounts,
    kFusedOffsets,
    kFusedSortedSlots,
    kFusedSlotPositions,
    kFusedScratch,
    kErrorRecord,
    kTokenBegin,
    kTokenEnd};
// Dispatch spans all tokens: no token range.
constexpr ArgSpec kDispatch[] = {
    tensor("topk_ids", {Tokens, TopK}, 2, DType::I32, Access::Read),
    tensor("expert_counts", {Experts}, 1, DType::I32, Access::Write),
    tensor("expert_offsets", {ExpertsPlus1}, 1, DType::I32, Access::Write),
    tensor("sorted_slots", {Slots}, 1, DType::I32, Access::Write),
    tensor("slot_positions", {Slots}, 1, DType::I32, Access::Write),
    kErrorRecord,
    // GPU kernels only: the parallel dispatch's histograms and grid barrier.
    ArgSpec{"scratch", ArgRole::Scratch, {DispatchScratchWords}, 1,
            DTypeRule::Fixed, DType::I32, Access::ReadWrite,
            /*required=*/false}};

// Permute and combine run per token like the row kernels: permute fills the
// k rows of sorted positions [t*k, t*k + k), combine token t's row.
constexpr ArgSpec kPermute[] = {
    tensor("hidden", {Tokens, Hidden}, 2, DType::F32, Access::Read, true,
           DTypeRule::Hidden),
    tensor("sorted_slots", {Slots}, 1, DType::I32, Access::Read),
    tensor("permuted", {Slots, Hidden}, 2, DType::F32, Access::Write, true,
           DTypeRule::Hidden),
    kErrorRecord,
    kTokenBegin,
    kTokenEnd};
constexpr ArgSpec kCombine[] = {
    tensor("topk_weights", {Tokens, TopK}, 2, DType::F32, Access::Read),
    tensor("slot_positions", {Slots}, 1, DType::I32, Access::Read),
    tensor("expert_output", {Slots, Hidden}, 2, DType::F32, Access::Read,
           true, DTypeRule::Hidden),
    tensor("combined", {Tokens, Hidden}, 2, DType::F32, Access::Write, true,
           DTypeRule::Hidden),
    kErrorRecord,
    kTokenBegin,
    kTokenEnd};

// Auxiliary-loss-free balancing: the loads (dispatch's expert_counts, or
// their sum over several batches) move the bias; one small kernel, no
// tokens.
constexpr ArgSpec kUpdateBias[] = {
    tensor("bias", {Experts}, 1, DType::F32, Access::Read),
    tensor("expert_counts", {Experts}, 1, DType::I32, Access::Read),
    tensor("updated_bias", {Experts}, 1, DType::F32, Access::Write),
    kErrorRecord};

} // namespace

std::string_view toString(DType dtype) {
  return kDTypeNames[static_cast<size_t>(dtype)];
}

std::optional<DType> parseDType(std::string_view text) {
  if (auto i = indexOf(kDTypeNames, text))
    return static_cast<DType>(*i);
  return std::nullopt;
}

size_t byteSize(DType dtype) {
  switch (dtype) {
  case DType::F32:
  case DType::I32:
    return 4;
  case DType::BF16:
  case DType::F16:
  case DType::I16:
    return 2;
  case DType::I64:
    return 8;
  }
  return 0;
}

std::string_view toString(EntryKind entry) {
  return kEntryNames[static_cast<size_t>(entry)];
}

std::optional<EntryKind> parseEntryKind(std::string_view text) {
  if (auto i = indexOf(kEntryNames, text))
    return static_cast<EntryKind>(*i);
  return std::nullopt;
}

std::string_view toString(Access access) {
  return kAccessNames[static_cast<size_t>(access)];
}

std::optional<Access> parseAccess(std::string_view text) {
  if (auto i = indexOf(kAccessNames, text))
    return static_cast<Access>(*i);
  return std::nullopt;
}

std::string_view toString(ArgRole role) {
  return kRoleNames[static_cast<size_t>(role)];
}

std::optional<ArgRole> parseArgRole(std::string_view text) {
  if (auto i = indexOf(kRoleNames, text))
    return static_cast<ArgRole>(*i);
  return std::nullopt;
}

std::string_view toString(DimRule rule) {
  switch (rule) {
  case Tokens:
    return "T";
  case HashRows:
    return "V";
  case Layers:
    return "L";
  case Slots:
    return "T*k";
  case Hidden:
    return "H";
  case Experts:
    return "E";
  case ExpertsPlus1:
    return "E+1";
  case TopK:
    return "k";
  case One:
    return "1";
  case ErrorWords:
    return "W";
  case DispatchScratchWords:
    return "S";
  case ExpertChoiceScratchWords:
    return "S_ec";
  }
  return "?";
}

std::span<const ArgSpec> entrySignature(EntryKind entry) {
  switch (entry) {
  case EntryKind::Route:
    return kRoute;
  case EntryKind::RouteHash:
    return kRouteHash;
  case EntryKind::Replay:
    return kReplay;
  case EntryKind::Dispatch:
    return kDispatch;
  case EntryKind::Permute:
    return kPermute;
  case EntryKind::Combine:
    return kCombine;
  case EntryKind::UpdateBias:
    return kUpdateBias;
  }
  return {};
}

const ArgSpec *findArg(EntryKind entry, std::string_view name) {
  for (const ArgSpec &arg : entrySignature(entry))
    if (arg.name == name)
      return &arg;
  return nullptr;
}

std::string sizeParamName(std::string_view tensor, int dim) {
  return std::string(tensor) + ".size" + std::to_string(dim);
}

} // namespace moegen::abi
