//===- Npy.cpp - NumPy .npy reading and writing ---------------------------===//
//
// The .npy layout (numpy.lib.format): the magic "\x93NUMPY", a major and a
// minor version byte, the little-endian header length (uint16 for 1.0, uint32
// for 2.0 and 3.0), then the header - a Python dict literal with the keys
// 'descr', 'fortran_order' and 'shape', padded with spaces and ending in '\n'
// - and finally the raw array data.
//
// The header is parsed as a small subset of Python literal syntax (strings,
// integers, True/False/None, tuples, lists, one dict) rather than searched for
// substrings, so that reordered keys, odd whitespace, 1-tuples and junk are
// all handled exactly the way Python's ast.literal_eval would see them.
//
//===----------------------------------------------------------------------===//

#include "runtime/npy/Npy.h"
#include "support/AtomicFile.h"
#include "support/Quote.h"

#include <algorithm>
#include <array>
#include <cassert>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <new>
#include <system_error>

namespace moegen::npy {

namespace {

constexpr std::array<unsigned char, 6> kMagic = {0x93, 'N', 'U', 'M', 'P', 'Y'};
constexpr size_t kMagicAndVersionSize = 8;
/// NumPy aligns the data to this many bytes (numpy.lib.format.ARRAY_ALIGN).
constexpr size_t kArrayAlign = 64;
/// NumPy reserves room for the first dimension to grow to this many digits
/// (numpy.lib.format.GROWTH_AXIS_MAX_DIGITS), so headers can be rewritten in
/// place; matching it keeps serializeNpy byte-identical to np.save.
constexpr size_t kGrowthAxisMaxDigits = 21;
/// Deeper nesting than this in a header is rejected instead of recursing on.
constexpr int kMaxNesting = 32;
/// The longest header read. NumPy writes 2.0 headers only past 65535 bytes
/// (over 20000 dimensions); a longer length field is a corrupt file, and
/// reading it would commit up to 4 GiB from a stream.
constexpr size_t kMaxHeaderBytes = size_t(1) << 20;

struct DTypeInfo {
  DType dtype;
  std::string_view typeCode; // The descr without its byte-order character.
  size_t size;
};

constexpr std::array<DTypeInfo, 8> kDTypes = {{
    {DType::F32, "f4", 4},
    {DType::F16, "f2", 2},
    {DType::U16, "u2", 2},
    {DType::I16, "i2", 2},
    {DType::I32, "i4", 4},
    {DType::I64, "i8", 8},
    {DType::U8, "u1", 1},
    {DType::F64, "f8", 8},
}};

const DTypeInfo &info(DType dtype) {
  for (const DTypeInfo &entry : kDTypes)
    if (entry.dtype == dtype)
      return entry;
  assert(false && "unknown DType");
  return kDTypes[0];
}

constexpr std::string_view kSupportedDescrs =
    "'<f4', '<f2', '<u2' (also for bf16), '<i2', '<i4', '<i8', '|u1', '<f8'";

/// Renders header text for an error message: quoted like Python would, with
/// anything unprintable or non-ASCII escaped so the message stays on one line.
std::string quoteForMessage(std::string_view text) {
  return support::quote(text, support::QuoteStyle{std::string::npos, false, true});
}

/// The Python repr of a shape tuple: "()", "(5,)", "(3, 4)".
std::string shapeRepr(const std::vector<int64_t> &shape) {
  std::string result = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i != 0)
      result += ", ";
    result += std::to_string(shape[i]);
  }
  if (shape.size() == 1)
    result += ',';
  return result + ")";
}

/// The number of data bytes `shape` needs with `elementSize`-byte elements, or
/// nullopt if that does not fit in int64. Like NumPy, zero-sized dimensions
/// do not excuse the others from overflowing.
std::optional<int64_t> dataSizeFor(const std::vector<int64_t> &shape,
                                   size_t elementSize) {
  int64_t bytes = static_cast<int64_t>(elementSize);
  bool empty = false;
  for (int64_t dim : shape) {
    if (dim == 0) {
      empty = true;
      continue;
    }
    if (dim < 0 || bytes > std::numeric_limits<int64_t>::max() / dim)
      return std::nullopt;
    bytes *= dim;
  }
  return empty ? 0 : bytes;
}

