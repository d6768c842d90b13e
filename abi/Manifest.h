//===- Manifest.h - manifest.json of a `moegen compile` output --*- C++ -*-===//
//
// `moegen compile SPEC --emit=cubin -o DIR` writes DIR/manifest.json next to
// the binaries: which kernels exist, their cuLaunchKernel parameters in
// order, and how to launch them. The compiler writes it with
// writeManifest() from the arguments convert-moe-to-loops stamped; the
// runtime reads it with parseManifest(), which trusts nothing: every key is
// checked against the catalogue of KernelAbi.h, and every error is one line
// naming the file and the key, e.g.
//
//   out/manifest.json: kernels[1].params[3].dtype: unknown dtype 'f64'
//
// The format is documented in docs/kernel-abi.md ("manifest.json"). Plain
// C++20 and nlohmann-json; no LLVM, no CUDA.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_ABI_MANIFEST_H
#define MOEGEN_ABI_MANIFEST_H

#include "abi/KernelAbi.h"
#include "abi/KernelError.h"

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace moegen::abi {

/// The "format" every manifest carries.
inline constexpr std::string_view kManifestFormat = "moegen-kernels";
/// The kernel ABI this runtime speaks ("abi_version").
inline constexpr int64_t kKernelAbiVersion = 1;
enum class ParamKind { Pointer, Size, Scalar };
/// "pointer", "size", "scalar".
std::string_view toString(ParamKind kind);

/// One dimension of a pointer parameter's shape: a fixed extent, or one of
/// the symbols the caller's sizes resolve.
struct Dim {
  enum class Symbol { None, T, V, L, TK, H };
  Symbol symbol = Symbol::None; ///< None: fixed `extent`
  int64_t extent = 0;

  bool isDynamic() const { return symbol != Symbol::None; }
};
/// "T", "V", "L", "T*k", "H", or the extent.
std::string toString(const Dim &dim);
/// The symbol "T", "V", "L", "T*k" or "H" names, or nothing.
std::optional<Dim::Symbol> parseDimSymbol(std::string_view text);

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
  /// 0: gridDim.x = 1, or the cooperative grid below.
  int64_t tokensPerBlock = 0;
  /// The schedule of a row kernel: lanes of a warp per token (1 to 32;
  /// blockDim = tokensPerBlock * lanesPerToken); 0 for the others.
  /// Information for people and tools: the launch needs only the above.
  int64_t lanesPerToken = 0;
  /// As written in the manifest ("ceil_div(T, 4)", "1" or "cooperative");
  /// checked against tokensPerBlock.
  std::string gridDim;
  /// "cooperative": every block must be resident at once (the kernel
  /// synchronizes its grid); gridDim.x = abi::dispatchGridDim(T * k, E,
  /// SMs), launched with cuLaunchCooperativeKernel. Then maxGridDim =
  /// dispatchMaxBlocks(E) and slotsPerBlock = kDispatchSlotsPerBlock.
  bool cooperative = false;
  int64_t maxGridDim = 0;
  int64_t slotsPerBlock = 0;
  int64_t dynamicSharedMemoryBytes = 0;
};

struct Kernel {
  EntryKind entry = EntryKind::Route;
  std::string symbol;
  std::vector<Param> params;
  LaunchRule launch;
  /// The schedule's choice the launch does not show (route kernels): the
  /// top-k method, "argmax_passes", "insertion", "lane_lists" or
  /// "token_lanes" (a token per thread, lanes_per_token 1); "" for the
  /// others. And what chose the schedule: "heuristic", or the compile
  /// options that pinned part of it. Information for people and tools.
  std::string topk;
  std::string scheduleSource;
  /// Route, route_hash and replay may have a kernel per token bucket (a
  /// schedule tuned for each, docs/autotune.md): a call of T tokens
  /// launches the one with the largest min_tokens <= T. Exactly one kernel
  /// of such an entry point has 0 ("min_tokens" absent) and serves the T
  /// below the others'; all take the same parameters.
  int64_t minTokens = 0;
  /// > 0: a route, route_hash or replay kernel that also dispatches (its
  /// parameters add the dispatch's outputs and `dispatch_scratch`), for
  /// calls of up to this many slots T * k (docs/kernel-abi.md, "Fused
  /// dispatch"). Such a kernel stands beside the entry point's plain ones
  /// and is no token bucket's.
  int64_t fusedDispatchMaxSlots = 0;
  /// From `ptxas -v` when a cubin was built; information only.
  std::optional<int64_t> registers;
  std::optional<int64_t> spillStoreBytes;

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
  /// The arch the PTX was generated for ("ptx_target"); may be older than
  /// `arch` (PTX is forward compatible). Empty when absent.
  std::string ptxTarget;
  /// The binaries as the manifest names them (file names relative to its
  /// directory), and resolved against `directory`; empty when absent. At
  /// least one of the two is present.
  std::string cubinFile;
  std::string ptxFile;
  std::string cubinPath;
  std::string ptxPath;
  int64_t numExperts = 0;
  int64_t topK = 0;
  DType logitsDType = DType::F32;
  std::optional<DType> captureDType;
  /// Permute and combine's row type (f32, bf16, f16) and the spec's default
  /// hidden size; present exactly when those kernels are.
  std::optional<DType> hiddenDType;
  int64_t hiddenSize = 0;
  /// The route selects by top-p: ids may hold -1 in unused slots, which
  /// replay and dispatch accept ("unused_slots": true; absent: false).
  bool unusedSlots = false;
  /// Dispatch keeps at most ceil(f * T * k / E) slots per expert
  /// ("capacity_factor"; absent: 0, no capacity).
  double capacityFactor = 0.0;
  std::vector<Kernel> kernels;

  /// The kernel of this entry point (its first, min_tokens 0, when it has
  /// one per token bucket; never the one with a fused dispatch), or null.
  const Kernel *find(EntryKind entry) const;
  /// The kernel of this entry point that a call of `tokens` tokens
  /// launches when it does not dispatch in the same kernel: the largest
  /// min_tokens <= tokens; null without one.
  const Kernel *findFor(EntryKind entry, int64_t tokens) const;
  /// The entry point's kernel with a fused dispatch, or null.
  const Kernel *findFused(EntryKind entry) const;
};

struct ManifestOptions {
  /// The compiler_version the manifest must carry.
  std::string expectedCompilerVersion;
  /// Check that the binaries named by "cubin" and "ptx" exist.
  bool checkFilesExist = true;
};

/// A manifest that breaks a rule; what() is one line "PATH: KEY: MESSAGE".
class ManifestError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// Parses and validates the text of a manifest. `path` names it in messages
/// and locates the binaries. Throws ManifestError.
Manifest parseManifest(std::string_view jsonText, const std::string &path,
                       const ManifestOptions &options);

/// The JSON text of `manifest` (format, abi_version, ...; paths and the
/// parsed-only fields are not written), as parseManifest() reads it back.
std::string writeManifest(const Manifest &manifest);

} // namespace moegen::abi

#endif // MOEGEN_ABI_MANIFEST_H
