//===- KernelJit.cpp - Compile specs on first use, through the cache ------===//

#include "compiler/jit/KernelJit.h"
#include "compiler/jit/CodegenFingerprint.inc"
#include "compiler/spec/SpecParser.h"
#include "runtime/Error.h"

#include <map>
#include <mutex>

#ifndef MOEGEN_VERSION
#error "MOEGEN_VERSION must be defined by the build"
#endif

namespace moegen::jit {

namespace {

using rt::Error;

/// ptxas --version, once per toolkit and process: a hit in the cache
/// should not pay for a process start on every call.
std::string cachedPtxasVersion(const nvptx::NvptxCompileOptions &options) {
  static std::mutex mutex;
  static std::map<std::string, std::string> versions;
  std::lock_guard<std::mutex> lock(mutex);
  auto [it, inserted] = versions.try_emplace(options.toolkitPath);
  if (inserted) {
    std::string error;
    nvptx::CompileStatus status =
        nvptx::ptxasVersion(options, it->second, error);
    if (status != nvptx::CompileStatus::Ok) {
      versions.erase(it);
      // No ptxas is a setup problem, as the backend itself reports it.
      throw Error(status == nvptx::CompileStatus::BadInput
                      ? Error::Kind::InvalidArgument
                      : Error::Kind::Compile,
                  "JIT: " + error);
    }
  }
  return it->second;
}

} // namespace

const char *codegenFingerprint() { return MOEGEN_CODEGEN_FINGERPRINT; }

CacheKeyInputs cacheKeyInputs(const RoutingSpec &spec,
                              const nvptx::NvptxCompileOptions &options) {
  std::string error;
  if (!nvptx::validateOptions(options, error))
    throw Error(Error::Kind::InvalidArgument, "JIT: " + error);
  CacheKeyInputs inputs;
  inputs.specText = printRoutingSpec(spec);
  inputs.arch = options.arch;
  inputs.compilerVersion =
      std::string(MOEGEN_VERSION) + "+codegen." + codegenFingerprint();
  // Every option that changes the kernel directory, spelled out; the
  // heuristic's choices follow from the spec, the arch and the
  // fingerprint.
  inputs.kernelConfigText =
      "tokens_per_block=" + std::to_string(options.tokensPerBlock) +
      "\ntopk=" + options.topk + "\nptxas=" + cachedPtxasVersion(options) +
      "\n";
  return inputs;
}

std::string cacheKeyFor(const RoutingSpec &spec,
                        const nvptx::NvptxCompileOptions &options) {
  CacheKeyInputs inputs = cacheKeyInputs(spec, options);
  return rt::cacheKey(inputs.specText, inputs.arch, inputs.compilerVersion,
                      inputs.kernelConfigText);
}

rt::CacheEntry compileCached(const RoutingSpec &spec,
                             const JitOptions &options) {
  const nvptx::NvptxCompileOptions &compile = options.compile;
  if (compile.arch.empty())
    throw Error(Error::Kind::InvalidArgument,
                "JIT: no arch given (set JitOptions::compile.arch, or call "
                "loadRouter, which takes the device's)");
  if (!compile.overrideDir.empty())
    throw Error(Error::Kind::InvalidArgument,
                "JIT: an override directory (" + compile.overrideDir +
                    ") is not taken: its PTX must not be cached under the "
                    "spec's key (use moegen compile --override-dir)");
  std::string key = cacheKeyFor(spec, compile);

  rt::JitCache::Options cacheOptions = options.cache;
  // Stages are dumped only when they run.
  if (!compile.dumpDir.empty())
    cacheOptions.alwaysCompile = true;
  rt::JitCache cache(cacheOptions);
  return cache.getOrCompile(key, [&](const std::string &directory) {
    nvptx::NvptxCompileResult result;
    std::string error;
    nvptx::CompileStatus status = nvptx::compile(
        spec, compile, nvptx::Stage::Cubin, result, error);
    if (status != nvptx::CompileStatus::Ok)
      throw Error(status == nvptx::CompileStatus::BadInput
                      ? Error::Kind::InvalidArgument
                      : Error::Kind::Compile,
                  "JIT: compiling spec '" + spec.name + "' for " +
                      compile.arch + " failed: " + error);
    if (!nvptx::writeKernelDirectory(spec, result, directory, error))
      throw Error(Error::Kind::Cache, "JIT: " + error);
  });
}

} // namespace moegen::jit