//===----------------------------------------------------------------------===//
// Header literal parsing
//===----------------------------------------------------------------------===//

/// A Python literal value from the header.
struct PyValue {
  enum class Kind { String, Int, Bool, None, Tuple, List };
  Kind kind = Kind::None;
  std::string string;
  int64_t integer = 0;
  bool boolean = false;
  std::vector<PyValue> items;
};

/// Parses the header dict. Errors are messages without the name prefix.
class HeaderParser {
public:
  explicit HeaderParser(std::string_view headerText) : text(headerText) {}

  /// Parses "{key: value, ...}" plus the trailing padding into (key, value)
  /// pairs in file order.
  std::optional<std::vector<std::pair<std::string, PyValue>>>
  parseDict(std::string &error) {
    std::vector<std::pair<std::string, PyValue>> entries;
    // ast.literal_eval strips leading spaces and tabs, so NumPy accepts them.
    while (pos < text.size() && (text[pos] == ' ' || text[pos] == '\t'))
      ++pos;
    if (!consume('{'))
      return fail("expected '{' to start the header dict", error);
    while (true) {
      skipWhitespace();
      if (consume('}'))
        break;
      size_t keyOffset = pos;
      std::optional<PyValue> key = parseValue(0, error);
      if (!key)
        return std::nullopt;
      if (key->kind != PyValue::Kind::String) {
        pos = keyOffset;
        return fail("header dict keys must be strings", error);
      }
      skipWhitespace();
      if (!consume(':'))
        return fail("expected ':' after key " + quoteForMessage(key->string),
                    error);
      skipWhitespace();
      std::optional<PyValue> value = parseValue(0, error);
      if (!value)
        return std::nullopt;
      entries.emplace_back(std::move(key->string), std::move(*value));
      skipWhitespace();
      if (consume(','))
        continue;
      if (consume('}'))
        break;
      return fail("expected ',' or '}' after the value of " +
                      quoteForMessage(entries.back().first),
                  error);
    }
    // Only NumPy's space padding may follow (the final '\n' was checked and
    // removed by the caller).
    while (pos < text.size() && text[pos] == ' ')
      ++pos;
    if (pos != text.size())
      return fail("unexpected " + describeHere() + " after the header dict",
                  error);
    return entries;
  }

private:
  std::string_view text;
  size_t pos = 0;

  std::nullopt_t fail(const std::string &message, std::string &error) {
    error = "malformed header: " + message + " at header byte " +
            std::to_string(pos);
    return std::nullopt;
  }

  std::string describeHere() const {
    if (pos >= text.size())
      return "end of header";
    return quoteForMessage(text.substr(pos, 1));
  }

  bool consume(char c) {
    if (pos < text.size() && text[pos] == c) {
      ++pos;
      return true;
    }
    return false;
  }

  // Inside brackets Python allows any whitespace, newlines included.
  void skipWhitespace() {
    while (pos < text.size() &&
           (text[pos] == ' ' || text[pos] == '\t' || text[pos] == '\n' ||
            text[pos] == '\r' || text[pos] == '\f'))
      ++pos;
  }

  static bool isDigit(char c) { return c >= '0' && c <= '9'; }
  static bool isNameChar(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || isDigit(c) ||
           c == '_';
  }

  std::optional<PyValue> parseValue(int depth, std::string &error) {
    if (depth > kMaxNesting)
      return fail("nesting deeper than " + std::to_string(kMaxNesting) +
                      " levels",
                  error);
    if (pos >= text.size())
      return fail("expected a value but found end of header", error);
    char c = text[pos];
    if (c == '\'' || c == '"')
      return parseString(error);
    if (isDigit(c) || c == '-' || c == '+')
      return parseInteger(error);
    if (c == '(' || c == '[')
      return parseSequence(depth, error);
    if (isNameChar(c))
      return parseKeyword(error);
    return fail("expected a value but found " + describeHere(), error);
  }

