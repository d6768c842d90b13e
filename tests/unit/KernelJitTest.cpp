//===- KernelJitTest.cpp - The compiler side of the JIT cache -------------===//
//
// compileCached compiles real specs with the NVPTX backend (ptxas included)
// into a private cache directory: no GPU needed. What a GPU adds (loading
// the entry) is covered by GpuBackendTest and run-cuda.test.
//
//===----------------------------------------------------------------------===//

#include "compiler/jit/KernelJit.h"
#include "compiler/spec/SpecParser.h"
#include "runtime/Error.h"
#include "runtime/Manifest.h"
#include "RuntimeTestUtil.h"

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include <sys/stat.h>

namespace {

namespace fs = std::filesystem;
using moegen::RoutingSpec;
using moegen::rt::Error;
using namespace moegen::jit;

RoutingSpec specFrom(const std::string &yaml) {
  std::string error;
  std::optional<RoutingSpec> spec =
      moegen::parseRoutingSpec(yaml, "test.yaml", error);
  if (!spec)
    ADD_FAILURE() << error;
  return spec.value_or(RoutingSpec{});
}

const char *kMixtral = "name: mixtral\nnum_experts: 8\ntop_k: 2\n"
                       "scoring: softmax\n";

JitOptions optionsIn(const rttest::TempDir &cache,
                     const std::string &arch = "sm_90") {
  JitOptions options;
  options.compile.arch = arch;
  options.cache.directory = cache.path();
  options.cache.alwaysCompile = false;
  return options;
}

/// Runs `body` and returns the rt::Error it throws; fails when it throws
/// nothing.
template <typename Body> Error errorOf(Body body) {
  try {
    body();
  } catch (const Error &e) {
    return e;
  }
  ADD_FAILURE() << "no moegen::rt::Error thrown";
  return Error(Error::Kind::Io, "<none>");
}

/// Entries (not lock files) in the cache directory.
std::vector<std::string> entriesIn(const std::string &cache) {
  std::vector<std::string> names;
  for (const fs::directory_entry &entry : fs::directory_iterator(cache))
    if (entry.is_directory())
      names.push_back(entry.path().filename().string());
  return names;
}

TEST(KernelJitTest, ArchForComputeCapability) {
  using moegen::nvptx::archForComputeCapability;
  EXPECT_EQ(archForComputeCapability(7, 5), "");
  EXPECT_EQ(archForComputeCapability(8, 0), "sm_80");
  EXPECT_EQ(archForComputeCapability(8, 6), "sm_80");
  EXPECT_EQ(archForComputeCapability(8, 7), "sm_80");
  EXPECT_EQ(archForComputeCapability(8, 9), "sm_89");
  EXPECT_EQ(archForComputeCapability(9, 0), "sm_90");
  EXPECT_EQ(archForComputeCapability(10, 0), "sm_100");
  EXPECT_EQ(archForComputeCapability(12, 0), "sm_100");
}

TEST(KernelJitTest, KeyCoversEverythingTheKernelsDependOn) {
  RoutingSpec spec = specFrom(kMixtral);
  moegen::nvptx::NvptxCompileOptions options;
  options.arch = "sm_90";
  std::string key = cacheKeyFor(spec, options);
  EXPECT_EQ(key.size(), 64u);
  EXPECT_EQ(key, cacheKeyFor(spec, options)) << "not deterministic";

  // The same spec spelled differently (a default made explicit, other key
  // order) is the same spec.
  EXPECT_EQ(key, cacheKeyFor(specFrom("scoring: softmax\ntop_k: 2\n"
                                      "num_experts: 8\nname: mixtral\n"
                                      "dispatch: false\n"),
                             options));

  auto differs = [&](RoutingSpec other,
                     moegen::nvptx::NvptxCompileOptions otherOptions,
                     const char *what) {
    EXPECT_NE(key, cacheKeyFor(other, otherOptions)) << what;
  };
  differs(specFrom("name: mixtral\nnum_experts: 8\ntop_k: 3\n"
                   "scoring: softmax\n"),
          options, "top_k");
  moegen::nvptx::NvptxCompileOptions changed = options;
  changed.arch = "sm_80";
  differs(spec, changed, "arch");
  changed = options;
  changed.tokensPerBlock = 2;
  differs(spec, changed, "tokens per block");
  changed = options;
  changed.topk = "insertion";
  differs(spec, changed, "top-k method");

  CacheKeyInputs inputs = cacheKeyInputs(spec, options);
  EXPECT_NE(inputs.compilerVersion.find(codegenFingerprint()),
            std::string::npos);
  EXPECT_EQ(std::string(codegenFingerprint()).size(), 16u);
  EXPECT_NE(inputs.kernelConfigText.find("ptxas=Build "), std::string::npos)
      << inputs.kernelConfigText;
  EXPECT_NE(inputs.kernelConfigText.find("libdevice="), std::string::npos);
  EXPECT_EQ(inputs.kernelConfigText.find("libdevice=missing"),
            std::string::npos)
      << "the toolkit's libdevice was not found";
  // Not the toolkit's path: one toolkit at two paths shares entries.
  EXPECT_EQ(inputs.kernelConfigText.find("/bin/ptxas"), std::string::npos);
  EXPECT_EQ(inputs.specText, moegen::printRoutingSpec(spec));
}

TEST(KernelJitTest, BadOptionsAreRefusedBeforeAnythingIsWritten) {
  rttest::TempDir cache;
  RoutingSpec spec = specFrom(kMixtral);
  struct Case {
    const char *what;
    void (*change)(JitOptions &);
    const char *message;
  } cases[] = {
      {"no arch", [](JitOptions &o) { o.compile.arch = ""; }, "no arch given"},
      {"unknown arch", [](JitOptions &o) { o.compile.arch = "sm_70"; },
       "--arch sm_70: must be one of"},
      {"tokens per block", [](JitOptions &o) { o.compile.tokensPerBlock = 33; },
       "tokens per block = 33"},
      {"top-k method", [](JitOptions &o) { o.compile.topk = "bitonic"; },
       "topk 'bitonic'"},
      {"override", [](JitOptions &o) { o.compile.overrideDir = "/tmp/x"; },
       "override directory"},
  };
  for (const Case &c : cases) {
    JitOptions options = optionsIn(cache);
    c.change(options);
    Error e = errorOf([&] { compileCached(spec, options); });
    EXPECT_EQ(e.kind(), Error::Kind::InvalidArgument) << c.what;
    EXPECT_NE(std::string(e.what()).find(c.message), std::string::npos)
        << c.what << ": " << e.what();
  }
  EXPECT_TRUE(entriesIn(cache.path()).empty());
}

TEST(KernelJitTest, CompilesOnceThenHits) {
  rttest::TempDir cache;
  std::string error;
  std::optional<RoutingSpec> spec = moegen::parseRoutingSpecFile(
      MOEGEN_SOURCE_DIR "/templates/deepseek-v3.yaml", error);
  ASSERT_TRUE(spec) << error;
  JitOptions options = optionsIn(cache);

  moegen::rt::CacheEntry first = compileCached(*spec, options);
  EXPECT_TRUE(first.compiled);
  EXPECT_EQ(fs::path(first.directory).filename().string(),
            cacheKeyFor(*spec, options.compile));
  for (const char *file : {"manifest.json", "kernels.cubin", "kernels.ptx",
                           "spec.yaml", "CHECKSUMS"})
    EXPECT_TRUE(fs::is_regular_file(first.directory + "/" + file)) << file;
  moegen::rt::Manifest manifest = moegen::rt::loadManifest(first.directory);
  EXPECT_EQ(manifest.archText, "sm_90");
  EXPECT_EQ(manifest.numExperts, 256);
  EXPECT_EQ(manifest.specName, "deepseek_v3");
  EXPECT_EQ(manifest.kernels.size(), 5u)
      << "route, route_dispatch, replay, replay_dispatch, dispatch";

  moegen::rt::CacheEntry second = compileCached(*spec, options);
  EXPECT_FALSE(second.compiled);
  EXPECT_EQ(second.directory, first.directory);

  // Another arch is another entry.
  moegen::rt::CacheEntry ampere = compileCached(*spec, optionsIn(cache, "sm_80"));
  EXPECT_TRUE(ampere.compiled);
  EXPECT_NE(ampere.directory, first.directory);
  EXPECT_EQ(moegen::rt::loadManifest(ampere.directory).archText, "sm_80");
  EXPECT_EQ(entriesIn(cache.path()).size(), 2u);
}

TEST(KernelJitTest, CorruptEntryIsRebuilt) {
  rttest::TempDir cache;
  RoutingSpec spec = specFrom(kMixtral);
  JitOptions options = optionsIn(cache);
  moegen::rt::CacheEntry entry = compileCached(spec, options);
  ASSERT_TRUE(entry.compiled);
  std::string cubinPath = entry.directory + "/kernels.cubin";
  std::string cubin = rttest::readText(cubinPath);
  cubin[cubin.size() / 2] ^= 0x5a;
  rttest::writeText(cubinPath, cubin);

  moegen::rt::CacheEntry rebuilt = compileCached(spec, options);
  EXPECT_TRUE(rebuilt.compiled);
  EXPECT_EQ(rebuilt.directory, entry.directory);
  EXPECT_NE(rttest::readText(cubinPath), cubin);
  EXPECT_FALSE(compileCached(spec, options).compiled);
}

TEST(KernelJitTest, AlwaysCompileAndDumpDirCompileEveryTime) {
  rttest::TempDir cache;
  RoutingSpec spec = specFrom(kMixtral);
  JitOptions options = optionsIn(cache);
  options.cache.alwaysCompile = true;
  EXPECT_TRUE(compileCached(spec, options).compiled);
  EXPECT_TRUE(compileCached(spec, options).compiled);

  // A dump directory makes the stages run (and be dumped), but a valid
  // entry, which other processes may be loading, is not replaced.
  options.cache.alwaysCompile = false;
  rttest::TempDir dumps;
  options.compile.dumpDir = dumps.path();
  moegen::rt::CacheEntry entry = compileCached(spec, options);
  auto manifestInode = [&] {
    struct stat info {};
    ::stat((entry.directory + "/manifest.json").c_str(), &info);
    return info.st_ino;
  };
  ino_t before = manifestInode();
  EXPECT_TRUE(compileCached(spec, options).compiled);
  EXPECT_TRUE(fs::is_regular_file(dumps / "07-kernels.ptx"));
  EXPECT_TRUE(fs::is_regular_file(dumps / "04-gpu.mlir"));
  EXPECT_EQ(manifestInode(), before) << "the entry was replaced";
  // A missing entry is published from the dumped compile.
  fs::remove_all(entry.directory);
  EXPECT_TRUE(compileCached(spec, options).compiled);
  // The dump directory is not part of the key.
  options.compile.dumpDir.clear();
  EXPECT_FALSE(compileCached(spec, options).compiled);
}

TEST(KernelJitTest, ConcurrentCallersCompileOnce) {
  rttest::TempDir cache;
  RoutingSpec spec = specFrom(kMixtral);
  JitOptions options = optionsIn(cache);
  std::atomic<int> compiled{0};
  std::vector<std::string> directories(3);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < directories.size(); ++i)
    threads.emplace_back([&, i] {
      moegen::rt::CacheEntry entry = compileCached(spec, options);
      compiled += entry.compiled;
      directories[i] = entry.directory;
    });
  for (std::thread &thread : threads)
    thread.join();
  EXPECT_EQ(compiled.load(), 1);
  EXPECT_EQ(directories[0], directories[1]);
  EXPECT_EQ(directories[1], directories[2]);
  EXPECT_EQ(entriesIn(cache.path()).size(), 1u);
}

