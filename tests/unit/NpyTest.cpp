//===- NpyTest.cpp - Tests for .npy I/O and half/bf16 conversion ----------===//
//
// The NumPy fixtures below were produced by NumPy 2.4.6 (np.save, or
// numpy.lib.format.write_array for explicit versions) and are embedded as hex
// so the tests do not need NumPy. Regenerate with, e.g.:
//   python3 -c "import numpy as np, io; b = io.BytesIO();
//               np.save(b, np.arange(6, dtype='<f4').reshape(2, 3) * 0.5 - 1);
//               print(b.getvalue().hex())"
//
//===----------------------------------------------------------------------===//

#include "runtime/npy/Npy.h"
#include "runtime/npy/HalfFloat.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <csignal>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace moegen::npy;
namespace fs = std::filesystem;

namespace {

//===----------------------------------------------------------------------===//
// NumPy fixtures
//===----------------------------------------------------------------------===//

// F32_2x3: np 2.4.6, <f4 shape (2, 3)
static const char *const kF32_2x3 =
    "934e554d5059010076007b276465736372273a20273c6634272c2027666f727472616e5f"
    "6f72646572273a2046616c73652c20277368617065273a2028322c2033292c207d202020"
    "202020202020202020202020202020202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020200a000080bf000000bf000000000000003f"
    "0000803f0000c03f";

// F16_4: np 2.4.6, <f2 shape (4,)
static const char *const kF16_4 =
    "934e554d5059010076007b276465736372273a20273c6632272c2027666f727472616e5f"
    "6f72646572273a2046616c73652c20277368617065273a2028342c292c207d2020202020"
    "202020202020202020202020202020202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020200a003c00c00038ff7b";

// BF16AsU16_2x2: np 2.4.6, <u2 shape (2, 2)
static const char *const kBF16AsU16_2x2 =
    "934e554d5059010076007b276465736372273a20273c7532272c2027666f727472616e5f"
    "6f72646572273a2046616c73652c20277368617065273a2028322c2032292c207d202020"
    "202020202020202020202020202020202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020200a803f00c0203e617f";

// I16_3: np 2.4.6, <i2 shape (3,)
static const char *const kI16_3 =
    "934e554d5059010076007b276465736372273a20273c6932272c2027666f727472616e5f"
    "6f72646572273a2046616c73652c20277368617065273a2028332c292c207d2020202020"
    "202020202020202020202020202020202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020200affff0000ff7f";

// I32_Scalar: np 2.4.6, <i4 shape ()
static const char *const kI32_Scalar =
    "934e554d5059010076007b276465736372273a20273c6934272c2027666f727472616e5f"
    "6f72646572273a2046616c73652c20277368617065273a2028292c207d20202020202020"
    "202020202020202020202020202020202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020200a07000000";

// I64_0x5: np 2.4.6, <i8 shape (0, 5)
static const char *const kI64_0x5 =
    "934e554d5059010076007b276465736372273a20273c6938272c2027666f727472616e5f"
    "6f72646572273a2046616c73652c20277368617065273a2028302c2035292c207d202020"
    "202020202020202020202020202020202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020200a";

// U8_2x1x3: np 2.4.6, |u1 shape (2, 1, 3)
static const char *const kU8_2x1x3 =
    "934e554d5059010076007b276465736372273a20277c7531272c2027666f727472616e5f"
    "6f72646572273a2046616c73652c20277368617065273a2028322c20312c2033292c207d"
    "202020202020202020202020202020202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020200a00285078a0c8";

// F64_1: np 2.4.6, <f8 shape (1,)
static const char *const kF64_1 =
    "934e554d5059010076007b276465736372273a20273c6638272c2027666f727472616e5f"
    "6f72646572273a2046616c73652c20277368617065273a2028312c292c207d2020202020"
    "202020202020202020202020202020202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020200a9a9999999999b9bf";

// I32_Big0: np 2.4.6, <i4 shape (12345678901, 0)
static const char *const kI32_Big0 =
    "934e554d5059010076007b276465736372273a20273c6934272c2027666f727472616e5f"
    "6f72646572273a2046616c73652c20277368617065273a20283132333435363738393031"
    "2c2030292c207d2020202020202020202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020200a";

// F32_2x3_V2: np 2.4.6, <f4 shape (2, 3) version (2, 0)
static const char *const kF32_2x3_V2 =
    "934e554d50590200740000007b276465736372273a20273c6634272c2027666f72747261"
    "6e5f6f72646572273a2046616c73652c20277368617065273a2028322c2033292c207d20"
    "202020202020202020202020202020202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020200a000080bf000000bf000000000000003f"
    "0000803f0000c03f";

// F32_2x3_V3: np 2.4.6, <f4 shape (2, 3) version (3, 0)
static const char *const kF32_2x3_V3 =
    "934e554d50590300740000007b276465736372273a20273c6634272c2027666f72747261"
    "6e5f6f72646572273a2046616c73652c20277368617065273a2028322c2033292c207d20"
    "202020202020202020202020202020202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020200a000080bf000000bf000000000000003f"
    "0000803f0000c03f";

// FortranF32_2x3: np 2.4.6, <f4 shape (2, 3)
static const char *const kFortranF32_2x3 =
    "934e554d5059010076007b276465736372273a20273c6634272c2027666f727472616e5f"
    "6f72646572273a20547275652c20277368617065273a2028322c2033292c207d20202020"
    "202020202020202020202020202020202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020200a000080bf0000003f000000bf0000803f"
    "000000000000c03f";

// BigEndianF32_2: np 2.4.6, >f4 shape (2,)
static const char *const kBigEndianF32_2 =
    "934e554d5059010076007b276465736372273a20273e6634272c2027666f727472616e5f"
    "6f72646572273a2046616c73652c20277368617065273a2028322c292c207d2020202020"
    "202020202020202020202020202020202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020200a3f80000040000000";

// Complex64_1: np 2.4.6, <c8 shape (1,)
static const char *const kComplex64_1 =
    "934e554d5059010076007b276465736372273a20273c6338272c2027666f727472616e5f"
    "6f72646572273a2046616c73652c20277368617065273a2028312c292c207d2020202020"
    "202020202020202020202020202020202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020200a000000000000803f";

// Structured_1: np 2.4.6, |V4 shape (1,)
static const char *const kStructured_1 =
    "934e554d5059010076007b276465736372273a205b282761272c20273c663427295d2c20"
    "27666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028312c"
    "292c207d2020202020202020202020202020202020202020202020202020202020202020"
    "202020202020202020202020202020202020200a00000000";

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

std::vector<std::byte> fromHex(std::string_view hex) {
  auto nibble = [](char c) -> unsigned {
    return c <= '9' ? unsigned(c - '0') : unsigned(c - 'a' + 10);
  };
  std::vector<std::byte> bytes;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    bytes.push_back(std::byte((nibble(hex[i]) << 4) | nibble(hex[i + 1])));
  return bytes;
}

std::vector<std::byte> fromString(std::string_view text) {
  std::vector<std::byte> bytes;
  for (char c : text)
    bytes.push_back(std::byte(c));
  return bytes;
}

/// A .npy file with the given header text used verbatim (it must include its
/// own padding and final '\n'), followed by `dataSize` bytes.
std::vector<std::byte> npyWithHeader(std::string_view header,
                                     size_t dataSize = 0, unsigned major = 1,
                                     unsigned minor = 0) {
  std::vector<std::byte> bytes = fromString("\x93NUMPY");
  bytes.push_back(std::byte(major));
  bytes.push_back(std::byte(minor));
  size_t lengthFieldSize = major == 1 ? 2 : 4;
  for (size_t i = 0; i < lengthFieldSize; ++i)
    bytes.push_back(std::byte((header.size() >> (8 * i)) & 0xFF));
  std::vector<std::byte> text = fromString(header);
  bytes.insert(bytes.end(), text.begin(), text.end());
  for (size_t i = 0; i < dataSize; ++i)
    bytes.push_back(std::byte(i * 37 + 11));
  return bytes;
}

/// A .npy file whose header is `dict` plus '\n'.
std::vector<std::byte> npyWithDict(std::string_view dict, size_t dataSize = 0) {
  return npyWithHeader(std::string(dict) + "\n", dataSize);
}

/// An array of `dtype` and `shape` filled with a deterministic byte pattern.
Array makeArray(DType dtype, std::vector<int64_t> shape, unsigned seed = 1) {
  Array array;
  array.dtype = dtype;
  array.shape = std::move(shape);
  array.data.resize(size_t(array.numElements()) * itemSize(dtype));
  for (size_t i = 0; i < array.data.size(); ++i)
    array.data[i] = std::byte((i * 131 + seed * 17 + (i >> 8)) & 0xFF);
  return array;
}

void expectSameArray(const Array &actual, const Array &expected) {
  EXPECT_EQ(actual.dtype, expected.dtype);
  EXPECT_EQ(actual.shape, expected.shape);
  EXPECT_TRUE(actual.data == expected.data);
}

std::optional<Array> parse(const std::vector<std::byte> &bytes,
                           std::string &error) {
  return parseNpy(bytes, "t.npy", error);
}

/// Expects parsing to fail with exactly "t.npy: " + `message`.
void expectError(const std::vector<std::byte> &bytes,
                 const std::string &message) {
  std::string error;
  std::optional<Array> array = parse(bytes, error);
  EXPECT_FALSE(array.has_value());
  EXPECT_EQ(error, "t.npy: " + message);
}

void expectParses(const std::vector<std::byte> &bytes) {
  std::string error;
  EXPECT_TRUE(parse(bytes, error).has_value()) << error;
}

/// The file names in `directory`, sorted.
std::vector<std::string> listDirectory(const fs::path &directory) {
  std::vector<std::string> names;
  for (const fs::directory_entry &entry : fs::directory_iterator(directory))
    names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<std::byte> readFile(const fs::path &path) {
  std::ifstream in(path, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  return fromString(text);
}

/// A fresh directory under the system temporary directory, removed at the end.
class NpyFileTest : public ::testing::Test {
protected:
  void SetUp() override {
    static std::atomic<unsigned> counter{0};
    auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
    directory = fs::temp_directory_path() /
                ("moegen-npy-test-" + std::to_string(stamp) + "-" +
                 std::to_string(counter++));
    fs::create_directories(directory);
  }
  void TearDown() override {
    std::error_code ignored;
    fs::permissions(directory, fs::perms::owner_all, ignored);
    fs::remove_all(directory, ignored);
  }
  fs::path directory;
};

//===----------------------------------------------------------------------===//
// HalfFloat
//===----------------------------------------------------------------------===//

// The conversions are usable at compile time.
static_assert(floatToHalf(1.0f) == 0x3C00);
static_assert(halfToFloat(0x3C00) == 1.0f);
static_assert(floatToBf16(1.0f) == 0x3F80);
static_assert(bf16ToFloat(0x3F80) == 1.0f);
static_assert(halfToFloat(0x0001) == 0x1p-24f);

float floatFromBits(uint32_t bits) { return std::bit_cast<float>(bits); }

TEST(HalfFloatTest, KnownHalfValues) {
  EXPECT_EQ(floatToHalf(1.0f), 0x3C00);
  EXPECT_EQ(floatToHalf(-2.0f), 0xC000);
  EXPECT_EQ(floatToHalf(0.0f), 0x0000);
  EXPECT_EQ(floatToHalf(-0.0f), 0x8000);
  EXPECT_EQ(floatToHalf(65504.0f), 0x7BFF); // Largest finite half.
  EXPECT_EQ(halfToFloat(0x7BFF), 65504.0f);
  EXPECT_EQ(floatToHalf(0x1p-14f), 0x0400); // Smallest normal.
  EXPECT_EQ(floatToHalf(0x1p-24f), 0x0001); // Smallest subnormal.
  EXPECT_EQ(halfToFloat(0x0001), 0x1p-24f);
  EXPECT_EQ(halfToFloat(0x03FF), 0x1p-14f - 0x1p-24f); // Largest subnormal.
  EXPECT_EQ(halfToFloat(0x8001), -0x1p-24f);

  // Overflow: 65520 is half way to the next (unrepresentable) step.
  EXPECT_EQ(floatToHalf(65520.0f), 0x7C00);
  EXPECT_EQ(floatToHalf(-65520.0f), 0xFC00);
  EXPECT_EQ(floatToHalf(std::nextafter(65520.0f, 0.0f)), 0x7BFF);
  EXPECT_EQ(floatToHalf(1e10f), 0x7C00);
  EXPECT_EQ(floatToHalf(std::numeric_limits<float>::infinity()), 0x7C00);
  EXPECT_EQ(floatToHalf(-std::numeric_limits<float>::infinity()), 0xFC00);
  EXPECT_TRUE(std::isinf(halfToFloat(0x7C00)));

  // Ties to even.
  EXPECT_EQ(floatToHalf(1.0f + 0x1p-11f), 0x3C00);     // 1 | 1+2^-10: even 1.
  EXPECT_EQ(floatToHalf(1.0f + 3 * 0x1p-11f), 0x3C02); // Up to even.
  EXPECT_EQ(floatToHalf(0x1p-25f), 0x0000);            // 0 | 2^-24: even 0.
  EXPECT_EQ(floatToHalf(std::nextafter(0x1p-25f, 1.0f)), 0x0001);
  EXPECT_EQ(floatToHalf(3 * 0x1p-25f), 0x0002);        // 2^-24 | 2^-23: even.
  EXPECT_EQ(floatToHalf(0x1p-14f - 0x1p-25f), 0x0400); // Rounds up to normal.
  EXPECT_EQ(floatToHalf(1e-10f), 0x0000);
  EXPECT_EQ(floatToHalf(-1e-10f), 0x8000);

  // NaN stays NaN, quiet, with its sign; a payload only in the low float bits
  // must not turn into infinity.
  EXPECT_EQ(floatToHalf(std::numeric_limits<float>::quiet_NaN()), 0x7E00);
  EXPECT_EQ(floatToHalf(floatFromBits(0x7F800001)), 0x7E00);
  EXPECT_EQ(floatToHalf(floatFromBits(0xFFC00000)), 0xFE00);
  EXPECT_TRUE(std::isnan(halfToFloat(0x7E00)));
  EXPECT_TRUE(std::isnan(halfToFloat(0x7C01)));
}

TEST(HalfFloatTest, ExhaustiveHalfRoundTrip) {
  for (uint32_t bits = 0; bits <= 0xFFFF; ++bits) {
    auto half = uint16_t(bits);
    float value = halfToFloat(half);
    bool isNaN = (half & 0x7C00) == 0x7C00 && (half & 0x03FF) != 0;
    ASSERT_EQ(std::isnan(value), isNaN) << std::hex << bits;
    if (isNaN) {
      uint16_t back = floatToHalf(value);
      ASSERT_TRUE((back & 0x7C00) == 0x7C00 && (back & 0x03FF) != 0)
          << std::hex << bits;
      ASSERT_EQ(back, half | 0x0200) << std::hex << bits; // Quieted payload.
    } else {
      ASSERT_EQ(floatToHalf(value), half) << std::hex << bits;
      ASSERT_EQ(std::signbit(value), (half & 0x8000) != 0);
    }
  }
}

TEST(HalfFloatTest, HalfRoundsToNearestEven) {
  // Between every pair of adjacent finite halves (and from 65504 to the
  // overflow threshold), the exact midpoint ties to the even neighbour and the
  // floats just beside it go to the nearer one.
  for (uint32_t bits = 0; bits < 0x7C00; ++bits) {
    for (uint16_t sign : {uint16_t(0), uint16_t(0x8000)}) {
      auto low = uint16_t(bits | sign);
      auto high = uint16_t((bits + 1) | sign);
      double lowValue = halfToFloat(low);
      double highValue = bits + 1 == 0x7C00 ? (sign ? -65536.0 : 65536.0)
                                            : double(halfToFloat(high));
      auto middle = float((lowValue + highValue) / 2); // Exact in float.
      ASSERT_EQ(double(middle), (lowValue + highValue) / 2);
      uint16_t even = (bits & 1) ? high : low;
      ASSERT_EQ(floatToHalf(middle), even) << std::hex << bits;
      ASSERT_EQ(floatToHalf(std::nextafter(middle, float(lowValue))), low)
          << std::hex << bits;
      ASSERT_EQ(floatToHalf(std::nextafter(middle, float(highValue))), high)
          << std::hex << bits;
    }
  }
}

#ifdef __FLT16_MAX__
TEST(HalfFloatTest, MatchesCompilerFloat16) {
  // The compiler's own float -> _Float16 conversion is IEEE round to nearest
  // even; compare on random bit patterns and every float exponent.
  std::mt19937 random(1234);
  for (int i = 0; i < 1000000; ++i) {
    float value = floatFromBits(uint32_t(random()));
    if (std::isnan(value))
      continue;
    auto expected = std::bit_cast<uint16_t>(static_cast<_Float16>(value));
    ASSERT_EQ(floatToHalf(value), expected) << value;
  }
  for (uint32_t bits = 0; bits <= 0xFFFF; ++bits) {
    auto half = std::bit_cast<_Float16>(uint16_t(bits));
    float value = halfToFloat(uint16_t(bits));
    if (!std::isnan(value)) {
      ASSERT_EQ(value, static_cast<float>(half)) << std::hex << bits;
    }
  }
}
#endif

TEST(HalfFloatTest, KnownBf16Values) {
  EXPECT_EQ(floatToBf16(1.0f), 0x3F80);
  EXPECT_EQ(floatToBf16(-2.0f), 0xC000);
  EXPECT_EQ(floatToBf16(-0.0f), 0x8000);
  EXPECT_EQ(bf16ToFloat(0x3F80), 1.0f);
  EXPECT_EQ(bf16ToFloat(0x0001), floatFromBits(0x00010000)); // Subnormal.
  // Ties to even in the dropped 16 bits.
  EXPECT_EQ(floatToBf16(floatFromBits(0x3F808000)), 0x3F80);
  EXPECT_EQ(floatToBf16(floatFromBits(0x3F818000)), 0x3F82);
  EXPECT_EQ(floatToBf16(floatFromBits(0x3F808001)), 0x3F81);
  EXPECT_EQ(floatToBf16(floatFromBits(0x3F807FFF)), 0x3F80);
  // The largest float rounds up to infinity, as in hardware.
  EXPECT_EQ(floatToBf16(std::numeric_limits<float>::max()), 0x7F80);
  EXPECT_EQ(floatToBf16(floatFromBits(0x7F7F7FFF)), 0x7F7F);
  EXPECT_EQ(floatToBf16(std::numeric_limits<float>::infinity()), 0x7F80);
  EXPECT_EQ(floatToBf16(-std::numeric_limits<float>::infinity()), 0xFF80);
  // NaN stays NaN even when its payload is only in the dropped bits.
  EXPECT_EQ(floatToBf16(floatFromBits(0x7F800001)), 0x7FC0);
  EXPECT_EQ(floatToBf16(floatFromBits(0xFFC00000)), 0xFFC0);
  EXPECT_EQ(floatToBf16(std::numeric_limits<float>::quiet_NaN()), 0x7FC0);
}

TEST(HalfFloatTest, ExhaustiveBf16RoundTrip) {
  for (uint32_t bits = 0; bits <= 0xFFFF; ++bits) {
    auto bf16 = uint16_t(bits);
    float value = bf16ToFloat(bf16);
    ASSERT_EQ(std::bit_cast<uint32_t>(value), bits << 16);
    bool isNaN = (bf16 & 0x7F80) == 0x7F80 && (bf16 & 0x007F) != 0;
    ASSERT_EQ(std::isnan(value), isNaN) << std::hex << bits;
    uint16_t back = floatToBf16(value);
    if (isNaN)
      ASSERT_TRUE(std::isnan(bf16ToFloat(back))) << std::hex << bits;
    else
      ASSERT_EQ(back, bf16) << std::hex << bits;
  }
}

TEST(HalfFloatTest, Bf16RoundsToNearestEven) {
  for (uint32_t bits = 0; bits < 0x7F80; ++bits) {
    for (uint32_t sign : {0u, 0x8000u}) {
      uint32_t low = bits | sign;
      uint32_t high = (bits + 1) | sign;
      uint32_t middle = (low << 16) | 0x8000;
      ASSERT_EQ(floatToBf16(floatFromBits(middle)), (bits & 1) ? high : low);
      ASSERT_EQ(floatToBf16(floatFromBits(middle - 1)), low);
      ASSERT_EQ(floatToBf16(floatFromBits(middle + 1)), high);
    }
  }
}

//===----------------------------------------------------------------------===//
// Array and dtypes
//===----------------------------------------------------------------------===//

TEST(NpyDTypeTest, DescrAndItemSize) {
  struct Expected {
    DType dtype;
    std::string_view descr;
    size_t size;
  };
  for (Expected expected :
       {Expected{DType::F32, "<f4", 4}, Expected{DType::F16, "<f2", 2},
        Expected{DType::U16, "<u2", 2}, Expected{DType::I16, "<i2", 2},
        Expected{DType::I32, "<i4", 4}, Expected{DType::I64, "<i8", 8},
        Expected{DType::U8, "|u1", 1}, Expected{DType::F64, "<f8", 8}}) {
    EXPECT_EQ(descr(expected.dtype), expected.descr);
    EXPECT_EQ(itemSize(expected.dtype), expected.size);
  }
}

TEST(NpyArrayTest, NumElementsAndTypedAccess) {
  Array scalar = makeArray(DType::I32, {});
  EXPECT_EQ(scalar.numElements(), 1);
  EXPECT_EQ(makeArray(DType::I32, {3, 0, 2}).numElements(), 0);

  Array logits = makeArray(DType::F32, {2, 3});
  EXPECT_EQ(logits.numElements(), 6);
  for (int i = 0; i < 6; ++i)
    logits.as<float>()[i] = float(i) * 0.5f;
  const Array &view = logits;
  EXPECT_EQ(view.as<float>()[5], 2.5f);
  uint32_t bits;
  std::memcpy(&bits, logits.data.data() + 4, 4);
  EXPECT_EQ(bits, std::bit_cast<uint32_t>(0.5f)); // Little endian in data.
}

//===----------------------------------------------------------------------===//
// Round trips and NumPy compatibility
//===----------------------------------------------------------------------===//

TEST(NpyRoundTripTest, EveryDTypeAndShape) {
  // clang-format off
  const std::vector<std::vector<int64_t>> shapes = {
      {}, {1}, {7}, {2, 3}, {2, 3, 4}, {0}, {3, 0}, {0, 2, 0}, {2, 0, 5},
      {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2}};
  // clang-format on
  unsigned seed = 0;
  for (DType dtype : {DType::F32, DType::F16, DType::U16, DType::I16,
                      DType::I32, DType::I64, DType::U8, DType::F64}) {
    for (const std::vector<int64_t> &shape : shapes) {
      Array array = makeArray(dtype, shape, ++seed);
      std::vector<std::byte> bytes = serializeNpy(array);
      // Like NumPy, the data starts on a 64-byte boundary.
      EXPECT_EQ((bytes.size() - array.data.size()) % 64, 0u);
      std::string error;
      std::optional<Array> parsed = parse(bytes, error);
      ASSERT_TRUE(parsed) << error;
      expectSameArray(*parsed, array);
      EXPECT_TRUE(serializeNpy(*parsed) == bytes);
    }
  }
}

struct Fixture {
  const char *name;
  const char *hex;
  DType dtype;
  std::vector<int64_t> shape;
};

std::vector<Fixture> numpyV1Fixtures() {
  return {
      {"F32_2x3", kF32_2x3, DType::F32, {2, 3}},
      {"F16_4", kF16_4, DType::F16, {4}},
      {"BF16AsU16_2x2", kBF16AsU16_2x2, DType::U16, {2, 2}},
      {"I16_3", kI16_3, DType::I16, {3}},
      {"I32_Scalar", kI32_Scalar, DType::I32, {}},
      {"I64_0x5", kI64_0x5, DType::I64, {0, 5}},
      {"U8_2x1x3", kU8_2x1x3, DType::U8, {2, 1, 3}},
      {"F64_1", kF64_1, DType::F64, {1}},
      {"I32_Big0", kI32_Big0, DType::I32, {12345678901, 0}},
  };
}

TEST(NpyNumPyTest, ParsesAndReserializesByteExactly) {
  for (const Fixture &fixture : numpyV1Fixtures()) {
    SCOPED_TRACE(fixture.name);
    std::vector<std::byte> bytes = fromHex(fixture.hex);
    std::string error;
    std::optional<Array> array = parse(bytes, error);
    ASSERT_TRUE(array) << error;
    EXPECT_EQ(array->dtype, fixture.dtype);
    EXPECT_EQ(array->shape, fixture.shape);
    EXPECT_TRUE(serializeNpy(*array) == bytes);
  }
}

TEST(NpyNumPyTest, DecodesValues) {
  std::string error;
  std::optional<Array> logits = parse(fromHex(kF32_2x3), error);
  ASSERT_TRUE(logits) << error;
  EXPECT_EQ(std::vector<float>(logits->as<float>(), logits->as<float>() + 6),
            (std::vector<float>{-1, -0.5, 0, 0.5, 1, 1.5}));

  std::optional<Array> half = parse(fromHex(kF16_4), error);
  ASSERT_TRUE(half) << error;
  const uint16_t *halfBits = half->as<uint16_t>();
  EXPECT_EQ(halfToFloat(halfBits[0]), 1.0f);
  EXPECT_EQ(halfToFloat(halfBits[1]), -2.0f);
  EXPECT_EQ(halfToFloat(halfBits[2]), 0.5f);
  EXPECT_EQ(halfToFloat(halfBits[3]), 65504.0f);

  // NumPy truncated these to bf16 ((bits >> 16)); all but 3e38 are exact.
  std::optional<Array> bf16 = parse(fromHex(kBF16AsU16_2x2), error);
  ASSERT_TRUE(bf16) << error;
  EXPECT_EQ(bf16ToFloat(bf16->as<uint16_t>()[0]), 1.0f);
  EXPECT_EQ(bf16ToFloat(bf16->as<uint16_t>()[1]), -2.0f);
  EXPECT_EQ(bf16ToFloat(bf16->as<uint16_t>()[2]), 0.15625f);

  std::optional<Array> shorts = parse(fromHex(kI16_3), error);
  ASSERT_TRUE(shorts) << error;
  EXPECT_EQ(shorts->as<int16_t>()[0], -1);
  EXPECT_EQ(shorts->as<int16_t>()[2], 32767);

  std::optional<Array> scalar = parse(fromHex(kI32_Scalar), error);
  ASSERT_TRUE(scalar) << error;
  EXPECT_EQ(scalar->as<int32_t>()[0], 7);

  std::optional<Array> bytes = parse(fromHex(kU8_2x1x3), error);
  ASSERT_TRUE(bytes) << error;
  EXPECT_EQ(bytes->as<uint8_t>()[5], 200);

  std::optional<Array> doubles = parse(fromHex(kF64_1), error);
  ASSERT_TRUE(doubles) << error;
  EXPECT_EQ(doubles->as<double>()[0], -0.1);
}

TEST(NpyNumPyTest, ParsesVersion2And3Headers) {
  std::string error;
  std::optional<Array> v1 = parse(fromHex(kF32_2x3), error);
  ASSERT_TRUE(v1) << error;
  for (const char *hex : {kF32_2x3_V2, kF32_2x3_V3}) {
    std::optional<Array> array = parse(fromHex(hex), error);
    ASSERT_TRUE(array) << error;
    expectSameArray(*array, *v1);
  }
}

TEST(NpyNumPyTest, RejectsWhatNumPyWritesForUnsupportedArrays) {
  expectError(fromHex(kFortranF32_2x3),
              "Fortran-order arrays are not supported; save a C-contiguous "
              "array (np.ascontiguousarray)");
  expectError(fromHex(kBigEndianF32_2),
              "big-endian data is not supported; save with dtype '<f4'");
  expectError(fromHex(kComplex64_1),
              "unsupported dtype '<c8'; supported dtypes are '<f4', '<f2', "
              "'<u2' (also for bf16), '<i2', '<i4', '<i8', '|u1', '<f8'");
  expectError(fromHex(kStructured_1),
              "structured dtypes are not supported ('descr' is a list); "
              "supported dtypes are '<f4', '<f2', '<u2' (also for bf16), "
              "'<i2', '<i4', '<i8', '|u1', '<f8'");
}

TEST(NpyNumPyTest, LargeHeaderUsesVersion2) {
  // NumPy switches to 2.0 only when the header exceeds 65535 bytes; with
  // "1, " per dimension that takes ~22000 dimensions.
  Array array = makeArray(DType::F32, std::vector<int64_t>(22000, 1));
  std::vector<std::byte> bytes = serializeNpy(array);
  EXPECT_EQ(bytes[6], std::byte(2));
  EXPECT_EQ(bytes.size() % 64, 4u); // Data (4 bytes) 64-byte aligned.
  std::string error;
  std::optional<Array> parsed = parse(bytes, error);
  ASSERT_TRUE(parsed) << error;
  expectSameArray(*parsed, array);

  Array small = makeArray(DType::F32, std::vector<int64_t>(21000, 1));
  EXPECT_EQ(serializeNpy(small)[6], std::byte(1));
}

//===----------------------------------------------------------------------===//
// Header syntax
//===----------------------------------------------------------------------===//

TEST(NpyHeaderTest, AcceptsPythonDictVariants) {
  // Key order, whitespace, trailing comma, quotes and tuple spelling are all
  // free in a Python dict literal.
  expectParses(npyWithDict(
      "{'shape': (2, 3), 'fortran_order': False, 'descr': '<f4'}", 24));
  expectParses(npyWithDict(
      "{ 'descr' :'<f4' ,\t'fortran_order':False,'shape':( 2 ,3 , ) , }   ",
      24));
  expectParses(
      npyWithDict("{\n  \"descr\": \"<f4\",\n  \"fortran_order\": False,\n"
                  "  \"shape\": (2, 3)\n}",
                  24));
  expectParses(npyWithDict(
      "  {'descr': '<i4', 'fortran_order': False, 'shape': ()}", 4));
  expectParses(npyWithDict(
      "{'descr': '<i8', 'fortran_order': False, 'shape': (5,)}", 40));
  expectParses(npyWithDict(
      "{'descr': '<i8', 'fortran_order': False, 'shape': (+5,)}", 40));
  expectParses(npyWithDict(
      "{'descr': '<i8', 'fortran_order': False, 'shape': (0, 0)}", 0));
  // Byte order is meaningless for 1-byte types; NumPy treats these alike.
  for (const char *descr : {"|u1", "<u1", ">u1", "=u1"})
    expectParses(npyWithDict(std::string("{'descr': '") + descr +
                                 "', 'fortran_order': False, 'shape': (3,)}",
                             3));
  // Older NumPy padded to 16 bytes, newer to 64; neither is required.
  expectParses(npyWithHeader(
      "{'descr': '<f2', 'fortran_order': False, 'shape': (1,), }    \n", 2));
}

TEST(NpyHeaderTest, ShapeTupleForms) {
  std::string error;
  std::optional<Array> array =
      parse(npyWithDict(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (5,)}", 20),
            error);
  ASSERT_TRUE(array) << error;
  EXPECT_EQ(array->shape, (std::vector<int64_t>{5}));

  array = parse(
      npyWithDict("{'descr': '<f4', 'fortran_order': False, 'shape': ()}", 4),
      error);
  ASSERT_TRUE(array) << error;
  EXPECT_TRUE(array->shape.empty());

  // In Python "(5)" is the integer 5, not a tuple.
  expectError(
      npyWithDict("{'descr': '<f4', 'fortran_order': False, 'shape': (5)}", 20),
      "'shape' must be a tuple of non-negative integers");
  expectError(
      npyWithDict("{'descr': '<f4', 'fortran_order': False, 'shape': [5]}", 20),
      "'shape' must be a tuple of non-negative integers");
  expectError(
      npyWithDict("{'descr': '<f4', 'fortran_order': False, 'shape': 5}", 20),
      "'shape' must be a tuple of non-negative integers");
}

TEST(NpyHeaderTest, SyntaxErrors) {
  const std::string tail = "'fortran_order': False, 'shape': (1,)}";
  expectError(npyWithDict("'descr': '<f4'"),
              "malformed header: expected '{' to start the header dict at "
              "header byte 0");
  expectError(npyWithDict("{'descr' '<f4', " + tail),
              "malformed header: expected ':' after key 'descr' at header "
              "byte 9");
  expectError(npyWithDict("{'descr': '<f4' " + tail),
              "malformed header: expected ',' or '}' after the value of "
              "'descr' at header byte 16");
  // The string swallows ", " and ends at the key's opening quote.
  expectError(npyWithDict("{'descr': '<f4, " + tail),
              "malformed header: expected ',' or '}' after the value of "
              "'descr' at header byte 17");
  expectError(npyWithDict("{'descr': '<f4"),
              "malformed header: unterminated string at header byte 14");
  expectError(npyWithDict("{descr: '<f4', " + tail),
              "malformed header: unexpected name 'descr' at header byte 1");
  expectError(npyWithDict("{1: '<f4', " + tail),
              "malformed header: header dict keys must be strings at header "
              "byte 1");
  expectError(npyWithDict("{'descr': <f4, " + tail),
              "malformed header: expected a value but found '<' at header "
              "byte 10");
  expectError(npyWithDict("{'descr': '<f4', 'fortran_order': false, "
                          "'shape': (1,)}"),
              "malformed header: unexpected name 'false' at header byte 34");
  expectError(
      npyWithDict("{'descr': '<f4', 'fortran_order': False, 'shape': (1.0,)}"),
      "malformed header: unexpected '.' in integer at header byte 52");
  expectError(
      npyWithDict("{'descr': '<f4', 'fortran_order': False, 'shape': (01,)}"),
      "malformed header: integer with a leading zero at header byte 51");
  expectError(
      npyWithDict("{'descr': '<f4', 'fortran_order': False, 'shape': (3L,)}"),
      "malformed header: unexpected 'L' in integer at header byte 52");
  expectError(npyWithDict("{'descr': '<f4', 'fortran_order': False, 'shape': "
                          "(99999999999999999999,)}"),
              "malformed header: integer too large at header byte 51");
  expectError(npyWithDict("{'descr': '<f4', 'fortran_order': False, 'shape': "
                          "(1, 2]}"),
              "malformed header: expected ',' or ')' but found ']' at header "
              "byte 55");
  expectError(npyWithDict("{'descr': '\\n<f4', " + tail),
              "malformed header: unsupported escape sequence in string at "
              "header byte 12");
  expectError(npyWithDict("{'descr': '<f4', " + tail + " x"),
              "malformed header: unexpected 'x' after the header dict at "
              "header byte 56");
  expectError(npyWithDict("{'descr': '<f4', " + tail + "\n"),
              "malformed header: unexpected '\\x0a' after the header dict at "
              "header byte 55");
  expectError(npyWithDict("{'descr': '<f4', 'fortran_order': False, 'shape': " +
                          std::string(100, '(')),
              "malformed header: nesting deeper than 32 levels at header "
              "byte 83");
}

TEST(NpyHeaderTest, MustEndWithNewline) {
  expectError(
      npyWithHeader("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)}  ",
                    4),
      "malformed header: it must end with a newline");
  expectError(npyWithHeader("", 0),
              "malformed header: it must end with a newline");
}

TEST(NpyHeaderTest, KeysMustBeExactlyTheThree) {
  expectError(npyWithDict("{'descr': '<f4', 'fortran_order': False, "
                          "'shape': (1,), 'extra': 1}"),
              "header key 'extra' is not supported; expected exactly "
              "'descr', 'fortran_order' and 'shape'");
  expectError(npyWithDict("{'descr': '<f4', 'fortran_order': False}"),
              "header is missing key 'shape'");
  expectError(npyWithDict("{'descr': '<f4', 'shape': (1,)}"),
              "header is missing key 'fortran_order'");
  expectError(npyWithDict("{}"), "header is missing key 'descr'");
  expectError(npyWithDict("{'descr': '<f4', 'fortran_order': False, "
                          "'descr': '<i4', 'shape': (1,)}"),
              "header has duplicate key 'descr'");
}

TEST(NpyHeaderTest, DescrRules) {
  auto withDescr = [](const std::string &descr) {
    return npyWithDict(
        "{'descr': " + descr + ", 'fortran_order': False, 'shape': (1,)}", 8);
  };
  expectError(withDescr("'>f4'"),
              "big-endian data is not supported; save with dtype '<f4'");
  expectError(withDescr("'>i8'"),
              "big-endian data is not supported; save with dtype '<i8'");
  expectError(withDescr("'=f4'"),
              "descr '=f4' uses native byte order, which is platform "
              "dependent; save with dtype '<f4'");
  expectError(withDescr("'|i4'"),
              "descr '|i4' uses byte order '|', which is only valid for "
              "1-byte types; save with dtype '<i4'");
  const std::string supported = "; supported dtypes are '<f4', '<f2', '<u2' "
                                "(also for bf16), '<i2', '<i4', '<i8', "
                                "'|u1', '<f8'";
  expectError(withDescr("'f4'"), "unsupported dtype 'f4'" + supported);
  expectError(withDescr("'<u4'"), "unsupported dtype '<u4'" + supported);
  expectError(withDescr("'|b1'"), "unsupported dtype '|b1'" + supported);
  expectError(withDescr("'float32'"),
              "unsupported dtype 'float32'" + supported);
  expectError(withDescr("''"), "unsupported dtype ''" + supported);
  expectError(withDescr("[('a', '<f4')]"),
              "structured dtypes are not supported ('descr' is a list)" +
                  supported);
  expectError(withDescr("4"), "'descr' must be a string");
  expectError(withDescr("None"), "'descr' must be a string");
}

TEST(NpyHeaderTest, FortranOrderRules) {
  expectError(npyWithDict("{'descr': '<f4', 'fortran_order': True, "
                          "'shape': (2, 2)}",
                          16),
              "Fortran-order arrays are not supported; save a C-contiguous "
              "array (np.ascontiguousarray)");
  expectError(npyWithDict("{'descr': '<f4', 'fortran_order': 0, "
                          "'shape': (2, 2)}",
                          16),
              "'fortran_order' must be True or False");
  expectError(npyWithDict("{'descr': '<f4', 'fortran_order': 'False', "
                          "'shape': (2, 2)}",
                          16),
              "'fortran_order' must be True or False");
}

TEST(NpyHeaderTest, ShapeRules) {
  auto withShape = [](const std::string &shape) {
    return npyWithDict(
        "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + "}");
  };
  expectError(withShape("(2, -3)"), "'shape' entry 1 is negative (-3)");
  expectError(withShape("(-9223372036854775808,)"),
              "'shape' entry 0 is negative (-9223372036854775808)");
  expectError(withShape("(2, True)"),
              "'shape' must be a tuple of non-negative integers");
  expectError(withShape("(2, '3')"),
              "'shape' must be a tuple of non-negative integers");
  expectError(withShape("((2, 3),)"),
              "'shape' must be a tuple of non-negative integers");
  expectError(withShape("None"),
              "'shape' must be a tuple of non-negative integers");
  expectError(withShape("(9223372036854775807, 2)"),
              "array too large: shape (9223372036854775807, 2) of '<f4' needs "
              "at least 2^63 bytes");
  expectError(withShape("(4611686018427387904,)"),
              "array too large: shape (4611686018427387904,) of '<f4' needs "
              "at least 2^63 bytes");
  // Like NumPy, a zero dimension does not excuse the others from overflowing.
  expectError(withShape("(0, 3037000500, 3037000500)"),
              "array too large: shape (0, 3037000500, 3037000500) of '<f4' "
              "needs at least 2^63 bytes");
  expectError(withShape("(9223372036854775808,)"),
              "malformed header: integer too large at header byte 51");
  // The largest shape that fits: every size check must avoid overflow.
  expectError(withShape("(2305843009213693951,)"),
              "truncated: expected 9223372036854775804 data bytes, found 0");
  expectError(withShape("(1, 2305843009213693951, 1)"),
              "truncated: expected 9223372036854775804 data bytes, found 0");
}

//===----------------------------------------------------------------------===//
// Preamble and sizes
//===----------------------------------------------------------------------===//

TEST(NpyPreambleTest, MagicAndVersion) {
  std::vector<std::byte> valid = fromHex(kF32_2x3);
  std::vector<std::byte> bytes = valid;
  bytes[0] = std::byte(0x92);
  expectError(bytes, "not a .npy file: it does not start with the \\x93NUMPY "
                     "magic string");
  expectError(fromString("PK\x03\x04"),
              "not a .npy file: it does not start with the \\x93NUMPY "
              "magic string");
  expectError(fromString("{'descr': '<f4'}"),
              "not a .npy file: it does not start with the \\x93NUMPY "
              "magic string");

  expectError({}, "truncated: expected at least 10 bytes of .npy preamble, "
                  "found 0");
  expectError(fromString("\x93NU"),
              "truncated: expected at least 10 bytes of .npy preamble, "
              "found 3");
  expectError(std::vector<std::byte>(valid.begin(), valid.begin() + 9),
              "truncated: expected at least 10 bytes of .npy preamble, "
              "found 9");
  std::vector<std::byte> version2 = fromHex(kF32_2x3_V2);
  expectError(std::vector<std::byte>(version2.begin(), version2.begin() + 11),
              "truncated: expected at least 12 bytes of .npy preamble, "
              "found 11");

  for (auto [major, minor] :
       {std::pair{4u, 0u}, std::pair{0u, 0u}, std::pair{1u, 1u},
        std::pair{2u, 5u}, std::pair{255u, 255u}}) {
    bytes = valid;
    bytes[6] = std::byte(major);
    bytes[7] = std::byte(minor);
    expectError(bytes, "unsupported .npy version " + std::to_string(major) +
                           "." + std::to_string(minor) +
                           "; supported versions are 1.0, 2.0 and 3.0");
  }
}

TEST(NpyPreambleTest, HeaderLengthMustFitTheFile) {
  std::vector<std::byte> valid = fromHex(kF32_2x3); // 118-byte header.
  std::vector<std::byte> bytes(valid.begin(), valid.begin() + 100);
  expectError(bytes, "truncated: the header length is 118 bytes but only 90 "
                     "bytes follow the preamble");
  bytes = valid;
  bytes[8] = std::byte(0xFF);
  bytes[9] = std::byte(0xFF);
  expectError(bytes, "truncated: the header length is 65535 bytes but only "
                     "142 bytes follow the preamble");
  // A shorter length cuts the header before its '\n'.
  bytes = valid;
  bytes[8] = std::byte(100);
  expectError(bytes, "malformed header: it must end with a newline");
  // A v2 length is 32 bits.
  bytes = fromHex(kF32_2x3_V2);
  bytes[11] = std::byte(0x80);
  expectError(bytes, "truncated: the header length is 2147483764 bytes but "
                     "only 140 bytes follow the preamble");
}

TEST(NpyPreambleTest, DataSizeMustMatchExactly) {
  std::vector<std::byte> valid = fromHex(kF32_2x3);
  std::vector<std::byte> bytes(valid.begin(), valid.end() - 4);
  expectError(bytes, "truncated: expected 24 data bytes, found 20");
  bytes.resize(128);
  expectError(bytes, "truncated: expected 24 data bytes, found 0");
  bytes = valid;
  bytes.push_back(std::byte(0));
  expectError(bytes, "trailing data: expected 24 data bytes, found 25");
  bytes = fromHex(kI64_0x5);
  bytes.push_back(std::byte(0));
  expectError(bytes, "trailing data: expected 0 data bytes, found 1");
}

TEST(NpyPreambleTest, HeaderEncodings) {
  // 3.0 headers are UTF-8; non-ASCII text is allowed (though no valid key or
  // descr contains any) and escaped in messages to keep them on one line.
  expectError(npyWithHeader("{'descr': '<f4', 'fortran_order': False, "
                            "'shape': (1,), 'caf\xc3\xa9': 1}\n",
                            4, 3),
              "header key 'caf\\xc3\\xa9' is not supported; expected exactly "
              "'descr', 'fortran_order' and 'shape'");
  expectError(npyWithHeader("{'descr': '<f4', 'fortran_order': False, "
                            "'shape': (1,), 'caf\xe9': 1}\n",
                            4, 3),
              "malformed header: a version 3.0 header must be UTF-8");
  // 1.0 and 2.0 headers are latin-1: any byte is a character.
  expectError(npyWithHeader("{'descr': '<f4', 'fortran_order': False, "
                            "'shape': (1,), 'caf\xe9': 1}\n",
                            4, 2),
              "header key 'caf\\xe9' is not supported; expected exactly "
              "'descr', 'fortran_order' and 'shape'");
  expectParses(npyWithHeader(
      "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)}\n", 4, 3));
}

//===----------------------------------------------------------------------===//
// Robustness
//===----------------------------------------------------------------------===//

TEST(NpyFuzzTest, MutatedFilesGiveAnArrayOrOneLineError) {
  std::vector<std::vector<std::byte>> seeds;
  for (const Fixture &fixture : numpyV1Fixtures())
    seeds.push_back(fromHex(fixture.hex));
  for (const char *hex : {kF32_2x3_V2, kF32_2x3_V3, kFortranF32_2x3,
                          kBigEndianF32_2, kComplex64_1, kStructured_1})
    seeds.push_back(fromHex(hex));
  seeds.push_back(serializeNpy(makeArray(DType::F16, {3, 0, 2})));
  seeds.push_back(serializeNpy(makeArray(DType::U8, {}, 3)));

  // Fragments that steer mutations into the header grammar's corners.
  // clang-format off
  const std::vector<std::string> tokens = {
      "(", ")", ",", "'", "\"", ":", "{", "}", "[", "]", " ", "\n", "\\",
      "-", "0", "9", "True", "None", "()", "(1,)", "(0, ", "'<f8'", "'|u1'",
      "'shape'", "'descr'", "99999999999999999999", "9223372036854775807",
      "((((((((((", "\xff"};
  // clang-format on

  // std::mt19937's output is fully specified, so this is deterministic;
  // distributions are not, hence the modulo.
  std::mt19937 random(20240601);
  auto below = [&](size_t bound) { return bound ? random() % bound : 0; };
  size_t parsed = 0;
  constexpr int kIterations = 5000;
  for (int iteration = 0; iteration < kIterations; ++iteration) {
    std::vector<std::byte> bytes = seeds[below(seeds.size())];
    size_t headerEnd = std::min<size_t>(bytes.size(), 140);
    int mutations = 1 + int(below(3));
    for (int m = 0; m < mutations; ++m) {
      switch (below(9)) {
      case 0: // Flip a bit anywhere.
        if (!bytes.empty())
          bytes[below(bytes.size())] ^= std::byte(1u << below(8));
        break;
      case 1: // Overwrite a header byte.
        if (headerEnd)
          bytes[below(headerEnd)] = std::byte(random());
        break;
      case 2: // Truncate.
        bytes.resize(below(bytes.size() + 1));
        break;
      case 3: { // Insert a grammar token into the header.
        const std::string &token = tokens[below(tokens.size())];
        size_t at = std::min(bytes.size(), 10 + below(headerEnd));
        std::vector<std::byte> text = fromString(token);
        bytes.insert(bytes.begin() + std::ptrdiff_t(at), text.begin(),
                     text.end());
        break;
      }
      case 4: { // Delete a range.
        size_t at = below(bytes.size() + 1);
        size_t length = std::min(bytes.size() - at, below(16));
        bytes.erase(bytes.begin() + std::ptrdiff_t(at),
                    bytes.begin() + std::ptrdiff_t(at + length));
        break;
      }
      case 5: // Corrupt the header length.
        if (bytes.size() > 11)
          bytes[8 + below(4)] = std::byte(random());
        break;
      case 6: // Change the version.
        if (bytes.size() > 7)
          bytes[6 + below(2)] = std::byte(below(5));
        break;
      case 7: // Append junk.
        for (size_t n = below(9); n > 0; --n)
          bytes.push_back(std::byte(random()));
        break;
      case 8: // Replace a header byte with a token character.
        if (headerEnd && bytes.size() > 10) {
          const std::string &token = tokens[below(tokens.size())];
          bytes[10 + below(std::min(headerEnd, bytes.size()) - 10)] =
              std::byte(token[0]);
        }
        break;
      }
    }
    // Most edits shift the header's '\n' away from where the length field
    // says it is; repair that half the time so the header grammar itself is
    // exercised, not just the framing.
    if (below(2) && bytes.size() > 10 && bytes[6] == std::byte(1)) {
      auto newline =
          std::find(bytes.begin() + 10, bytes.end(), std::byte('\n'));
      if (newline != bytes.end()) {
        size_t headerLength = size_t(newline - bytes.begin()) + 1 - 10;
        bytes[8] = std::byte(headerLength & 0xFF);
        bytes[9] = std::byte((headerLength >> 8) & 0xFF);
      }
    }
    // An exactly-sized heap copy, so ASan catches any overread.
    auto exact = std::make_unique<std::byte[]>(bytes.size() + 1);
    std::copy(bytes.begin(), bytes.end(), exact.get());
    std::string error;
    std::optional<Array> array =
        parseNpy(std::span(exact.get(), bytes.size()), "fuzz.npy", error);
    if (array) {
      ++parsed;
      ASSERT_TRUE(error.empty());
      ASSERT_EQ(array->data.size(),
                size_t(array->numElements()) * itemSize(array->dtype));
      std::optional<Array> again = parse(serializeNpy(*array), error);
      ASSERT_TRUE(again) << error;
      expectSameArray(*again, *array);
    } else {
      ASSERT_EQ(error.rfind("fuzz.npy: ", 0), 0u) << error;
      ASSERT_GT(error.size(), std::string("fuzz.npy: ").size());
      ASSERT_EQ(error.find_first_of("\n\r"), std::string::npos) << error;
    }
  }
  // Both outcomes must actually be exercised.
  EXPECT_GT(parsed, 0u);
  EXPECT_LT(parsed, size_t(kIterations));
}

//===----------------------------------------------------------------------===//
// Files
//===----------------------------------------------------------------------===//

TEST_F(NpyFileTest, WriteThenRead) {
  Array array = makeArray(DType::I32, {4, 2});
  std::string path = (directory / "topk_ids.npy").string();
  std::string error;
  ASSERT_TRUE(writeNpy(path, array, error)) << error;
  EXPECT_EQ(listDirectory(directory), std::vector<std::string>{"topk_ids.npy"});
  EXPECT_TRUE(readFile(path) == serializeNpy(array));
  std::optional<Array> read = readNpy(path, error);
  ASSERT_TRUE(read) << error;
  expectSameArray(*read, array);
}

TEST_F(NpyFileTest, ReadsNumPyFileAndNamesItInErrors) {
  std::string path = (directory / "logits.npy").string();
  std::vector<std::byte> bytes = fromHex(kBigEndianF32_2);
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char *>(bytes.data()),
             std::streamsize(bytes.size()));
  std::string error;
  EXPECT_FALSE(readNpy(path, error));
  EXPECT_EQ(error,
            path + ": big-endian data is not supported; save with dtype '<f4'");
}

TEST_F(NpyFileTest, ReadErrors) {
  std::string error;
  std::string missing = (directory / "missing.npy").string();
  EXPECT_FALSE(readNpy(missing, error));
  EXPECT_EQ(error, missing + ": cannot open for reading: No such file or "
                             "directory");
  EXPECT_FALSE(readNpy(directory.string(), error));
  EXPECT_EQ(error.rfind(directory.string() + ": ", 0), 0u) << error;
  EXPECT_EQ(error.find('\n'), std::string::npos);
}

namespace {
/// Writes `prefix` and then `zeros` zero bytes (endless when nullopt) into
/// the FIFO at `path` from a thread, until the reader closes it.
std::thread feedFifo(const std::string &path, std::vector<std::byte> prefix,
                     std::optional<size_t> zeros) {
  return std::thread([path, prefix = std::move(prefix), zeros] {
    int fd = ::open(path.c_str(), O_WRONLY);
    if (fd < 0)
      return;
    auto writeAll = [&](const void *data, size_t size) {
      const char *p = static_cast<const char *>(data);
      while (size > 0) {
        ssize_t n = ::write(fd, p, size);
        if (n <= 0)
          return false;
        p += n;
        size -= size_t(n);
      }
      return true;
    };
    std::vector<char> block(1 << 16, 0);
    if (writeAll(prefix.data(), prefix.size())) {
      size_t left = zeros.value_or(SIZE_MAX);
      while (left > 0 && writeAll(block.data(), std::min(left, block.size())))
        left -= zeros ? std::min(left, block.size()) : 0;
    }
    ::close(fd);
  });
}
} // namespace

TEST_F(NpyFileTest, EndlessStreamsAreReadOnlyAsFarAsTheHeaderSays) {
  // /dev/zero fails at the magic after a few bytes, not at bad_alloc.
  std::string error;
  EXPECT_FALSE(readNpy("/dev/zero", error));
  EXPECT_EQ(error, "/dev/zero: not a .npy file: it does not start with the "
                   "\\x93NUMPY magic string");

  std::string fifo = (directory / "stream.npy").string();
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  ::signal(SIGPIPE, SIG_IGN);
  Array array = makeArray(DType::F32, {2, 3});
  std::vector<std::byte> bytes = serializeNpy(array);
  // A valid array, then zeros without end: trailing data, after reading at
  // most one byte past the promised 24.
  std::thread writer = feedFifo(fifo, bytes, std::nullopt);
  EXPECT_FALSE(readNpy(fifo, error));
  writer.join();
  EXPECT_EQ(error, fifo + ": trailing data: expected 24 data bytes, found "
                          "more");
  // Exactly the array: read like a file.
  writer = feedFifo(fifo, bytes, 0);
  std::optional<Array> read = readNpy(fifo, error);
  writer.join();
  ASSERT_TRUE(read) << error;
  expectSameArray(*read, array);
  // Cut short: the bytes that came.
  writer =
      feedFifo(fifo, std::vector<std::byte>(bytes.begin(), bytes.end() - 4), 0);
  EXPECT_FALSE(readNpy(fifo, error));
  writer.join();
  EXPECT_EQ(error, fifo + ": truncated: expected 24 data bytes, found 20");
  // A header length beyond the cap is refused without reading it.
  std::vector<std::byte> v2 = serializeNpy(array);
  std::vector<std::byte> longHeader(v2.begin(), v2.begin() + 8);
  longHeader[6] = std::byte(2);
  for (std::byte b :
       {std::byte(0), std::byte(0), std::byte(0), std::byte(0x40)})
    longHeader.push_back(b); // 1 GiB
  writer = feedFifo(fifo, longHeader, std::nullopt);
  EXPECT_FALSE(readNpy(fifo, error));
  writer.join();
  EXPECT_EQ(error, fifo + ": malformed header: it is 1073741824 bytes long; "
                          "headers are at most 1048576 bytes");
}

TEST_F(NpyFileTest, RegularFileSizeIsCheckedBeforeReading) {
  // A sparse 8 GiB file behind a 24-byte array: refused from its size, with
  // no memory committed for it.
  std::string path = (directory / "sparse.npy").string();
  std::vector<std::byte> bytes = serializeNpy(makeArray(DType::F32, {2, 3}));
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char *>(bytes.data()),
             std::streamsize(bytes.size()));
  std::filesystem::resize_file(path, uintmax_t(8) << 30);
  std::string error;
  EXPECT_FALSE(readNpy(path, error));
  EXPECT_EQ(error, path + ": trailing data: expected 24 data bytes, found " +
                       std::to_string((uint64_t(8) << 30) - 128));
  // Shorter than its header promises.
  std::filesystem::resize_file(path, bytes.size() - 1);
  EXPECT_FALSE(readNpy(path, error));
  EXPECT_EQ(error, path + ": truncated: expected 24 data bytes, found 23");
}

TEST_F(NpyFileTest, OverwriteReplacesTheWholeFile) {
  std::string path = (directory / "out.npy").string();
  std::string error;
  ASSERT_TRUE(writeNpy(path, makeArray(DType::F64, {100, 10}), error)) << error;
  Array smaller = makeArray(DType::I16, {3}, 9);
  ASSERT_TRUE(writeNpy(path, smaller, error)) << error;
  EXPECT_TRUE(readFile(path) == serializeNpy(smaller));
  EXPECT_EQ(listDirectory(directory), std::vector<std::string>{"out.npy"});
}

TEST_F(NpyFileTest, InvalidArrayLeavesExistingFileUntouched) {
  std::string path = (directory / "out.npy").string();
  Array original = makeArray(DType::F32, {2});
  std::string error;
  ASSERT_TRUE(writeNpy(path, original, error)) << error;

  Array inconsistent = makeArray(DType::F32, {3});
  inconsistent.data.pop_back();
  EXPECT_FALSE(writeNpy(path, inconsistent, error));
  EXPECT_EQ(error, path + ": cannot write: shape (3,) of '<f4' needs 12 data "
                          "bytes, but the array has 11");
  Array negative = makeArray(DType::F32, {});
  negative.shape = {2, -1};
  EXPECT_FALSE(writeNpy(path, negative, error));
  EXPECT_EQ(error, path + ": cannot write: shape entry 1 is negative (-1)");
  Array huge = makeArray(DType::F32, {});
  huge.shape = {int64_t(1) << 62, 2};
  EXPECT_FALSE(writeNpy(path, huge, error));
  EXPECT_EQ(error, path + ": cannot write: shape (4611686018427387904, 2) of "
                          "'<f4' needs at least 2^63 bytes");

  EXPECT_TRUE(readFile(path) == serializeNpy(original));
  EXPECT_EQ(listDirectory(directory), std::vector<std::string>{"out.npy"});
}

TEST_F(NpyFileTest, MissingDirectoryFailsWithoutLeftovers) {
  std::string path = (directory / "no" / "such" / "out.npy").string();
  std::string error;
  EXPECT_FALSE(writeNpy(path, makeArray(DType::I32, {2}), error));
  EXPECT_EQ(error.rfind(path + ": cannot create temporary file '", 0), 0u)
      << error;
  EXPECT_NE(error.find("No such file or directory"), std::string::npos)
      << error;
  EXPECT_TRUE(listDirectory(directory).empty());

  // A regular file where a directory should be.
  std::ofstream(directory / "file") << "x";
  path = (directory / "file" / "out.npy").string();
  EXPECT_FALSE(writeNpy(path, makeArray(DType::I32, {2}), error));
  EXPECT_NE(error.find("Not a directory"), std::string::npos) << error;
  EXPECT_EQ(listDirectory(directory), std::vector<std::string>{"file"});
}

TEST_F(NpyFileTest, FailedRenameRemovesTheTemporary) {
  // The temporary is written fully, then cannot replace a directory.
  fs::create_directory(directory / "out.npy");
  std::ofstream(directory / "out.npy" / "keep") << "x";
  std::string path = (directory / "out.npy").string();
  std::string error;
  EXPECT_FALSE(writeNpy(path, makeArray(DType::F32, {64, 64}), error));
  EXPECT_EQ(
      error.rfind(path + ": cannot rename temporary file into place: ", 0), 0u)
      << error;
  EXPECT_EQ(listDirectory(directory), std::vector<std::string>{"out.npy"});
  EXPECT_EQ(listDirectory(directory / "out.npy"),
            std::vector<std::string>{"keep"});

  EXPECT_FALSE(
      writeNpy(directory.string() + "/", makeArray(DType::F32, {1}), error));
  EXPECT_EQ(error, directory.string() +
                       "/: cannot write: the path names a directory, not a "
                       "file");
}

TEST_F(NpyFileTest, UnwritableDirectoryFailsWithoutLeftovers) {
  fs::path locked = directory / "locked";
  fs::create_directory(locked);
  fs::permissions(locked, fs::perms::owner_read | fs::perms::owner_exec);
  {
    // Privileged users (root in containers) can write anyway.
    std::ofstream probe(locked / "probe");
    if (probe) {
      probe.close();
      fs::remove(locked / "probe");
      GTEST_SKIP() << "permissions are not enforced for this user";
    }
  }
  std::string path = (locked / "out.npy").string();
  std::string error;
  EXPECT_FALSE(writeNpy(path, makeArray(DType::I32, {2}), error));
  EXPECT_NE(error.find("Permission denied"), std::string::npos) << error;
  fs::permissions(locked, fs::perms::owner_all);
  EXPECT_TRUE(listDirectory(locked).empty());
}

} // namespace