  std::optional<PyValue> parseString(std::string &error) {
    char quote = text[pos++];
    PyValue value;
    value.kind = PyValue::Kind::String;
    while (true) {
      if (pos >= text.size() || text[pos] == '\n')
        return fail("unterminated string", error);
      char c = text[pos++];
      if (c == quote)
        return value;
      if (c == '\\') {
        // Only the escapes a repr of a dtype string could contain.
        if (pos >= text.size())
          return fail("unterminated string", error);
        char escaped = text[pos];
        if (escaped != '\\' && escaped != '\'' && escaped != '"')
          return fail("unsupported escape sequence in string", error);
        ++pos;
        c = escaped;
      }
      value.string += c;
    }
  }

  std::optional<PyValue> parseInteger(std::string &error) {
    size_t signStart = pos;
    bool negative = false;
    if (text[pos] == '-' || text[pos] == '+')
      negative = text[pos++] == '-';
    size_t start = pos;
    auto tooLarge = [&] {
      pos = signStart;
      return fail("integer too large", error);
    };
    uint64_t magnitude = 0;
    constexpr uint64_t kLimit = uint64_t(1) << 63; // |INT64_MIN|
    while (pos < text.size() && isDigit(text[pos])) {
      uint64_t digit = uint64_t(text[pos] - '0');
      if (magnitude > (kLimit - digit) / 10)
        return tooLarge();
      magnitude = magnitude * 10 + digit;
      ++pos;
    }
    if (pos == start)
      return fail("expected digits but found " + describeHere(), error);
    // Python rejects "01"; floats, "1_000", "0x10" and "3L" are not integers
    // NumPy ever writes.
    if (text[start] == '0' && pos - start > 1) {
      pos = start;
      return fail("integer with a leading zero", error);
    }
    if (pos < text.size() && (isNameChar(text[pos]) || text[pos] == '.'))
      return fail("unexpected " + describeHere() + " in integer", error);
    if (!negative && magnitude == kLimit)
      return tooLarge();
    PyValue value;
    value.kind = PyValue::Kind::Int;
    value.integer = negative ? static_cast<int64_t>(0 - magnitude)
                             : static_cast<int64_t>(magnitude);
    return value;
  }

  std::optional<PyValue> parseKeyword(std::string &error) {
    size_t start = pos;
    while (pos < text.size() && isNameChar(text[pos]))
      ++pos;
    std::string_view word = text.substr(start, pos - start);
    PyValue value;
    if (word == "True" || word == "False") {
      value.kind = PyValue::Kind::Bool;
      value.boolean = word == "True";
    } else if (word == "None") {
      value.kind = PyValue::Kind::None;
    } else {
      pos = start;
      return fail("unexpected name " + quoteForMessage(word), error);
    }
    return value;
  }

  /// "(a, b)", "(a,)", "()", "[...]"; "(a)" is just a parenthesized a.
  std::optional<PyValue> parseSequence(int depth, std::string &error) {
    char close = text[pos] == '(' ? ')' : ']';
    PyValue value;
    value.kind = close == ')' ? PyValue::Kind::Tuple : PyValue::Kind::List;
    ++pos;
    bool sawComma = false;
    while (true) {
      skipWhitespace();
      if (consume(close))
        break;
      std::optional<PyValue> item = parseValue(depth + 1, error);
      if (!item)
        return std::nullopt;
      value.items.push_back(std::move(*item));
      skipWhitespace();
      if (consume(',')) {
        sawComma = true;
        continue;
      }
      if (consume(close))
        break;
      return fail(std::string("expected ',' or '") + close + "' but found " +
                      describeHere(),
                  error);
    }
    if (close == ')' && value.items.size() == 1 && !sawComma) {
      PyValue inner = std::move(value.items.front());
      return inner;
    }
    return value;
  }
};