/// A toolkit whose ptxas reports a version but fails every compile; the
/// rest (libdevice) is the real toolkit's.
class BrokenPtxasTest : public ::testing::Test {
protected:
  void SetUp() override {
    const char *home = std::getenv("CUDA_HOME");
    std::string real = home && *home ? home : "/usr/local/cuda";
    if (!fs::is_directory(real + "/nvvm"))
      GTEST_SKIP() << "no CUDA toolkit at " << real;
    fs::create_directories(toolkit / "bin");
    fs::create_directory_symlink(real + "/nvvm", toolkit / "nvvm");
    rttest::writeText(toolkit / "bin/ptxas",
                      "#!/bin/sh\n"
                      "if [ \"$1\" = --version ]; then echo 'Build fake'; "
                      "exit 0; fi\n"
                      "echo 'ptxas fatal   : fake failure' >&2\nexit 3\n");
    fs::permissions(toolkit / "bin/ptxas", fs::perms::owner_all);
  }
  rttest::TempDir toolkit;
};

TEST_F(BrokenPtxasTest, FailedCompileIsReportedAndNothingIsPublished) {
  rttest::TempDir cache;
  RoutingSpec spec = specFrom(kMixtral);
  JitOptions options = optionsIn(cache);
  options.compile.toolkitPath = toolkit.path();
  // The toolkit's ptxas is part of the key.
  moegen::nvptx::NvptxCompileOptions real = options.compile;
  real.toolkitPath.clear();
  EXPECT_NE(cacheKeyFor(spec, options.compile), cacheKeyFor(spec, real));

  Error e = errorOf([&] { compileCached(spec, options); });
  EXPECT_EQ(e.kind(), Error::Kind::Compile);
  std::string message = e.what();
  EXPECT_NE(message.find("JIT: compiling spec 'mixtral' for sm_90 failed: "
                         "ptxas failed (exit 3)"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("fake failure"), std::string::npos) << message;
  EXPECT_NE(message.find("repro: "), std::string::npos) << message;
  EXPECT_TRUE(entriesIn(cache.path()).empty());
  moegen::rt::JitCache jitCache(options.cache);
  EXPECT_FALSE(jitCache.isValidEntry(cacheKeyFor(spec, options.compile)));
}

TEST_F(BrokenPtxasTest, MissingPtxasIsASetupError) {
  rttest::TempDir cache;
  fs::remove(toolkit / "bin/ptxas");
  JitOptions options = optionsIn(cache);
  options.compile.toolkitPath = toolkit.path();
  const char *path = std::getenv("PATH");
  std::string savedPath = path ? path : "";
  setenv("PATH", "/nonexistent", 1);
  Error e = errorOf([&] { compileCached(specFrom(kMixtral), options); });
  setenv("PATH", savedPath.c_str(), 1);
  EXPECT_EQ(e.kind(), Error::Kind::InvalidArgument);
  EXPECT_NE(std::string(e.what()).find("ptxas not found in " +
                                       toolkit.path() + "/bin or on PATH"),
            std::string::npos)
      << e.what();
}

} // namespace
