//===- KernelError.h - The error record every kernel writes -----*- C++ -*-===//
//
// Kernels validate the values they read (logits, hash and forced ids, the
// capture layer) and report the first violation in a record of five int64
// words instead of touching memory they must not. Backends allocate one
// record per task (CPU) or per launch (GPU), zeroed; the host turns the
// record with the lowest token into the one-line message users see. Shared
// by the compiler (which emits the stores) and the runtime (which reads
// them), so it has no dependencies.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_ABI_KERNELERROR_H
#define MOEGEN_ABI_KERNELERROR_H

#include <cstdint>
#include <string>

namespace moegen {

/// Word positions in the record (memref<5xi64> in the kernel ABI).
enum KernelErrorWord : int {
  kErrorCode = 0,   ///< a KernelErrorCode; 0 while no violation was seen
  kErrorToken = 1,  ///< the token being processed
  kErrorIndex0 = 2, ///< first index of the offending element
  kErrorIndex1 = 3, ///< second index, or a bound (see each code)
  kErrorValue = 4,  ///< the offending value (f32 bits for logits)
};
inline constexpr int kKernelErrorWords = 5;
/// On the GPU the record has one more word: a spin lock (0 free, 1 held)
/// that serializes the warps updating the record, since tokens run in no
/// particular order there. Callers zero all six words before a launch.
inline constexpr int kErrorLockWord = 5;
inline constexpr int kGpuKernelErrorWords = 6;

enum class KernelErrorCode : int64_t {
  None = 0,
  /// logits[index0][index1] is NaN or +inf; value = its f32 bit pattern.
  NonFiniteLogit = 1,
  /// token_ids[index0] = value is outside [0, index1 = vocabulary).
  TokenIdOutsideVocab = 2,
  /// hash_table[index0][index1] = value is outside [0, E).
  HashEntryOutOfRange = 3,
  /// hash_table[index0][index1] = value repeats an earlier entry of the row.
  HashEntryRepeated = 4,
  /// forced_ids[index0][index1] = value is outside [0, E).
  ForcedIdOutOfRange = 5,
  /// forced_ids[index0][index1] = value repeats an earlier id of the token.
  ForcedIdRepeated = 6,
  /// The capture layer = value is outside [0, index1 = layers).
  CaptureLayerOutOfRange = 7,
  /// The dispatch input ids[index0][index1] = value is outside [0, E).
  DispatchIdOutOfRange = 8,
  /// The permute input sorted_slots[index0] = value is outside
  /// [0, index1 = T * k).
  PermuteSlotOutOfRange = 9,
  /// The combine input slot_positions[index0] = value is outside
  /// [0, index1 = T * k).
  CombinePositionOutOfRange = 10,
  /// shared_gate_logits[index0][0] is NaN or +inf; value = its f32 bit
  /// pattern.
  NonFiniteSharedGateLogit = 11,
  /// The update_bias input expert_counts[index0] = value is negative.
  NegativeExpertCount = 12,
  /// The update_bias input bias[index0] is NaN or infinite; value = its f32
  /// bit pattern.
  NonFiniteBiasToUpdate = 13,
};

/// Violations are reported in the order of docs/semantics.md §2: by
/// category (logits, then the bias, then hash inputs, then forced ids, then
/// the capture layer, then dispatch ids; permute's and combine's inputs,
/// each in its own entry point, and the shared expert's gate logits last;
/// update_bias's inputs, in their own entry point, by expert index),
/// then by token, then by index. The
/// category of a code; 0 for None. Codes are numbered so that a code's
/// category is the number of these thresholds it reaches.
inline constexpr int64_t kErrorCategoryThresholds[] = {1, 2, 5, 7, 8, 9};
constexpr int64_t kernelErrorCategory(int64_t code) {
  int64_t category = 0;
  for (int64_t threshold : kErrorCategoryThresholds)
    category += code >= threshold ? 1 : 0;
  return category;
}
/// The category the host-checked bias falls in: after logits (1), before
/// hash inputs (2).
inline constexpr double kBiasErrorCategory = 1.5;

/// The one-line message for a record whose code is not None, in the words
/// of the golden reference (docs/semantics.md): tensor, index, rule.
/// `idsTensorName` names the dispatch input in messages.
std::string formatKernelError(const int64_t *record, int64_t numExperts,
                              const char *idsTensorName = "ids");

/// A float as messages quote it: `nan`, `inf`, `-inf` or the shortest
/// decimal that reads back to the same float.
std::string formatFloatForMessage(float value);

} // namespace moegen

#endif // MOEGEN_ABI_KERNELERROR_H