/// Validates a UTF-8 byte string (version 3.0 headers are UTF-8).
bool isValidUtf8(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    auto lead = static_cast<unsigned char>(text[i]);
    size_t length;
    uint32_t codePoint;
    if (lead < 0x80) {
      ++i;
      continue;
    } else if ((lead & 0xE0) == 0xC0) {
      length = 2;
      codePoint = lead & 0x1F;
    } else if ((lead & 0xF0) == 0xE0) {
      length = 3;
      codePoint = lead & 0x0F;
    } else if ((lead & 0xF8) == 0xF0) {
      length = 4;
      codePoint = lead & 0x07;
    } else {
      return false;
    }
    if (text.size() - i < length)
      return false;
    for (size_t k = 1; k < length; ++k) {
      auto next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xC0) != 0x80)
        return false;
      codePoint = (codePoint << 6) | (next & 0x3F);
    }
    static constexpr uint32_t kMinForLength[] = {0, 0, 0x80, 0x800, 0x10000};
    if (codePoint < kMinForLength[length] || codePoint > 0x10FFFF ||
        (codePoint >= 0xD800 && codePoint <= 0xDFFF))
      return false;
    i += length;
  }
  return true;
}

/// Maps a descr string to a supported DType, or explains why it is not one.
std::optional<DType> dtypeFromDescr(const std::string &descrText,
                                    std::string &message) {
  if (descrText.size() >= 2) {
    char byteOrder = descrText[0];
    std::string_view typeCode = std::string_view(descrText).substr(1);
    for (const DTypeInfo &entry : kDTypes) {
      if (entry.typeCode != typeCode ||
          std::string_view("<>|=").find(byteOrder) == std::string_view::npos)
        continue;
      // Byte order means nothing for 1-byte types; NumPy treats them alike.
      if (byteOrder == '<' || entry.size == 1)
        return entry.dtype;
      std::string fix =
          "; save with dtype " + quoteForMessage("<" + std::string(typeCode));
      if (byteOrder == '>')
        message = "big-endian data is not supported" + fix;
      else if (byteOrder == '=')
        message = "descr " + quoteForMessage(descrText) +
                  " uses native byte order, which is platform dependent" + fix;
      else
        message = "descr " + quoteForMessage(descrText) +
                  " uses byte order '|', which is only valid for 1-byte types" +
                  fix;
      return std::nullopt;
    }
  }
  message = "unsupported dtype " + quoteForMessage(descrText) +
            "; supported dtypes are " + std::string(kSupportedDescrs);
  return std::nullopt;
}

/// Reads a little-endian unsigned integer of `size` bytes.
uint32_t readLittleEndian(std::span<const std::byte> bytes, size_t size) {
  uint32_t value = 0;
  for (size_t i = 0; i < size; ++i)
    value |= uint32_t(std::to_integer<uint8_t>(bytes[i])) << (8 * i);
  return value;
}

