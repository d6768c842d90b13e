//===- KernelJit.h - Compile specs on first use, through the cache -*- C++ -*-===//
//
// The compiler side of the runtime's JIT cache (runtime/JitCache.h): an
// engine holding a routing spec asks for its kernels, and the first call
// compiles them in process with the NVPTX backend and publishes the kernel
// directory in the on-disk cache; later calls, in this process or another,
// find it there. The way Triton's @jit works.
//
//   moegen::jit::JitOptions options;            // arch from the device
//   auto router = moegen::jit::loadRouter(spec, options, {});
//
// The cache key (runtime/JitCache.h cacheKey) covers everything the kernel
// directory depends on: the normalized spec text, the arch, the compiler
// version plus a fingerprint of the code generator's sources and of LLVM
// (so a rebuilt compiler that generates other code never reuses an entry),
// the explicit kernel options, ptxas's build and libdevice's SHA-256.
//
// Every failure is thrown as moegen::rt::Error: InvalidArgument for options
// the backend rejects and a toolkit without a working ptxas, Compile for a compile that failed (the message holds
// the compiler's error, the IR or PTX path and a repro command), Cache for
// the cache directory, and the runtime's kinds for loading.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_COMPILER_JIT_KERNELJIT_H
#define MOEGEN_COMPILER_JIT_KERNELJIT_H

#include "compiler/backend/nvptx/NvptxCompiler.h"
#include "compiler/tune/TuningDb.h"
#include "compiler/spec/RoutingSpec.h"
#include "runtime/JitCache.h"

#include <memory>
#include <string>

namespace moegen::rt {
class CudaRouter;
struct LoadOptions;
} // namespace moegen::rt

namespace moegen::jit {

struct JitOptions {
  /// The backend's options. An empty arch means "the device's"
  /// (loadRouter only; compileCached needs one). With a dumpDir every call
  /// compiles (the stages are dumped only when they run) but publishes only
  /// when the entry is missing or corrupt, never replacing a valid entry
  /// that other processes may be loading; overrideDir is refused:
  /// overridden PTX must not be published under the spec's key.
  nvptx::NvptxCompileOptions compile{.arch = ""};
  /// More than one: a route (and replay) kernel per token bucket
  /// (nvptx::compileBuckets), their schedules replacing compile's; the
  /// cache key covers them.
  std::vector<nvptx::BucketSchedule> buckets;
  /// Where the cache lives and whether to always compile; empty and
  /// nullopt defer to MOEGEN_CACHE_DIR and MOEGEN_ALWAYS_COMPILE.
  rt::JitCache::Options cache;
};

/// The fingerprint of the code generator this binary was built from: 16
/// hex digits of SHA-256 over the sources of dialects/, compiler/spec/,
/// compiler/backend/nvptx/, compiler/Registration.cpp and
/// abi/KernelError.h, and the LLVM version, computed at build time
/// (compiler/jit/CMakeLists.txt).
const char *codegenFingerprint();

/// The four inputs of rt::cacheKey for `spec` under `options` (arch set),
/// and the key itself. Throws rt::Error(InvalidArgument) on bad options.
struct CacheKeyInputs {
  std::string specText;
  std::string arch;
  std::string compilerVersion;
  std::string kernelConfigText;
};
CacheKeyInputs
cacheKeyInputs(const RoutingSpec &spec,
               const nvptx::NvptxCompileOptions &options,
               const std::vector<nvptx::BucketSchedule> &buckets = {});
std::string cacheKeyFor(const RoutingSpec &spec,
                        const nvptx::NvptxCompileOptions &options,
                        const std::vector<nvptx::BucketSchedule> &buckets = {});

/// The bucket schedules of a tuning database's GPU buckets for `spec`
/// (tune::TuningDb::gpuBuckets), each noted as "tuned for T = N in
/// `dbPath`"; empty, with `error` set to one line naming the database and
/// the entry, when a schedule does not fit the spec (tune::checkGpuConfig).
std::vector<nvptx::BucketSchedule>
bucketSchedules(const std::vector<tune::TuningDb::GpuBucket> &buckets,
                const RoutingSpec &spec, const std::string &dbPath,
                std::string &error);

/// The cache entry holding `spec` compiled for `options.compile.arch`
/// (required), compiling and publishing it when it is missing, corrupt, or
/// always-compile is on.
rt::CacheEntry compileCached(const RoutingSpec &spec, const JitOptions &options);

/// compileCached for the device the router will run on (the current
/// context's, else `load.device`; an empty arch is filled from its compute
/// capability), then rt::CudaRouter::load of the entry. `entry`, when
/// non-null, receives the cache entry. Only where the CUDA runtime library
/// is built (MOEGEN_HAVE_CUDA_RUNTIME).
std::unique_ptr<rt::CudaRouter> loadRouter(const RoutingSpec &spec,
                                           const JitOptions &options,
                                           const rt::LoadOptions &load,
                                           rt::CacheEntry *entry = nullptr);

} // namespace moegen::jit

#endif // MOEGEN_COMPILER_JIT_KERNELJIT_H
