//===- CacheCommand.cpp - moegen cache dir|list|clear|warm ----------------===//
//
// The JIT cache that `run --backend cuda` and engines using compiler/jit
// read (docs/cli.md): where it is, what it holds, emptying it, and filling
// it ahead of time.
//
//===----------------------------------------------------------------------===//

#include "compiler/tools/moegen/Commands.h"

#include "compiler/jit/KernelJit.h"
#include "compiler/spec/MoEToProgram.h"
#include "compiler/spec/SpecParser.h"
#include "runtime/Error.h"
#include "runtime/JitCache.h"
#include "runtime/Manifest.h"
#include "support/Quote.h"

#include "llvm/Support/raw_ostream.h"

#include <optional>

namespace moegen::tool {

int runCacheDir() {
  try {
    llvm::outs() << rt::cacheDirectory() << "\n";
  } catch (const std::exception &e) {
    return reportUsage(e.what());
  }
  return kExitOk;
}

int runCacheList() {
  try {
    rt::JitCache cache;
    for (const auto &entry : cache.entries()) {
      llvm::outs() << entry.key << "  ";
      if (!entry.problem.empty()) {
        llvm::outs() << "invalid: " << entry.problem << "\n";
        continue;
      }
      rt::Manifest manifest = rt::loadManifest(entry.directory);
      llvm::outs() << manifest.specName << " " << manifest.archText;
      const char *separator = " ";
      for (const rt::Kernel &kernel : manifest.kernels) {
        llvm::outs() << separator << kernel.symbol;
        separator = ",";
      }
      llvm::outs() << "\n";
    }
  } catch (const std::exception &e) {
    return reportUsage(e.what());
  }
  return kExitOk;
}

int runCacheClear() {
  try {
    rt::JitCache cache;
    size_t removed = 0;
    for (const auto &entry : cache.entries())
      removed += cache.remove(entry.key);
    llvm::outs() << "removed " << removed
                 << (removed == 1 ? " entry" : " entries") << " from "
                 << cache.directory() << "\n";
  } catch (const std::exception &e) {
    return reportUsage(e.what());
  }
  return kExitOk;
}

/// Compiles every spec for every arch into the cache, as loadRouter would on
/// a device of that arch: a build host can fill a cache shared with GPU
/// machines running the same moegen build and CUDA toolkit. Every spec is
/// parsed before anything is compiled.
int runCacheWarm(const CacheOptions &options) {
  std::vector<RoutingSpec> specs;
  for (const std::string &path : options.specPaths) {
    std::string error;
    std::optional<RoutingSpec> spec = parseRouterFile(path, error);
    if (!spec) {
      llvm::errs() << error << "\n";
      return kExitBadInput;
    }
    specs.push_back(std::move(*spec));
  }
  std::vector<std::string> archs = options.archs;
  if (archs.empty())
    archs.push_back("sm_90");
  for (size_t i = 0; i < specs.size(); ++i) {
    for (const std::string &arch : archs) {
      jit::JitOptions jit;
      jit.compile.arch = arch;
      jit.compile.tokensPerBlock = options.tokensPerBlock;
      jit.compile.lanesPerToken = options.lanesPerToken;
      try {
        rt::CacheEntry entry = jit::compileCached(specs[i], jit);
        llvm::outs() << specs[i].name << " " << arch << " "
                     << (entry.compiled ? "compiled" : "cached") << " "
                     << entry.directory << "\n";
      } catch (const rt::Error &e) {
        if (e.kind() != rt::Error::Kind::Compile)
          return reportUsage(e.what());
        llvm::errs() << support::quotePath(options.specPaths[i])
                     << ": internal error: " << e.what()
                     << "\nrepro: " << options.commandLine << "\n";
        return kExitInternal;
      } catch (const std::exception &e) {
        return reportUsage(e.what());
      }
    }
  }
  return kExitOk;
}

} // namespace moegen::tool