/// Interprets the header dict; `message` gets the reason on failure.
std::optional<Array>
arrayFromHeader(std::vector<std::pair<std::string, PyValue>> &entries,
                std::string &message) {
  static constexpr std::string_view kKeys[] = {"descr", "fortran_order",
                                               "shape"};
  const PyValue *values[3] = {nullptr, nullptr, nullptr};
  for (const auto &[key, value] : entries) {
    size_t index = 0;
    while (index < 3 && kKeys[index] != key)
      ++index;
    if (index == 3) {
      message = "header key " + quoteForMessage(key) +
                " is not supported; expected exactly 'descr', "
                "'fortran_order' and 'shape'";
      return std::nullopt;
    }
    if (values[index]) {
      message = "header has duplicate key " + quoteForMessage(key);
      return std::nullopt;
    }
    values[index] = &value;
  }
  for (size_t index = 0; index < 3; ++index) {
    if (!values[index]) {
      message = "header is missing key " + quoteForMessage(kKeys[index]);
      return std::nullopt;
    }
  }
  const PyValue &descrValue = *values[0];
  const PyValue &fortranValue = *values[1];
  const PyValue &shapeValue = *values[2];

  Array array;
  if (descrValue.kind == PyValue::Kind::List) {
    message = "structured dtypes are not supported ('descr' is a list); "
              "supported dtypes are " +
              std::string(kSupportedDescrs);
    return std::nullopt;
  }
  if (descrValue.kind != PyValue::Kind::String) {
    message = "'descr' must be a string";
    return std::nullopt;
  }
  std::optional<DType> dtype = dtypeFromDescr(descrValue.string, message);
  if (!dtype)
    return std::nullopt;
  array.dtype = *dtype;

  if (fortranValue.kind != PyValue::Kind::Bool) {
    message = "'fortran_order' must be True or False";
    return std::nullopt;
  }
  if (fortranValue.boolean) {
    message = "Fortran-order arrays are not supported; save a C-contiguous "
              "array (np.ascontiguousarray)";
    return std::nullopt;
  }

  if (shapeValue.kind != PyValue::Kind::Tuple) {
    message = "'shape' must be a tuple of non-negative integers";
    return std::nullopt;
  }
  for (size_t i = 0; i < shapeValue.items.size(); ++i) {
    const PyValue &dim = shapeValue.items[i];
    if (dim.kind != PyValue::Kind::Int) {
      message = "'shape' must be a tuple of non-negative integers";
      return std::nullopt;
    }
    if (dim.integer < 0) {
      message = "'shape' entry " + std::to_string(i) + " is negative (" +
                std::to_string(dim.integer) + ")";
      return std::nullopt;
    }
    array.shape.push_back(dim.integer);
  }
  if (!dataSizeFor(array.shape, itemSize(array.dtype))) {
    message = "array too large: shape " + shapeRepr(array.shape) + " of " +
              quoteForMessage(descr(array.dtype)) +
              " needs at least 2^63 bytes";
    return std::nullopt;
  }
  return array;
}

std::string errnoMessage(int errorNumber) {
  return std::error_code(errorNumber, std::generic_category()).message();
}

} // namespace

//===----------------------------------------------------------------------===//
// Public API
//===----------------------------------------------------------------------===//

std::string_view descr(DType dtype) {
  switch (dtype) {
  case DType::F32:
    return "<f4";
  case DType::F16:
    return "<f2";
  case DType::U16:
    return "<u2";
  case DType::I16:
    return "<i2";
  case DType::I32:
    return "<i4";
  case DType::I64:
    return "<i8";
  case DType::U8:
    return "|u1";
  case DType::F64:
    return "<f8";
  }
  assert(false && "unknown DType");
  return "";
}

size_t itemSize(DType dtype) { return info(dtype).size; }

int64_t Array::numElements() const {
  int64_t count = 1;
  for (int64_t dim : shape)
    count *= dim;
  return count;
}

