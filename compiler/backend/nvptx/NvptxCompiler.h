//===- NvptxCompiler.h - Routing specs to PTX and cubin ---------*- C++ -*-===//
//
// The NVPTX backend end to end:
//
//   moe IR --moe-kernel-config{target=nvptx}--> 02-config
//          --convert-moe-to-loops-->            03-loops  (vectors of 32)
//          --convert-moe-loops-to-gpu-->        04-gpu    (warp segment per token)
//          --nvvm-attach-target, convert-gpu-to-nvvm--> 05-nvvm
//          --moe-gpu-module-to-ptx-->          07-kernels.ptx (a thread per
//                                               kernel; libdevice where called)
//          --ptxas -->                          kernels.cubin
//
// and the kernel directory the runtime loads: manifest.json (entry points,
// parameters, launch geometry, arch, spec hash, compiler version),
// kernels.ptx, kernels.cubin and spec.yaml. See docs/kernel-abi.md.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_COMPILER_BACKEND_NVPTX_NVPTXCOMPILER_H
#define MOEGEN_COMPILER_BACKEND_NVPTX_NVPTXCOMPILER_H

#include "compiler/spec/RoutingSpec.h"
#include "compiler/spec/SpecParser.h"

#include "abi/Manifest.h"

#include "llvm/Support/Error.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mlir {
class MLIRContext;
class OpPassManager;
} // namespace mlir

