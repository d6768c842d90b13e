//===- KernelJit.cpp - Compile specs on first use, through the cache ------===//

#include "compiler/jit/KernelJit.h"

#include "support/Quote.h"
#include "compiler/jit/CodegenFingerprint.inc"
#include "compiler/spec/SpecParser.h"
#include "runtime/Error.h"
#include "runtime/Sha256.h"

#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <vector>

#ifndef MOEGEN_VERSION
#error "MOEGEN_VERSION must be defined by the build"
#endif

namespace moegen::jit {

namespace {

using rt::Error;

/// What of the toolkit the kernels depend on: ptxas's build and the
/// SHA-256 of the libdevice MLIR's NVVM target links. Not its path, so that
/// one toolkit installed at two paths shares entries. Once per toolkit and
/// process: a hit in the cache should not start a process every time.
std::string toolkitFingerprint(const nvptx::NvptxCompileOptions &options) {
  static std::mutex mutex;
  static std::map<std::string, std::string> fingerprints;
  std::string toolkit = nvptx::toolkitDirectory(options);
  std::lock_guard<std::mutex> lock(mutex);
  if (auto it = fingerprints.find(toolkit); it != fingerprints.end())
    return it->second;
  llvm::Expected<std::string> ptxas = nvptx::ptxasVersion(options);
  if (!ptxas)
    // No ptxas, or one that fails: the toolkit, not the spec, is wrong.
    throw Error(Error::Kind::InvalidArgument,
                "JIT: " + nvptx::takeCompileError(ptxas.takeError()).second);
  const std::string &version = *ptxas;
  std::string libdevice = toolkit + "/nvvm/libdevice/libdevice.10.bc";
  std::string digest = "missing";
  if (std::ifstream in{libdevice, std::ios::binary}) {
    rt::Sha256 hash;
    std::vector<char> buffer(1 << 16);
    while (in) {
      in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
      hash.update(buffer.data(), static_cast<size_t>(in.gcount()));
    }
    digest = hash.finishHex();
  }
  std::string fingerprint = "ptxas=" + version + "\nlibdevice=" + digest + "\n";
  fingerprints.emplace(toolkit, fingerprint);
  return fingerprint;
}

/// Compiles `spec` with `options` (and a kernel per bucket of `buckets`
/// when there are several) into `result`; throws rt::Error.
void compileInto(const RoutingSpec &spec,
                 const nvptx::NvptxCompileOptions &options,
                 const std::vector<nvptx::BucketSchedule> &buckets,
                 nvptx::NvptxCompileResult &result) {
  llvm::Expected<nvptx::NvptxCompileResult> compiled =
      buckets.size() > 1
          ? nvptx::compileBuckets(spec, options, buckets, nvptx::Stage::Cubin)
          : nvptx::compile(spec, options, nvptx::Stage::Cubin);
  if (!compiled) {
    auto [status, error] = nvptx::takeCompileError(compiled.takeError());
    throw Error(status == nvptx::CompileStatus::BadInput
                    ? Error::Kind::InvalidArgument
                    : Error::Kind::Compile,
                "JIT: compiling spec '" + spec.name + "' for " + options.arch +
                    " failed: " + error);
  }
  result = std::move(*compiled);
}

} // namespace

const char *codegenFingerprint() { return MOEGEN_CODEGEN_FINGERPRINT; }

std::vector<nvptx::BucketSchedule>
bucketSchedules(const std::vector<tune::TuningDb::GpuBucket> &buckets,
                const RoutingSpec &spec, const std::string &dbPath,
                std::string &error) {
  std::vector<nvptx::BucketSchedule> schedules;
  const int64_t experts = spec.numExperts;
  for (const tune::TuningDb::GpuBucket &bucket : buckets) {
    if (std::string why = tune::checkGpuConfig(bucket.config, experts);
        !why.empty()) {
      error = support::quotePath(dbPath) + ": error: the entry for " +
              spec.name + " at T = " +
              std::to_string(bucket.entryTokens) + ": " + why;
      return {};
    }
    schedules.push_back({bucket.minTokens, bucket.config.lanesPerToken,
                         bucket.config.tokensPerBlock, bucket.config.topk,
                         "tuned for T = " + std::to_string(bucket.entryTokens) +
                             " in " + dbPath});
  }
  return schedules;
}

CacheKeyInputs
cacheKeyInputs(const RoutingSpec &spec,
               const nvptx::NvptxCompileOptions &options,
               const std::vector<nvptx::BucketSchedule> &buckets) {
  if (llvm::Error error = nvptx::validateOptions(options))
    throw Error(Error::Kind::InvalidArgument,
                "JIT: " + nvptx::takeCompileError(std::move(error)).second);
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
      "\nlanes_per_token=" + std::to_string(options.lanesPerToken) +
      "\ntopk=" + options.topk + "\n" +
      (options.scheduleNote.empty()
           ? ""
           : "schedule_note=" + options.scheduleNote + "\n") +
      toolkitFingerprint(options);
  if (buckets.size() > 1)
    for (const nvptx::BucketSchedule &bucket : buckets)
      inputs.kernelConfigText +=
          "bucket=" + std::to_string(bucket.minTokens) + ":" +
          std::to_string(bucket.lanesPerToken) + ":" +
          std::to_string(bucket.tokensPerBlock) + ":" + bucket.topk + ":" +
          bucket.note + "\n";
  return inputs;
}

std::string cacheKeyFor(const RoutingSpec &spec,
                        const nvptx::NvptxCompileOptions &options,
                        const std::vector<nvptx::BucketSchedule> &buckets) {
  CacheKeyInputs inputs = cacheKeyInputs(spec, options, buckets);
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
  std::string key = cacheKeyFor(spec, compile, options.buckets);
  rt::JitCache cache(options.cache);

  // With a dump directory the stages run (that is when they are dumped),
  // but a valid published entry is kept, not replaced under the feet of
  // processes loading it: the cache is shared.
  std::optional<nvptx::NvptxCompileResult> dumped;
  if (!compile.dumpDir.empty()) {
    dumped.emplace();
    compileInto(spec, compile, options.buckets, *dumped);
  }
  rt::CacheEntry entry =
      cache.getOrCompile(key, [&](const std::string &directory) {
        nvptx::NvptxCompileResult fresh;
        const nvptx::NvptxCompileResult *result = dumped ? &*dumped : &fresh;
        if (!dumped)
          compileInto(spec, compile, options.buckets, fresh);
        if (llvm::Error error =
                nvptx::writeKernelDirectory(spec, *result, directory))
          throw Error(Error::Kind::Cache,
                      "JIT: " +
                          nvptx::takeCompileError(std::move(error)).second);
      });
  if (dumped)
    entry.compiled = true;
  return entry;
}

} // namespace moegen::jit