namespace {

/// Where a .npy file's data starts and how long it must be.
struct Layout {
  Array array; // dtype and shape; no data yet
  size_t dataOffset = 0;
  uint64_t dataSize = 0;
};

/// Parses the preamble and header of a .npy file of `totalSize` bytes whose
/// first bytes are `prefix`. `prefix` holds the preamble and the header, or
/// as much of them as the file has; the data need not follow.
std::optional<Layout> parseLayout(std::span<const std::byte> prefix,
                                  uint64_t totalSize, std::string_view name,
                                  std::string &error) {
  auto fail = [&](const std::string &message) -> std::optional<Layout> {
    error = std::string(name) + ": " + message;
    return std::nullopt;
  };

  // Magic: a short prefix of it is a truncated .npy file, anything else is
  // not a .npy file at all.
  size_t magicBytesPresent = std::min(prefix.size(), kMagic.size());
  for (size_t i = 0; i < magicBytesPresent; ++i)
    if (std::to_integer<unsigned char>(prefix[i]) != kMagic[i])
      return fail("not a .npy file: it does not start with the \\x93NUMPY "
                  "magic string");
  if (totalSize < kMagicAndVersionSize + 2 ||
      prefix.size() < kMagicAndVersionSize + 2)
    return fail("truncated: expected at least " +
                std::to_string(kMagicAndVersionSize + 2) +
                " bytes of .npy preamble, found " + std::to_string(totalSize));

  unsigned major = std::to_integer<unsigned>(prefix[6]);
  unsigned minor = std::to_integer<unsigned>(prefix[7]);
  if ((major != 1 && major != 2 && major != 3) || minor != 0)
    return fail("unsupported .npy version " + std::to_string(major) + "." +
                std::to_string(minor) +
                "; supported versions are 1.0, 2.0 and 3.0");

  size_t lengthFieldSize = major == 1 ? 2 : 4;
  size_t preambleSize = kMagicAndVersionSize + lengthFieldSize;
  if (totalSize < preambleSize || prefix.size() < preambleSize)
    return fail("truncated: expected at least " + std::to_string(preambleSize) +
                " bytes of .npy preamble, found " + std::to_string(totalSize));
  size_t headerLength =
      readLittleEndian(prefix.subspan(kMagicAndVersionSize), lengthFieldSize);
  // A stream's size is unknown (totalSize is then the largest uint64_t),
  // but a stream that ended is wholly in `prefix`.
  uint64_t bytesAfterPreamble = totalSize - preambleSize;
  auto truncatedHeader = [&](uint64_t present) {
    return fail("truncated: the header length is " +
                std::to_string(headerLength) + " bytes but only " +
                std::to_string(present) + " bytes follow the preamble");
  };
  if (headerLength > bytesAfterPreamble)
    return truncatedHeader(bytesAfterPreamble);
  if (headerLength > kMaxHeaderBytes)
    return fail("malformed header: it is " + std::to_string(headerLength) +
                " bytes long; headers are at most " +
                std::to_string(kMaxHeaderBytes) + " bytes");
  if (headerLength > prefix.size() - preambleSize)
    return truncatedHeader(prefix.size() - preambleSize);

  std::string_view header(
      reinterpret_cast<const char *>(prefix.data() + preambleSize),
      headerLength);
  if (header.empty() || header.back() != '\n')
    return fail("malformed header: it must end with a newline");
  header.remove_suffix(1);
  // 1.0 and 2.0 headers are latin-1, where every byte is a character.
  if (major == 3 && !isValidUtf8(header))
    return fail("malformed header: a version 3.0 header must be UTF-8");

  std::string message;
  HeaderParser parser(header);
  auto entries = parser.parseDict(message);
  if (!entries)
    return fail(message);
  std::optional<Array> array = arrayFromHeader(*entries, message);
  if (!array)
    return fail(message);

  Layout layout;
  // arrayFromHeader checked that this fits in int64.
  layout.dataSize =
      static_cast<uint64_t>(*dataSizeFor(array->shape, itemSize(array->dtype)));
  layout.array = std::move(*array);
  layout.dataOffset = preambleSize + headerLength;
  return layout;
}

std::string dataSizeMismatch(const Layout &layout, uint64_t found) {
  return std::string(found < layout.dataSize ? "truncated" : "trailing data") +
         ": expected " + std::to_string(layout.dataSize) +
         " data bytes, found " + std::to_string(found);
}

/// Appends up to `count` bytes of `file` to `bytes`, growing it only as
/// bytes arrive; stops early at end of file. False on a read error.
bool readUpTo(std::FILE *file, std::vector<std::byte> &bytes, uint64_t count) {
  constexpr uint64_t kChunk = uint64_t(1) << 20;
  while (count > 0) {
    size_t want = static_cast<size_t>(std::min(count, kChunk));
    size_t used = bytes.size();
    bytes.resize(used + want);
    size_t got = std::fread(bytes.data() + used, 1, want, file);
    bytes.resize(used + got);
    count -= got;
    if (got < want)
      return !std::ferror(file);
  }
  return true;
}

} // namespace

