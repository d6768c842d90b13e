//===- Manifest.h - manifest.json of a `moegen compile` output --*- C++ -*-===//
//
// `moegen compile SPEC --emit=cubin -o DIR` writes DIR/manifest.json next to
// the binaries: which kernels exist, their cuLaunchKernel parameters in
// order, and how to launch them. The runtime trusts nothing in it: every key
// is checked, and every error is one line naming the file and the key, e.g.
//
//   out/manifest.json: kernels[1].params[3].dtype: unknown dtype 'f64'
//
// The format is documented in docs/runtime.md ("The manifest"). Plain C++20
// and nlohmann-json; no LLVM, no CUDA.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_RUNTIME_MANIFEST_H
#define MOEGEN_RUNTIME_MANIFEST_H

#include "runtime/KernelError.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace moegen::rt {

/// The "format" every manifest carries.
inline constexpr std::string_view kManifestFormat = "moegen-kernels";
/// The kernel ABI this runtime speaks ("abi_version").
inline constexpr int64_t kKernelAbiVersion = 1;
enum class DType { F32, BF16, F16, I16, I32, I64 };
/// "f32", "bf16", ...
std::string_view toString(DType dtype);
std::optional<DType> parseDType(std::string_view text);
size_t byteSize(DType dtype);

enum class EntryKind { Route, RouteHash, Replay, Dispatch };
/// "route", "route_hash", "replay", "dispatch".
std::string_view toString(EntryKind entry);
std::optional<EntryKind> parseEntryKind(std::string_view text);

enum class ParamKind { Pointer, Size, Scalar };
enum class Access { Read, Write, ReadWrite };

/// One dimension of a pointer parameter's shape: a fixed extent, or one of
/// the symbols the caller's sizes resolve.
struct Dim {
  enum class Symbol { None, T, V, L, TK };
  Symbol symbol = Symbol::None; ///< None: fixed `extent`
  int64_t extent = 0;

  bool isDynamic() const { return symbol != Symbol::None; }
};
/// "T", "V", "L", "T*k", or the extent.
std::string toString(const Dim &dim);

/// One cuLaunchKernel parameter; every parameter is 8 bytes.
struct Param {
  std::string name;
  ParamKind kind = ParamKind::Pointer;
  /// Pointer: the element type. Scalar: always I64.
  DType dtype = DType::I64;
  /// Pointer only.
  std::vector<Dim> shape;
  Access access = Access::Read;
  /// Size only: the index (in Kernel::params) of the pointer it measures and
  /// the dimension.
  int ofParam = -1;
  int dim = 0;
};

struct LaunchRule {
  int64_t blockDim = 0;
  /// > 0: gridDim.x = ceil(T / tokensPerBlock) and no launch when T == 0;
  /// 0: gridDim.x = 1.
  int64_t tokensPerBlock = 0;
  /// As written in the manifest ("ceil_div(T, 4)" or "1"); checked against
  /// tokensPerBlock.
  std::string gridDim;
  int64_t dynamicSharedMemoryBytes = 0;
};

struct Kernel {
  EntryKind entry = EntryKind::Route;
  std::string symbol;
  std::vector<Param> params;
  LaunchRule launch;

  /// The index of the parameter called `name`, or -1.
  int findParam(std::string_view name) const;
};

/// A target architecture "sm_<major><minor>[a|f]", e.g. sm_90a, sm_100.
struct Arch {
  int major = 0;
  int minor = 0;
  /// 'a' (architecture-specific), 'f' (family-specific) or 0.
  char suffix = 0;

  std::string toString() const;
  /// Whether a cubin built for this arch runs on a device of compute
  /// capability major.minor: same major, and the same minor for 'a',
  /// a minor no larger otherwise.
  bool cubinRunsOn(int deviceMajor, int deviceMinor) const;
  /// Whether PTX for this arch JIT-compiles for the device: an 'a' target
  /// only for the same major.minor, an 'f' target within its major,
  /// otherwise any device of at least this compute capability.
  bool ptxRunsOn(int deviceMajor, int deviceMinor) const;
};
std::optional<Arch> parseArch(std::string_view text);

struct Manifest {
  /// The manifest file as given, used to prefix every message about it.
  std::string path;
  /// The directory holding it; binaries are resolved against it.
  std::string directory;

  int64_t abiVersion = 0;
  std::string compilerVersion;
  std::string specName;
  std::string specHash;
  Arch arch;
  std::string archText;
  /// Absolute or manifest-relative paths resolved against `directory`;
  /// empty when absent. At least one of the two is present.
  std::string cubinPath;
  std::string ptxPath;
  int64_t numExperts = 0;
  int64_t topK = 0;
  DType logitsDType = DType::F32;
  std::optional<DType> captureDType;
  std::vector<Kernel> kernels;

  /// The kernel of this entry point, or null.
  const Kernel *find(EntryKind entry) const;
};

struct ManifestOptions {
  /// The compiler_version the manifest must carry; empty: runtimeVersion().
  std::string expectedCompilerVersion;
  /// Check that the binaries named by "cubin" and "ptx" exist.
  bool checkFilesExist = true;
};

/// Parses and validates the text of a manifest. `path` names it in messages
/// and locates the binaries. Throws Error(Kind::Manifest) with one line
/// "PATH: KEY: MESSAGE".
Manifest parseManifest(std::string_view jsonText, const std::string &path,
                       const ManifestOptions &options = {});

/// Reads DIR/manifest.json (or the file itself when `path` names a file)
/// and parses it. Throws Error(Kind::Manifest).
Manifest loadManifest(const std::string &path,
                      const ManifestOptions &options = {});

} // namespace moegen::rt

#endif // MOEGEN_RUNTIME_MANIFEST_H
