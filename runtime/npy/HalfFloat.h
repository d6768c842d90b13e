//===- HalfFloat.h - IEEE half and bfloat16 conversions ---------*- C++ -*-===//
//
// Bit-exact conversions between float and the two 16-bit float formats that
// gating logits arrive in: IEEE 754 binary16 ("half", NumPy '<f2') and
// bfloat16 (no NumPy dtype; stored as raw '<u2' bits).
//
// Every conversion rounds to nearest, ties to even, like hardware does, so the
// runtime and the golden reference agree with GPU kernels bit for bit. All
// functions are constexpr and header-only; no LLVM, no compiler intrinsics.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_RUNTIME_NPY_HALFFLOAT_H
#define MOEGEN_RUNTIME_NPY_HALFFLOAT_H

#include <bit>
#include <cstdint>
#include <limits>

namespace moegen::npy {

static_assert(sizeof(float) == 4 && std::numeric_limits<float>::is_iec559,
              "half/bf16 conversions assume IEEE 754 binary32 floats");

namespace detail {

/// Shifts `value` right by `shift` (1..31) bits, rounding to nearest with ties
/// to even; a carry out of the mantissa correctly bumps the exponent.
constexpr uint32_t shiftRightRoundEven(uint32_t value, unsigned shift) {
  uint32_t quotient = value >> shift;
  uint32_t remainder = value & ((uint32_t(1) << shift) - 1);
  uint32_t halfway = uint32_t(1) << (shift - 1);
  if (remainder > halfway || (remainder == halfway && (quotient & 1)))
    ++quotient;
  return quotient;
}

} // namespace detail

/// Converts IEEE binary16 bits to float. Exact for every input: subnormals
/// become normal floats, and NaN payloads (including the quiet bit) are kept.
constexpr float halfToFloat(uint16_t half) {
  uint32_t sign = uint32_t(half & 0x8000) << 16;
  uint32_t exponent = (half >> 10) & 0x1F;
  uint32_t mantissa = half & 0x3FF;

  if (exponent == 0x1F) // Inf or NaN: widen the payload.
    return std::bit_cast<float>(sign | 0x7F800000 | (mantissa << 13));
  if (exponent != 0) // Normal: rebias 15 -> 127.
    return std::bit_cast<float>(sign | ((exponent + 112) << 23) |
                                (mantissa << 13));
  if (mantissa == 0)
    return std::bit_cast<float>(sign);

  // Subnormal half (mantissa * 2^-24) is a normal float: shift the leading
  // one into the implicit bit and lower the exponent to match.
  uint32_t floatExponent = 113; // 2^-14, the exponent of the smallest normal.
  while ((mantissa & 0x400) == 0) {
    mantissa <<= 1;
    --floatExponent;
  }
  return std::bit_cast<float>(sign | (floatExponent << 23) |
                              ((mantissa & 0x3FF) << 13));
}

/// Converts a float to IEEE binary16 bits: round to nearest even, values at or
/// above 65520 (half way past the largest half, 65504) become infinity, results
/// below 2^-14 become exact-as-possible subnormals, and NaN stays NaN (quieted,
/// keeping the sign and the top payload bits).
constexpr uint16_t floatToHalf(float value) {
  uint32_t bits = std::bit_cast<uint32_t>(value);
  uint16_t sign = uint16_t((bits >> 16) & 0x8000);
  uint32_t magnitude = bits & 0x7FFFFFFF;

  if (magnitude > 0x7F800000) // NaN: set the quiet bit so it cannot become Inf.
    return uint16_t(sign | 0x7E00 | ((magnitude >> 13) & 0x3FF));
  if (magnitude >= 0x477FF000) // >= 65520.0f, including Inf.
    return uint16_t(sign | 0x7C00);
  if (magnitude >= 0x38800000) { // >= 2^-14: normal half.
    // Rebias the exponent (127 -> 15) in place, then drop 13 mantissa bits.
    uint32_t rebiased = magnitude - (uint32_t(112) << 23);
    return uint16_t(sign | detail::shiftRightRoundEven(rebiased, 13));
  }
  if (magnitude <= 0x33000000) // <= 2^-25: rounds to zero (2^-25 is a tie).
    return sign;

  // Subnormal half: the result is round(value / 2^-24). With the implicit bit
  // restored, value = mantissa * 2^(exponent - 150), so shift by 126 - exponent
  // (14..24 here). Rounding up to 0x400 yields the smallest normal, correctly.
  uint32_t exponent = magnitude >> 23;
  uint32_t mantissa = (magnitude & 0x7FFFFF) | 0x800000;
  return uint16_t(sign | detail::shiftRightRoundEven(mantissa, 126 - exponent));
}

/// Converts bfloat16 bits to float. Exact: bf16 is the top half of a float.
constexpr float bf16ToFloat(uint16_t bf16) {
  return std::bit_cast<float>(uint32_t(bf16) << 16);
}

/// Converts a float to bfloat16 bits: round to nearest even (large finite
/// values may round to infinity, as in hardware); NaN stays NaN (quieted, so a
/// payload living only in the dropped low bits cannot turn into Inf).
constexpr uint16_t floatToBf16(float value) {
  uint32_t bits = std::bit_cast<uint32_t>(value);
  if ((bits & 0x7FFFFFFF) > 0x7F800000)
    return uint16_t((bits >> 16) | 0x0040);
  return uint16_t(detail::shiftRightRoundEven(bits, 16));
}

} // namespace moegen::npy

#endif // MOEGEN_RUNTIME_NPY_HALFFLOAT_H
