//===- Quote.h - Text inside one-line messages ------------------*- C++ -*-===//
//
// Every error of moegen is one line that names a file, key or value. Text
// from the user or from a file goes into such a line through these
// functions: escaped so that it cannot break the line, and cut when it is
// long unless it is a path (whose end names the file). Text that is not
// valid UTF-8, and characters that break or reorder a line on a terminal
// (C1 controls, Unicode bidirectional controls, line and paragraph
// separators), are escaped too, so a hostile file name or value cannot
// forge or hide part of a message. Header only and plain C++20, for the
// runtime and the compiler alike.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_SUPPORT_QUOTE_H
#define MOEGEN_SUPPORT_QUOTE_H

#include <cstddef>
#include <string>
#include <string_view>

namespace moegen::support {

/// How text is escaped for a message.
struct QuoteStyle {
  /// Bytes kept (whole characters); longer text ends in "...". npos keeps
  /// everything.
  size_t maxLength = 40;
  /// Newline, carriage return and tab as \n, \r, \t rather than \x0a, ...
  bool namedControlEscapes = true;
  /// Bytes >= 0x80 as \xNN too, for text read from binary files (an .npy
  /// header); otherwise UTF-8 text passes through.
  bool escapeNonAscii = false;
};

/// The longest path kept whole in a message.
constexpr size_t kMaxPathLength = 4096;

namespace detail {

/// The length of the valid UTF-8 sequence at text[i] (2 to 4 bytes) with
/// its code point in `cp`, or 0 when the bytes there are not one (a stray
/// continuation byte, a truncated or overlong sequence, a surrogate).
inline size_t decodeUtf8(std::string_view text, size_t i, char32_t &cp) {
  auto byteAt = [&](size_t j) { return static_cast<unsigned char>(text[j]); };
  unsigned char lead = byteAt(i);
  size_t length;
  char32_t smallest;
  if (lead >= 0xc2 && lead <= 0xdf) {
    length = 2, cp = lead & 0x1f, smallest = 0x80;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    length = 3, cp = lead & 0x0f, smallest = 0x800;
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    length = 4, cp = lead & 0x07, smallest = 0x10000;
  } else {
    return 0;
  }
  if (text.size() - i < length)
    return 0;
  for (size_t k = 1; k < length; ++k) {
    unsigned char next = byteAt(i + k);
    if ((next & 0xc0) != 0x80)
      return 0;
    cp = (cp << 6) | (next & 0x3f);
  }
  if (cp < smallest || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  return length;
}

/// Characters that end a line (NEL, U+2028, U+2029) or reorder what
/// follows on a terminal (the bidirectional controls), echoed raw.
inline bool isUnsafeCodePoint(char32_t cp) {
  return (cp >= 0x80 && cp <= 0x9f) ||      // C1 controls, NEL among them
         cp == 0x061c ||                     // Arabic letter mark
         cp == 0x200e || cp == 0x200f ||     // LRM, RLM
         (cp >= 0x2028 && cp <= 0x202e) ||   // LS, PS, LRE ... RLO
         (cp >= 0x2066 && cp <= 0x2069);     // LRI ... PDI
}

} // namespace detail

/// `text` with quotes, backslashes and control characters escaped (a
/// backslash before ' and \), invalid UTF-8 bytes as \xNN and unsafe
/// characters as \u{NNNN}; cut after style.maxLength bytes (at a character
/// boundary).
inline std::string escape(std::string_view text, const QuoteStyle &style = {}) {
  static constexpr char kHex[] = "0123456789abcdef";
  auto appendHexByte = [&](std::string &out, unsigned char byte) {
    out += "\\x";
    out += kHex[byte >> 4];
    out += kHex[byte & 15];
  };
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (i >= style.maxLength) {
      out += "...";
      break;
    }
    char c = text[i];
    auto byte = static_cast<unsigned char>(c);
    if (style.namedControlEscapes && c == '\n') {
      out += "\\n";
    } else if (style.namedControlEscapes && c == '\r') {
      out += "\\r";
    } else if (style.namedControlEscapes && c == '\t') {
      out += "\\t";
    } else if (c == '\\' || c == '\'') {
      out += '\\';
      out += c;
    } else if (byte < 0x20 || byte == 0x7f ||
               (style.escapeNonAscii && byte >= 0x80)) {
      appendHexByte(out, byte);
    } else if (byte >= 0x80) {
      char32_t cp = 0;
      size_t length = detail::decodeUtf8(text, i, cp);
      if (length == 0) {
        appendHexByte(out, byte); // not UTF-8: one byte at a time
      } else if (detail::isUnsafeCodePoint(cp)) {
        out += "\\u{";
        bool leading = true;
        for (int shift = 20; shift >= 0; shift -= 4) {
          unsigned digit = (cp >> shift) & 15;
          if (leading && digit == 0 && shift > 12)
            continue; // at least four digits: \u{0085}, \u{202e}
          leading = false;
          out += kHex[digit];
        }
        out += '}';
        i += length - 1;
      } else {
        out.append(text.substr(i, length));
        i += length - 1;
      }
    } else {
      out += c;
    }
  }
  return out;
}

/// escape(text) between single quotes: 'text'.
inline std::string quote(std::string_view text, const QuoteStyle &style = {}) {
  // Appended rather than "'" + escape(...), which GCC 12 misreads
  // (-Wrestrict).
  std::string out = "'";
  out += escape(text, style);
  out += '\'';
  return out;
}

/// A path or a command-line argument at the start of a message ("PATH:
/// error: ..."): escaped, not quoted, and kept whole up to kMaxPathLength.
inline std::string quotePath(std::string_view path) {
  return escape(path, QuoteStyle{kMaxPathLength});
}

} // namespace moegen::support

#endif // MOEGEN_SUPPORT_QUOTE_H