std::optional<Array> parseNpy(std::span<const std::byte> bytes,
                              std::string_view name, std::string &error) {
  std::optional<Layout> layout = parseLayout(bytes, bytes.size(), name, error);
  if (!layout)
    return std::nullopt;
  std::span<const std::byte> data = bytes.subspan(layout->dataOffset);
  if (data.size() != layout->dataSize) {
    error = std::string(name) + ": " + dataSizeMismatch(*layout, data.size());
    return std::nullopt;
  }
  layout->array.data.assign(data.begin(), data.end());
  return std::move(layout->array);
}

std::optional<Array> readNpy(const std::string &path, std::string &error) {
  std::FILE *file = std::fopen(path.c_str(), "rb");
  if (!file) {
    error = path + ": cannot open for reading: " + errnoMessage(errno);
    return std::nullopt;
  }
  std::unique_ptr<std::FILE, int (*)(std::FILE *)> closer(file, &std::fclose);
  auto fail = [&](const std::string &message) -> std::optional<Array> {
    error = path + ": " + message;
    return std::nullopt;
  };
  auto readFailed = [&] { return fail("read error: " + errnoMessage(errno)); };

  // Nothing is read on trust: the preamble gives the header's length, the
  // header the data's, and no more than that (plus one byte, to tell
  // trailing data) is ever read. A regular file's size is checked against
  // the header before the data's memory is committed; a stream (a pipe,
  // /dev/zero) is read only as far as the header says.
  std::error_code sizeError;
  std::filesystem::file_status status =
      std::filesystem::status(path, sizeError);
  bool regular = !sizeError && std::filesystem::is_regular_file(status);
  uint64_t fileSize = regular ? std::filesystem::file_size(path, sizeError) : 0;
  if (sizeError)
    regular = false;

  errno = 0;
  std::vector<std::byte> prefix;
  constexpr size_t kLongestPreamble = kMagicAndVersionSize + 4;
  if (!readUpTo(file, prefix, kLongestPreamble))
    return readFailed();
  // The header's length, if the preamble is sound (parseLayout says why
  // not otherwise).
  if (prefix.size() >= kMagicAndVersionSize + 2 &&
      std::equal(kMagic.begin(), kMagic.end(), prefix.begin(),
                 [](unsigned char c, std::byte b) {
                   return std::to_integer<unsigned char>(b) == c;
                 })) {
    unsigned major = std::to_integer<unsigned>(prefix[6]);
    size_t lengthFieldSize = major == 1 ? 2 : 4;
    size_t preambleSize = kMagicAndVersionSize + lengthFieldSize;
    if (prefix.size() >= preambleSize) {
      uint64_t headerLength = readLittleEndian(
          std::span<const std::byte>(prefix).subspan(kMagicAndVersionSize),
          lengthFieldSize);
      uint64_t wanted = std::min<uint64_t>(headerLength, kMaxHeaderBytes + 1);
      if (preambleSize + wanted > prefix.size() &&
          !readUpTo(file, prefix, preambleSize + wanted - prefix.size()))
        return readFailed();
    }
  }
  bool ended = std::feof(file);
  uint64_t totalSize = regular ? std::max<uint64_t>(fileSize, prefix.size())
                       : ended ? prefix.size()
                               : std::numeric_limits<uint64_t>::max();
  std::optional<Layout> layout = parseLayout(prefix, totalSize, path, error);
  if (!layout)
    return std::nullopt;

  // Header bytes read past the header belong to the data.
  std::vector<std::byte> data(prefix.begin() + layout->dataOffset,
                              prefix.end());
  if (regular && totalSize - layout->dataOffset != layout->dataSize)
    return fail(dataSizeMismatch(*layout, totalSize - layout->dataOffset));
  try {
    if (regular)
      data.reserve(layout->dataSize);
    if (data.size() < layout->dataSize &&
        !readUpTo(file, data, layout->dataSize - data.size()))
      return readFailed();
  } catch (const std::bad_alloc &) {
    return fail("cannot read: " + std::to_string(layout->dataSize) +
                " data bytes do not fit in memory");
  }
  if (data.size() < layout->dataSize)
    return fail(dataSizeMismatch(*layout, data.size()));
  // One byte more tells trailing data (a regular file that grew, or a
  // stream that goes on) without reading it.
  bool more = data.size() > layout->dataSize || std::fgetc(file) != EOF;
  if (std::ferror(file))
    return readFailed();
  if (more)
    return fail("trailing data: expected " + std::to_string(layout->dataSize) +
                " data bytes, found more");
  layout->array.data = std::move(data);
  return std::move(layout->array);
}

