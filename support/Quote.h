//===- Quote.h - Text inside one-line messages ------------------*- C++ -*-===//
//
// Every error of moegen is one line that names a file, key or value. Text
// from the user or from a file goes into such a line through these
// functions: escaped so that it cannot break the line, and cut when it is
// long unless it is a path (whose end names the file). Header only and
// plain C++20, for the runtime and the compiler alike.
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
  /// Bytes kept; longer text ends in "...". npos keeps everything.
  size_t maxLength = 40;
  /// Newline, carriage return and tab as \n, \r, \t rather than \x0a, ...
  bool namedControlEscapes = true;
  /// Bytes >= 0x80 as \xNN too, for text read from binary files (an .npy
  /// header); otherwise UTF-8 text passes through.
  bool escapeNonAscii = false;
};

/// The longest path kept whole in a message.
constexpr size_t kMaxPathLength = 4096;

/// `text` with quotes, backslashes and control characters escaped (a
/// backslash before ' and \), cut after style.maxLength bytes.
inline std::string escape(std::string_view text, const QuoteStyle &style = {}) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (i == style.maxLength) {
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
      out += "\\x";
      out += kHex[byte >> 4];
      out += kHex[byte & 15];
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
