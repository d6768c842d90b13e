//===- Npy.h - NumPy .npy reading and writing -------------------*- C++ -*-===//
//
// Reads and writes the NumPy .npy format (numpy.lib.format) for the tensors
// `moegen run` consumes and produces: gating logits ('<f4', '<f2', or bf16 as
// raw '<u2' bits), expert bias, token and forced ids, hash tables, and the
// selected experts, weights and capture buffers it writes back.
//
// Only little-endian, C-ordered arrays of the dtypes below are accepted, and
// the parser is strict: every deviation from what NumPy writes is reported as
// a single line "NAME: MESSAGE" rather than guessed at, and no input, however
// malformed, is read out of bounds.
//
// Plain C++20; the runtime must not depend on LLVM or MLIR.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_RUNTIME_NPY_NPY_H
#define MOEGEN_RUNTIME_NPY_NPY_H

#include <bit>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace moegen::npy {

// Array::data holds the file's little-endian bytes as they are; as<T>() can
// only hand them out unconverted on a little-endian host.
static_assert(std::endian::native == std::endian::little,
              "moegen's .npy support assumes a little-endian host");

/// The element types moegen reads and writes. bfloat16 has no NumPy dtype, so
/// bf16 tensors travel as their raw bits in U16 (see HalfFloat.h).
enum class DType {
  F32, ///< '<f4'
  F16, ///< '<f2'
  U16, ///< '<u2' (also bf16 bits)
  I16, ///< '<i2'
  I32, ///< '<i4'
  I64, ///< '<i8'
  U8,  ///< '|u1'
  F64, ///< '<f8'
};

/// The NumPy descr string that serializeNpy writes for `dtype`, e.g. "<f4".
std::string_view descr(DType dtype);

/// The size of one element of `dtype` in bytes.
size_t itemSize(DType dtype);

/// A dense array: C (row-major) order, little-endian elements.
struct Array {
  DType dtype = DType::F32;
  /// One entry per dimension; empty for a 0-d (scalar) array.
  std::vector<int64_t> shape;
  /// numElements() * itemSize(dtype) bytes.
  std::vector<std::byte> data;

  /// The product of `shape` (1 for a 0-d array, 0 if any dimension is 0).
  int64_t numElements() const;

  /// The elements viewed as T, which must have the dtype's item size
  /// (e.g. float for F32, uint16_t for F16/U16). Checked by assert.
  template <typename T> const T *as() const {
    static_assert(std::is_trivially_copyable_v<T>);
    assert(sizeof(T) == itemSize(dtype) && "element type size mismatch");
    assert(data.size() == size_t(numElements()) * sizeof(T) &&
           "data size does not match shape");
    return reinterpret_cast<const T *>(data.data());
  }
  template <typename T> T *as() {
    return const_cast<T *>(std::as_const(*this).template as<T>());
  }
};

/// Parses the bytes of a .npy file (versions 1.0, 2.0 and 3.0). On failure
/// returns nullopt and sets `error` to one line, "NAME: MESSAGE", where NAME
/// is `name` (e.g. the file path or the tensor name); `error` is left alone on
/// success.
std::optional<Array> parseNpy(std::span<const std::byte> bytes,
                              std::string_view name, std::string &error);

/// Reads and parses the .npy file at `path`; errors are prefixed by `path`.
std::optional<Array> readNpy(const std::string &path, std::string &error);

/// The .npy bytes NumPy's np.save would write for `array`, byte for byte:
/// version 1.0, or 2.0 when the header needs more than 65535 bytes. `array`
/// must be consistent (non-negative shape matching the data size; asserted).
std::vector<std::byte> serializeNpy(const Array &array);

/// Writes `array` to `path` through a temporary file in the same directory
/// followed by a rename, so readers never see a partial file and a failed
/// write leaves neither a temporary nor a changed `path` behind. On failure
/// returns false and sets `error` to one line prefixed by `path`.
bool writeNpy(const std::string &path, const Array &array, std::string &error);

} // namespace moegen::npy

#endif // MOEGEN_RUNTIME_NPY_NPY_H