std::vector<std::byte> serializeNpy(const Array &array) {
  assert(dataSizeFor(array.shape, itemSize(array.dtype)) &&
         uint64_t(*dataSizeFor(array.shape, itemSize(array.dtype))) ==
             array.data.size() &&
         "inconsistent Array");

  // Exactly numpy.lib.format._write_array_header: sorted keys, Python reprs,
  // growth room for the first axis, then space padding to kArrayAlign.
  std::string header =
      "{'descr': '" + std::string(descr(array.dtype)) +
      "', 'fortran_order': False, 'shape': " + shapeRepr(array.shape) + ", }";
  if (!array.shape.empty()) {
    size_t digits = std::to_string(array.shape.front()).size();
    if (digits < kGrowthAxisMaxDigits)
      header.append(kGrowthAxisMaxDigits - digits, ' ');
  }
  size_t lengthWithNewline = header.size() + 1;
  auto paddingFor = [&](size_t preambleSize) {
    return kArrayAlign - (preambleSize + lengthWithNewline) % kArrayAlign;
  };
  unsigned major = 1;
  size_t lengthFieldSize = 2;
  if (lengthWithNewline + paddingFor(10) > 0xFFFF) {
    major = 2;
    lengthFieldSize = 4;
  }
  size_t preambleSize = kMagicAndVersionSize + lengthFieldSize;
  size_t headerLength = lengthWithNewline + paddingFor(preambleSize);
  assert(headerLength <= 0xFFFFFFFFu && "header too large for .npy 2.0");

  std::vector<std::byte> bytes;
  bytes.reserve(preambleSize + headerLength + array.data.size());
  for (unsigned char c : kMagic)
    bytes.push_back(std::byte(c));
  bytes.push_back(std::byte(major));
  bytes.push_back(std::byte(0));
  for (size_t i = 0; i < lengthFieldSize; ++i)
    bytes.push_back(std::byte((headerLength >> (8 * i)) & 0xFF));
  for (char c : header)
    bytes.push_back(std::byte(c));
  bytes.insert(bytes.end(), headerLength - lengthWithNewline, std::byte(' '));
  bytes.push_back(std::byte('\n'));
  bytes.insert(bytes.end(), array.data.begin(), array.data.end());
  return bytes;
}

bool writeNpy(const std::string &path, const Array &array, std::string &error) {
  auto fail = [&](const std::string &message) {
    error = path + ": " + message;
    return false;
  };

  // serializeNpy only asserts consistency; a bad Array must not become a file.
  for (size_t i = 0; i < array.shape.size(); ++i)
    if (array.shape[i] < 0)
      return fail("cannot write: shape entry " + std::to_string(i) +
                  " is negative (" + std::to_string(array.shape[i]) + ")");
  std::optional<int64_t> expected =
      dataSizeFor(array.shape, itemSize(array.dtype));
  if (!expected)
    return fail("cannot write: shape " + shapeRepr(array.shape) + " of " +
                quoteForMessage(descr(array.dtype)) +
                " needs at least 2^63 bytes");
  if (uint64_t(*expected) != array.data.size())
    return fail("cannot write: shape " + shapeRepr(array.shape) + " of " +
                quoteForMessage(descr(array.dtype)) + " needs " +
                std::to_string(*expected) + " data bytes, but the array has " +
                std::to_string(array.data.size()));

  if (!std::filesystem::path(path).has_filename())
    return fail("cannot write: the path names a directory, not a file");
  return support::writeFileAtomically(path, serializeNpy(array), error);
}

} // namespace moegen::npy
