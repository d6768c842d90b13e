//===- KernelAbi.h - The kernel ABI compiler and runtime share --*- C++ -*-===//
//
// What every moegen kernel argument is: its name, how it is passed, its
// element type, its shape in symbols and what the kernel does with it. The
// catalogue below is the one statement of that contract:
//
// - convert-moe-to-loops stamps each kernel argument with a
//   `#moe.kernel_arg` attribute built from it (and checks the IR against it);
// - the CPU backend binds the caller's buffers to those arguments by name;
// - the NVPTX backend's manifest lists the stamped arguments, and the
//   runtime checks a manifest against the catalogue before it launches.
//
// Plain C++20, no LLVM, no CUDA: the dialect's lowerings, the compiler and
// the runtime all include it. docs/kernel-abi.md describes it in prose
// (KernelAbiTest checks that its tensor table matches this file).
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_ABI_KERNELABI_H
#define MOEGEN_ABI_KERNELABI_H

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace moegen::abi {

enum class DType { F32, BF16, F16, I16, I32, I64 };
/// "f32", "bf16", "f16", "i16", "i32", "i64".
std::string_view toString(DType dtype);
std::optional<DType> parseDType(std::string_view text);
size_t byteSize(DType dtype);

/// The entry points a spec compiles to.
enum class EntryKind { Route, RouteHash, Replay, Dispatch };
/// "route", "route_hash", "replay", "dispatch".
std::string_view toString(EntryKind entry);
std::optional<EntryKind> parseEntryKind(std::string_view text);
inline constexpr std::array<EntryKind, 4> kEntryKinds = {
    EntryKind::Route, EntryKind::RouteHash, EntryKind::Replay,
    EntryKind::Dispatch};

enum class Access { Read, Write, ReadWrite };
/// "read", "write", "readwrite".
std::string_view toString(Access access);
std::optional<Access> parseAccess(std::string_view text);

/// How a kernel argument is passed.
enum class ArgRole {
  /// A tensor the caller owns: a memref on the host, a device pointer
  /// followed by its dynamic sizes on the GPU.
  Tensor,
  /// An int64 value (the capture layer).
  Scalar,
  /// The error record the backend allocates, zeroes and reads.
  ErrorRecord,
  /// The token range [begin, end) of one host task; GPU kernels derive
  /// their token from the launch grid instead.
  TokenBegin,
  TokenEnd,
};
/// "tensor", "scalar", "error_record", "token_begin", "token_end".
std::string_view toString(ArgRole role);
std::optional<ArgRole> parseArgRole(std::string_view text);

/// One dimension of a tensor of the catalogue.
enum class DimRule {
  Tokens,       ///< T, dynamic
  HashRows,     ///< V, the hash table's rows, dynamic
  Layers,       ///< L, the capture buffer's layers, dynamic
  Slots,        ///< T * k, dynamic
  Experts,      ///< E, static
  ExpertsPlus1, ///< E + 1, static
  TopK,         ///< k, static
  ErrorWords,   ///< the error record's words on the target, static
};
/// "T", "V", "L", "T*k", "E", "E+1", "k", "W".
std::string_view toString(DimRule rule);
/// Whether the dimension is a run-time size (a symbol in the manifest).
constexpr bool isDynamic(DimRule rule) {
  return rule == DimRule::Tokens || rule == DimRule::HashRows ||
         rule == DimRule::Layers || rule == DimRule::Slots;
}

/// Where an argument's element type comes from.
enum class DTypeRule {
  Fixed,   ///< ArgSpec::dtype
  Logits,  ///< the spec's logits dtype (f32, bf16, f16)
  Capture, ///< i16 when E <= kMaxI16CaptureExperts, else i32
};
inline constexpr int64_t kMaxI16CaptureExperts = 32767;
constexpr DType captureDType(int64_t numExperts) {
  return numExperts <= kMaxI16CaptureExperts ? DType::I16 : DType::I32;
}

/// One argument of an entry point, as the catalogue states it.
struct ArgSpec {
  std::string_view name;
  ArgRole role = ArgRole::Tensor;
  /// Used in order; `rank` of them.
  std::array<DimRule, 3> dims{};
  int rank = 0;
  DTypeRule dtypeRule = DTypeRule::Fixed;
  DType dtype = DType::I32;
  Access access = Access::Read;
  /// Whether every kernel of the entry takes it (bias and capture depend on
  /// the spec).
  bool required = true;

  std::span<const DimRule> shape() const { return {dims.data(), size_t(rank)}; }
};

/// Every argument an entry point's kernel may take, inputs first, then
/// outputs, the error record and (host kernels) the token range. Kernels
/// take them in the order the IR gives; backends bind them by name.
std::span<const ArgSpec> entrySignature(EntryKind entry);
/// The argument called `name` of `entry`'s kernels, or null.
const ArgSpec *findArg(EntryKind entry, std::string_view name);

/// The name of a GPU kernel's size parameter: "logits.size0".
std::string sizeParamName(std::string_view tensor, int dim);

} // namespace moegen::abi

#endif // MOEGEN_ABI_KERNELABI_H
