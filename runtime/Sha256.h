//===- Sha256.h - SHA-256 (FIPS 180-4) ---------------------------*- C++
//-*-===//
//
// Cache keys and the CHECKSUMS file of cache entries. A small, dependency-free
// implementation; checked against the FIPS 180-4 test vectors in
// tests/unit/RuntimeCacheTest.cpp.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_RUNTIME_SHA256_H
#define MOEGEN_RUNTIME_SHA256_H

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace moegen::rt {

class Sha256 {
public:
  Sha256();
  void update(const void *data, size_t size);
  void update(std::string_view text) { update(text.data(), text.size()); }
  /// The digest; the object must not be updated afterwards.
  std::array<uint8_t, 32> finish();
  /// finish() as 64 lowercase hex digits.
  std::string finishHex();

private:
  void block(const uint8_t *bytes);
  std::array<uint32_t, 8> state;
  std::array<uint8_t, 64> buffer{};
  size_t buffered = 0;
  uint64_t totalBytes = 0;
};

/// SHA-256 of `text` as 64 lowercase hex digits.
std::string sha256Hex(std::string_view text);

} // namespace moegen::rt

#endif // MOEGEN_RUNTIME_SHA256_H