namespace moegen::nvptx {

/// The archs `--arch` accepts.
inline constexpr std::string_view kSupportedArchs[] = {
    "sm_80", "sm_89", "sm_90", "sm_90a", "sm_100"};
bool isSupportedArch(std::string_view arch);

/// The arch to compile for to run on a device of compute capability
/// major.minor: the newest supported arch whose cubin runs there (sm_80 on
/// 8.0-8.8, sm_89 on 8.9, sm_90 on 9.x, sm_100 on 10.x); on later majors,
/// sm_100, whose manifest also carries sm_90 PTX for the driver to
/// JIT-compile. Empty below 8.0, which moegen does not support.
std::string archForComputeCapability(int major, int minor);

/// What a compile produces, in pipeline order: each includes the ones
/// before it.
enum class Stage { Gpu, Llvm, Ptx, Cubin };

struct NvptxCompileOptions {
  std::string arch = "sm_90";
  /// Tokens per block; 0 lets the kernel-config heuristic choose. Without
  /// lanesPerToken, at most 32 (a warp per token always fits).
  int64_t tokensPerBlock = 0;
  /// Lanes of a warp per token: 1, 2, 4, ..., 32; 0 lets the heuristic
  /// choose.
  int64_t lanesPerToken = 0;
  /// Top-k method; empty lets the heuristic choose.
  std::string topk;
  /// Where the three above came from when not from the command line, for
  /// the manifest's schedule_source of the row kernels ("tuned for T =
  /// 4096 in tuning.json"); empty: options or the heuristic.
  std::string scheduleNote;
  /// When non-empty, every stage is written there (01-moe.mlir ...
  /// 07-kernels.ptx, ptxas.log).
  std::string dumpDir;
  /// When non-empty and it holds kernels.ptx, that PTX replaces the
  /// generated one before ptxas (as Triton's override directory does).
  std::string overrideDir;
  /// CUDA toolkit (libdevice, ptxas); empty: $CUDA_HOME, $CUDA_PATH, then
  /// /usr/local/cuda.
  std::string toolkitPath;
  /// Print the time of every stage, pass and ptxas to stderr (MLIR's
  /// timing report) when the compile ends.
  bool timing = false;
};

/// Why a compile produced nothing.
enum class CompileStatus {
  /// The options or the spec: one line, the caller's to fix (exit code 2).
  BadInput,
  /// ptxas failed: its log, the PTX path and a repro command.
  ToolFailed,
  /// A stage of the compiler failed: its diagnostics, its input IR path and
  /// a repro command (a bug in moegen).
  Internal,
};

/// The error every function of this backend returns: a status and its
/// message.
class CompileError : public llvm::ErrorInfo<CompileError> {
public:
  static char ID;
  CompileError(CompileStatus status, std::string message)
      : errorStatus(status), text(std::move(message)) {}
  CompileStatus status() const { return errorStatus; }
  void log(llvm::raw_ostream &os) const override;
  std::error_code convertToErrorCode() const override;

private:
  CompileStatus errorStatus;
  std::string text;
};

/// The status and message of an error from this backend (consumed); other
/// errors count as Internal.
std::pair<CompileStatus, std::string> takeCompileError(llvm::Error error);

/// Checks the options compile() would refuse (arch, tokens per block, top-k
/// method): a BadInput CompileError, in one line.
llvm::Error validateOptions(const NvptxCompileOptions &options);

struct NvptxCompileResult {
  /// The IR of the stage the compile stopped at: gpuIR for Stage::Gpu,
  /// llvmIR for Stage::Llvm; empty otherwise.
  std::string gpuIR;
  std::string llvmIR;
  std::string ptx;
  std::string cubin;
  /// The kernels as the manifest lists them, derived from the gpu stage's
  /// stamped parameters (#moe.kernel_arg, #moe.kernel_size, #moe.launch).
  std::vector<abi::Kernel> kernels;
  /// From the gpu stage on (naming kernels.ptx, which the ptx stage
  /// builds).
  std::string manifestJson;
};

/// Compiles `spec` up to `stage`, or a CompileError: BadInput (one line),
/// ToolFailed (ptxas's log, the PTX path and a repro command) or Internal
/// (the failing stage, its IR path and a repro command).
llvm::Expected<NvptxCompileResult> compile(const RoutingSpec &spec,
                                           const NvptxCompileOptions &options,
                                           Stage stage);

/// One token bucket's schedule for compileBuckets: calls of at least
/// `minTokens` tokens (up to the next bucket's) launch row kernels built
/// with these options; `note` is their schedule_source's ("tuned for T =
/// 4096 in tuning.json").
struct BucketSchedule {
  int64_t minTokens = 0;
  int64_t lanesPerToken = 0;
  int64_t tokensPerBlock = 0;
  std::string topk;
  std::string note;
};

/// compile() with a kernel per token bucket for route, route_hash and
/// replay (docs/kernel-abi.md, "A kernel per token bucket"): `buckets`
/// ascend from minTokens 0; the first bucket's options build every kernel
/// as compile() would, each later bucket's row kernels join them as
/// `<symbol>_t<minTokens>` with min_tokens set: in one PTX module and one
/// cubin (Stage::Ptx, Stage::Cubin), or in one gpu.module (Stage::Gpu, for
/// the GPU emulator). A cooperative row kernel (expert choice) keeps the
/// first bucket's schedule.
llvm::Expected<NvptxCompileResult>
compileBuckets(const RoutingSpec &spec, const NvptxCompileOptions &options,
               const std::vector<BucketSchedule> &buckets, Stage stage);

/// Writes manifest.json, kernels.ptx, kernels.cubin (when built) and
/// spec.yaml into `dir` (created if missing) through a staging directory
/// and renames, the manifest last, so that a reader never sees a manifest
/// without its binaries. A BadInput CompileError names the path.
llvm::Error writeKernelDirectory(const RoutingSpec &spec,
                                 const NvptxCompileResult &result,
                                 const std::string &dir);

/// The CUDA toolkit compile() uses: options.toolkitPath, else $CUDA_HOME,
/// $CUDA_PATH, then /usr/local/cuda.
std::string toolkitDirectory(const NvptxCompileOptions &options);

/// The build of the ptxas compile() would run ("Build
/// cuda_13.0.r13.0/compiler.36424714_0"), or a CompileError: BadInput when
/// there is none (as compile() says), ToolFailed when it fails.
llvm::Expected<std::string> ptxasVersion(const NvptxCompileOptions &options);

/// The spec's hash in manifests: moegen::specHash (SpecParser.h).
using moegen::specHash;

} // namespace moegen::nvptx

#endif // MOEGEN_COMPILER_BACKEND_NVPTX_NVPTXCOMPILER_H
