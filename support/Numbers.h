//===- Numbers.h - Strict number literals -----------------------*- C++ -*-===//
//
// The one grammar for numbers written by users: spec values and integer
// options of the command line. Exact and length-capped, so that a literal
// is checked before anything converts it (float conversion of a literal
// tens of thousands of digits long is neither useful nor safe). Header only
// and plain C++20.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_SUPPORT_NUMBERS_H
#define MOEGEN_SUPPORT_NUMBERS_H

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace moegen::support {

/// The longest number literal accepted; far more than the 17 significant
/// digits of a double and a 4-digit exponent need.
constexpr size_t kMaxNumberLength = 64;

namespace detail {
inline bool isDigit(char c) { return c >= '0' && c <= '9'; }
/// Skips [0-9]* from `i`; returns how many digits were skipped.
inline size_t skipDigits(std::string_view text, size_t &i) {
  size_t start = i;
  while (i < text.size() && isDigit(text[i]))
    ++i;
  return i - start;
}
} // namespace detail

/// Whether `text` is a decimal integer, -?[0-9]+ (with `allowMinus`) or
/// [0-9]+, of at most kMaxNumberLength characters. No '+', no spaces, no
/// radix prefixes or digit separators.
inline bool isDecimalInteger(std::string_view text, bool allowMinus = true) {
  if (text.size() > kMaxNumberLength)
    return false;
  size_t i = 0;
  if (allowMinus && i < text.size() && text[i] == '-')
    ++i;
  return detail::skipDigits(text, i) > 0 && i == text.size();
}

/// Whether `text` is a decimal number of at most kMaxNumberLength
/// characters in the YAML 1.2 core schema's float form without its
/// special values:
///   [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?
/// So "2.5", "25e-1", ".5", "5.", "1.e5" and "3" are numbers; "1e",
/// "2.5e-", "1.e", ".", "0x1p3", "inf" and "1_000" are not.
inline bool isDecimalNumber(std::string_view text) {
  if (text.size() > kMaxNumberLength)
    return false;
  size_t i = 0;
  if (i < text.size() && (text[i] == '-' || text[i] == '+'))
    ++i;
  size_t mantissaDigits = detail::skipDigits(text, i);
  if (i < text.size() && text[i] == '.') {
    ++i;
    size_t fractionDigits = detail::skipDigits(text, i);
    // "5." is a number, "." and ".e1" are not.
    if (mantissaDigits + fractionDigits == 0)
      return false;
  } else if (mantissaDigits == 0) {
    return false;
  }
  if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
    ++i;
    if (i < text.size() && (text[i] == '-' || text[i] == '+'))
      ++i;
    if (detail::skipDigits(text, i) == 0)
      return false;
  }
  return i == text.size();
}

/// `text` as an int64_t if it is a decimal integer (isDecimalInteger) in
/// range; nullopt otherwise.
inline std::optional<int64_t> parseDecimalInteger(std::string_view text,
                                                  bool allowMinus = true) {
  if (!isDecimalInteger(text, allowMinus))
    return std::nullopt;
  int64_t value = 0;
  auto [end, ec] =
      std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size())
    return std::nullopt;
  return value;
}

} // namespace moegen::support

#endif // MOEGEN_SUPPORT_NUMBERS_H
