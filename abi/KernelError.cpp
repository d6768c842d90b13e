//===- KernelError.cpp - Messages for kernel error records ----------------===//

#include "abi/KernelError.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>

namespace moegen {

namespace {

std::string formatLogit(int64_t bits) {
  const auto pattern = static_cast<uint32_t>(bits);
  float value;
  std::memcpy(&value, &pattern, sizeof value);
  return formatFloatForMessage(value);
}

std::string at2(const char *tensor, int64_t i, int64_t j) {
  return std::string(tensor) + "[" + std::to_string(i) + "][" +
         std::to_string(j) + "]";
}

std::string expertRange(int64_t numExperts) {
  return "expert id outside [0, " + std::to_string(numExperts) + ")";
}

} // namespace

std::string formatFloatForMessage(float value) {
  if (std::isnan(value))
    return "nan";
  if (std::isinf(value))
    return value > 0 ? "inf" : "-inf";
  std::ostringstream os;
  os.precision(std::numeric_limits<float>::max_digits10);
  os << value;
  return os.str();
}

std::string formatKernelError(const int64_t *record, int64_t numExperts,
                              const char *idsTensorName) {
  const int64_t i0 = record[kErrorIndex0], i1 = record[kErrorIndex1];
  const int64_t value = record[kErrorValue];
  const std::string v = std::to_string(value);
  switch (static_cast<KernelErrorCode>(record[kErrorCode])) {
  case KernelErrorCode::None:
    return {};
  case KernelErrorCode::NonFiniteLogit:
    return at2("logits", i0, i1) + " is " + formatLogit(value) +
           ": logits must be finite or -inf";
  case KernelErrorCode::TokenIdOutsideVocab:
    return "token_ids[" + std::to_string(i0) + "] = " + v +
           ": outside the hash table's vocabulary [0, " + std::to_string(i1) +
           ")";
  case KernelErrorCode::HashEntryOutOfRange:
    return at2("hash_table", i0, i1) + " = " + v + ": " +
           expertRange(numExperts);
  case KernelErrorCode::HashEntryRepeated:
    return at2("hash_table", i0, i1) + " = " + v +
           ": repeats an expert of the same row";
  case KernelErrorCode::ForcedIdOutOfRange:
    return at2("forced_ids", i0, i1) + " = " + v + ": " +
           expertRange(numExperts);
  case KernelErrorCode::ForcedIdRepeated:
    return at2("forced_ids", i0, i1) + " = " + v +
           ": repeats an expert of the same token";
  case KernelErrorCode::CaptureLayerOutOfRange:
    return "capture layer = " + v + ": outside the buffer's layers [0, " +
           std::to_string(i1) + ")";
  case KernelErrorCode::DispatchIdOutOfRange:
    return at2(idsTensorName, i0, i1) + " = " + v + ": " +
           expertRange(numExperts);
  case KernelErrorCode::PermuteSlotOutOfRange:
    return "sorted_slots[" + std::to_string(i0) + "] = " + v +
           ": outside the slots [0, " + std::to_string(i1) + ")";
  case KernelErrorCode::CombinePositionOutOfRange:
    return "slot_positions[" + std::to_string(i0) + "] = " + v +
           ": outside the permuted rows [0, " + std::to_string(i1) + ")";
  case KernelErrorCode::NonFiniteSharedGateLogit:
    return at2("shared_gate_logits", i0, i1) + " is " + formatLogit(value) +
           ": shared gate logits must be finite or -inf";
  case KernelErrorCode::NegativeExpertCount:
    return "expert_counts[" + std::to_string(i0) + "] = " + v +
           ": a load must not be negative";
  case KernelErrorCode::NonFiniteBiasToUpdate:
    return "bias[" + std::to_string(i0) + "] = " + formatLogit(value) +
           ": must be finite";
  }
  return "kernel error record with unknown code " +
         std::to_string(record[kErrorCode]);
}

} // namespace moegen
