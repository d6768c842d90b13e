//===- RuntimeCacheTest.cpp - Cache keys and the on-disk JIT cache --------===//
//
// SHA-256 against the FIPS 180-4 vectors; keys deterministic and sensitive
// to every input; entries published atomically; racing threads and
// processes compile once; crashed writers and corrupt entries are cleaned
// up and rebuilt; always-compile.
//
//===----------------------------------------------------------------------===//

#include "runtime/Error.h"
#include "runtime/JitCache.h"
#include "runtime/Sha256.h"
#include "tests/unit/RuntimeTestUtil.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <thread>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace moegen::rt;
using rttest::TempDir;
namespace fs = std::filesystem;

namespace {

/// Sets an environment variable for a scope (nullptr: unsets it).
class ScopedEnv {
public:
  ScopedEnv(const char *name, const char *value) : name(name) {
    if (const char *old = std::getenv(name))
      previous = old;
    if (value)
      ::setenv(name, value, 1);
    else
      ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (previous)
      ::setenv(name, previous->c_str(), 1);
    else
      ::unsetenv(name);
  }

private:
  const char *name;
  std::optional<std::string> previous;
};

/// A compile step writing the example kernels; counts its runs.
struct FakeCompiler {
  std::atomic<int> runs{0};
  std::chrono::milliseconds delay{0};
  CompileFn fn() {
    return [this](const std::string &out) {
      ++runs;
      rttest::writeKernelDir(out, rttest::exampleManifest());
      std::this_thread::sleep_for(delay);
    };
  }
};

std::vector<std::string> listDir(const std::string &dir) {
  std::vector<std::string> names;
  for (const auto &entry : fs::directory_iterator(dir))
    names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

TEST(RuntimeSha256Test, FipsVectors) {
  EXPECT_EQ(sha256Hex(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256Hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(
      sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
      "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  Sha256 million;
  std::string chunk(1000, 'a');
  for (int i = 0; i < 1000; ++i)
    million.update(chunk);
  EXPECT_EQ(million.finishHex(),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  // Split updates at every offset hash like one update.
  std::string text(200, 'x');
  for (size_t i = 0; i < text.size(); ++i)
    text[i] = char('a' + i % 26);
  for (size_t split = 0; split <= text.size(); split += 7) {
    Sha256 hash;
    hash.update(std::string_view(text).substr(0, split));
    hash.update(std::string_view(text).substr(split));
    EXPECT_EQ(hash.finishHex(), sha256Hex(text)) << split;
  }
}

TEST(RuntimeCacheKeyTest, DeterministicAndSensitiveToEachInput) {
  const std::string key = cacheKey("spec", "sm_90", "0.1.0", "config");
  EXPECT_EQ(key.size(), 64u);
  EXPECT_EQ(key.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_EQ(key, cacheKey("spec", "sm_90", "0.1.0", "config"));
  EXPECT_NE(key, cacheKey("spec ", "sm_90", "0.1.0", "config"));
  EXPECT_NE(key, cacheKey("spec", "sm_90a", "0.1.0", "config"));
  EXPECT_NE(key, cacheKey("spec", "sm_90", "0.1.1", "config"));
  EXPECT_NE(key, cacheKey("spec", "sm_90", "0.1.0", "config2"));
  // Fields are framed: moving bytes between them changes the key.
  EXPECT_NE(cacheKey("ab", "c", "", ""), cacheKey("a", "bc", "", ""));
  EXPECT_NE(cacheKey("", "", "", "x"), cacheKey("", "", "x", ""));
  // Pinned, so that a change of the key scheme is a deliberate one.
  EXPECT_EQ(cacheKey("", "", "", ""),
            sha256Hex("moegen-cache-key-v1\n0:\n0:\n0:\n0:\n"));
}

TEST(RuntimeCacheTest, DirectoryFromEnvironment) {
  ScopedEnv home("HOME", "/home/someone");
  {
    ScopedEnv dir("MOEGEN_CACHE_DIR", "/x/cache");
    ScopedEnv xdg("XDG_CACHE_HOME", "/x/xdg");
    EXPECT_EQ(cacheDirectory(), "/x/cache");
  }
  {
    ScopedEnv dir("MOEGEN_CACHE_DIR", "");
    ScopedEnv xdg("XDG_CACHE_HOME", "/x/xdg");
    EXPECT_EQ(cacheDirectory(), "/x/xdg/moegen");
  }
  {
    ScopedEnv dir("MOEGEN_CACHE_DIR", nullptr);
    ScopedEnv xdg("XDG_CACHE_HOME", nullptr);
    EXPECT_EQ(cacheDirectory(), "/home/someone/.cache/moegen");
    ScopedEnv noHome("HOME", nullptr);
    try {
      cacheDirectory();
      FAIL() << "expected an error";
    } catch (const Error &e) {
      EXPECT_EQ(e.kind(), Error::Kind::Cache);
      EXPECT_EQ(std::string(e.what()),
                "no cache directory: set MOEGEN_CACHE_DIR (or XDG_CACHE_HOME "
                "or HOME)");
    }
  }
  {
    TempDir tmp;
    ScopedEnv dir("MOEGEN_CACHE_DIR", tmp.path().c_str());
    EXPECT_EQ(JitCache().directory(), tmp.path());
  }
}

class RuntimeJitCacheTest : public ::testing::Test {
protected:
  JitCache cache(bool always = false) {
    JitCache::Options options;
    options.directory = root.path() + "/cache";
    options.alwaysCompile = always;
    return JitCache(options);
  }
  std::string entry(const std::string &key) {
    return root.path() + "/cache/" + key;
  }
  TempDir root;
  const std::string key = cacheKey("spec", "sm_90", "0.1.0", "");
};

TEST_F(RuntimeJitCacheTest, CompilesOnceThenHits) {
  FakeCompiler compiler;
  JitCache c = cache();
  CacheEntry first = c.getOrCompile(key, compiler.fn());
  EXPECT_TRUE(first.compiled);
  EXPECT_EQ(first.directory, entry(key));
  EXPECT_EQ(compiler.runs, 1);
  EXPECT_EQ(listDir(first.directory),
            (std::vector<std::string>{"CHECKSUMS", "kernels.cubin",
                                      "kernels.ptx", "manifest.json"}));
  const std::string checksums =
      rttest::readText(first.directory + "/CHECKSUMS");
  EXPECT_EQ(
      checksums,
      sha256Hex(rttest::readText(first.directory + "/kernels.cubin")) +
          "  kernels.cubin\n" +
          sha256Hex(rttest::readText(first.directory + "/kernels.ptx")) +
          "  kernels.ptx\n" +
          sha256Hex(rttest::readText(first.directory + "/manifest.json")) +
          "  manifest.json\n");
  // Only the entry and its lock remain: no temporaries.
  EXPECT_EQ(listDir(root.path() + "/cache"),
            (std::vector<std::string>{key, key + ".lock"}));

  CacheEntry second = c.getOrCompile(key, compiler.fn());
  EXPECT_FALSE(second.compiled);
  EXPECT_EQ(second.directory, first.directory);
  EXPECT_EQ(compiler.runs, 1);
  EXPECT_TRUE(c.isValidEntry(key));

  // Another key is another entry.
  const std::string other = cacheKey("spec", "sm_80", "0.1.0", "");
  EXPECT_TRUE(c.getOrCompile(other, compiler.fn()).compiled);
  EXPECT_EQ(compiler.runs, 2);
}

TEST_F(RuntimeJitCacheTest, EntriesAndRemove) {
  JitCache c = cache();
  // No cache directory yet: no entries, nothing to remove.
  EXPECT_TRUE(c.entries().empty());
  EXPECT_FALSE(c.remove(key));

  FakeCompiler compiler;
  const std::string other = cacheKey("spec", "sm_80", "0.1.0", "");
  c.getOrCompile(key, compiler.fn());
  c.getOrCompile(other, compiler.fn());
  // Neither locks, temporaries nor foreign directories count.
  fs::create_directory(root.path() + "/cache/.tmp-" + key + "-dead");
  fs::create_directory(root.path() + "/cache/Not A Key");
  std::vector<JitCache::EntryStatus> entries = c.entries();
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].key, std::min(key, other));
  EXPECT_EQ(entries[1].key, std::max(key, other));
  for (const JitCache::EntryStatus &status : entries) {
    EXPECT_EQ(status.directory, entry(status.key));
    EXPECT_EQ(status.problem, "");
  }

  // A corrupt entry is listed with what is wrong.
  rttest::writeText(entry(key) + "/kernels.ptx", "tampered");
  entries = c.entries();
  const JitCache::EntryStatus &corrupt =
      entries[0].key == key ? entries[0] : entries[1];
  EXPECT_EQ(corrupt.problem, "kernels.ptx does not match its checksum");

  EXPECT_TRUE(c.remove(key));
  EXPECT_FALSE(c.remove(key));
  EXPECT_FALSE(fs::exists(entry(key)));
  // Its lock file stays, and so does the other entry; the dead writer's
  // temporary went with the removal.
  EXPECT_EQ(listDir(root.path() + "/cache"),
            (std::vector<std::string>{"Not A Key", key + ".lock", other,
                                      other + ".lock"}));
  ASSERT_EQ(c.entries().size(), 1u);
  EXPECT_THROW(c.remove("../escape"), Error);
}

TEST_F(RuntimeJitCacheTest, CacheDirectoryThatIsAFileIsAnError) {
  // Listing it as empty would hide the mistake (and `cache clear` would
  // claim success).
  rttest::writeText(root.path() + "/cache", "not a directory");
  JitCache c = cache();
  try {
    c.entries();
    FAIL() << "expected an error";
  } catch (const Error &e) {
    EXPECT_EQ(e.kind(), Error::Kind::Cache);
    EXPECT_EQ(std::string(e.what()),
              "the cache directory '" + root.path() +
                  "/cache' is not a directory (MOEGEN_CACHE_DIR, "
                  "XDG_CACHE_HOME or HOME names it)");
  }
}

TEST_F(RuntimeJitCacheTest, FailedCompileLeavesNothing) {
  JitCache c = cache();
  EXPECT_THROW(c.getOrCompile(key,
                              [](const std::string &out) {
                                rttest::writeText(out + "/half.cubin", "x");
                                throw std::runtime_error("ptxas failed");
                              }),
               std::runtime_error);
  EXPECT_EQ(listDir(root.path() + "/cache"),
            (std::vector<std::string>{key + ".lock"}));

  // A compile step that writes no manifest is reported, not published.
  try {
    c.getOrCompile(key, [](const std::string &out) {
      rttest::writeText(out + "/kernels.cubin", "x");
    });
    FAIL() << "expected an error";
  } catch (const Error &e) {
    EXPECT_EQ(e.kind(), Error::Kind::Cache);
    EXPECT_EQ(std::string(e.what()),
              "the compile step for cache key " + key +
                  " wrote an invalid entry: CHECKSUMS does not list "
                  "manifest.json");
  }
  EXPECT_EQ(listDir(root.path() + "/cache"),
            (std::vector<std::string>{key + ".lock"}));
}

TEST_F(RuntimeJitCacheTest, InvalidKey) {
  JitCache c = cache();
  FakeCompiler compiler;
  for (const char *bad : {"", "../x", "a/b", "-x", "UPPER", ".hidden"})
    EXPECT_THROW(c.getOrCompile(bad, compiler.fn()), Error) << bad;
  EXPECT_EQ(compiler.runs, 0);
}

TEST_F(RuntimeJitCacheTest, CorruptEntriesAreRebuilt) {
  FakeCompiler compiler;
  JitCache c = cache();
  c.getOrCompile(key, compiler.fn());
  const std::string dir = entry(key);
  struct Corruption {
    const char *what;
    std::function<void()> apply;
    std::string why;
  };
  const std::vector<Corruption> corruptions = {
      {"binary changed",
       [&] { rttest::writeText(dir + "/kernels.cubin", "FAKE-CUBIN sm_90\n"); },
       "kernels.cubin does not match its checksum"},
      {"binary missing", [&] { fs::remove(dir + "/kernels.ptx"); },
       "kernels.ptx is missing"},
      {"manifest missing", [&] { fs::remove(dir + "/manifest.json"); },
       "manifest.json is missing"},
      {"checksums missing", [&] { fs::remove(dir + "/CHECKSUMS"); },
       "CHECKSUMS is missing"},
      {"checksums malformed",
       [&] { rttest::writeText(dir + "/CHECKSUMS", "garbage\n"); },
       "CHECKSUMS line 1 is malformed"},
      {"manifest unparsable (checksums consistent)",
       [&] {
         rttest::writeText(dir + "/manifest.json", "{");
         rttest::writeText(dir + "/CHECKSUMS",
                           sha256Hex("{") + "  manifest.json\n");
       },
       dir + "/manifest.json: invalid JSON: parse error at line 1, column 2: "
             "syntax error while parsing object key - unexpected end of "
             "input; expected string literal"},
      // Reads of an entry are bounded: neither a huge CHECKSUMS nor a FIFO
      // (which would never end) is read.
      {"checksums huge",
       [&] {
         std::string line = std::string(64, '0') + "  kernels.ptx\n";
         std::string text;
         while (text.size() <= (64 << 10))
           text += line;
         rttest::writeText(dir + "/CHECKSUMS", text);
       },
       "CHECKSUMS is larger than 64 KiB"},
      {"checksums a fifo",
       [&] {
         fs::remove(dir + "/CHECKSUMS");
         ASSERT_EQ(::mkfifo((dir + "/CHECKSUMS").c_str(), 0600), 0);
       },
       "CHECKSUMS is not a regular file"},
      {"binary a fifo",
       [&] {
         fs::remove(dir + "/kernels.cubin");
         ASSERT_EQ(::mkfifo((dir + "/kernels.cubin").c_str(), 0600), 0);
       },
       "kernels.cubin is not a regular file"},
      {"entry is a file",
       [&] {
         fs::remove_all(dir);
         rttest::writeText(dir, "not a directory");
       },
       "no entry"},
  };
  int expectedRuns = 1;
  for (const Corruption &corruption : corruptions) {
    corruption.apply();
    std::string why;
    EXPECT_FALSE(c.isValidEntry(key, &why)) << corruption.what;
    EXPECT_EQ(why, corruption.why) << corruption.what;
    CacheEntry rebuilt = c.getOrCompile(key, compiler.fn());
    EXPECT_TRUE(rebuilt.compiled) << corruption.what;
    EXPECT_EQ(compiler.runs, ++expectedRuns) << corruption.what;
    EXPECT_TRUE(c.isValidEntry(key, &why)) << corruption.what << ": " << why;
    EXPECT_EQ(listDir(root.path() + "/cache"),
              (std::vector<std::string>{key, key + ".lock"}))
        << corruption.what;
  }
}

TEST_F(RuntimeJitCacheTest, EntryOfAnotherCompilerVersionIsRebuilt) {
  JitCache::Options options;
  options.directory = root.path() + "/cache";
  options.alwaysCompile = false;
  options.compilerVersion = "0.0.1";
  JitCache c(options);
  FakeCompiler compiler; // writes runtimeVersion(), not 0.0.1
  EXPECT_THROW(c.getOrCompile(key, compiler.fn()), Error);
  c.getOrCompile(key, [](const std::string &out) {
    nlohmann::json m = rttest::exampleManifest();
    m["compiler_version"] = "0.0.1";
    rttest::writeKernelDir(out, m);
  });
  EXPECT_TRUE(c.isValidEntry(key));
}

TEST_F(RuntimeJitCacheTest, AlwaysCompile) {
  FakeCompiler compiler;
  {
    JitCache c = cache(true);
    EXPECT_TRUE(c.alwaysCompile());
    EXPECT_TRUE(c.getOrCompile(key, compiler.fn()).compiled);
    EXPECT_TRUE(c.getOrCompile(key, compiler.fn()).compiled);
    EXPECT_EQ(compiler.runs, 2);
  }
  JitCache::Options options;
  options.directory = root.path() + "/cache";
  {
    ScopedEnv env("MOEGEN_ALWAYS_COMPILE", "1");
    JitCache c(options);
    EXPECT_TRUE(c.alwaysCompile());
    EXPECT_TRUE(c.getOrCompile(key, compiler.fn()).compiled);
    EXPECT_EQ(compiler.runs, 3);
  }
  {
    ScopedEnv env("MOEGEN_ALWAYS_COMPILE", "0");
    JitCache c(options);
    EXPECT_FALSE(c.alwaysCompile());
    EXPECT_FALSE(c.getOrCompile(key, compiler.fn()).compiled);
    EXPECT_EQ(compiler.runs, 3);
  }
  EXPECT_EQ(listDir(root.path() + "/cache"),
            (std::vector<std::string>{key, key + ".lock"}));
}

TEST_F(RuntimeJitCacheTest, RacingThreadsCompileOnce) {
  FakeCompiler compiler;
  compiler.delay = std::chrono::milliseconds(50);
  JitCache c = cache();
  std::vector<std::thread> threads;
  std::vector<CacheEntry> results(8);
  for (size_t i = 0; i < results.size(); ++i)
    threads.emplace_back(
        [&, i] { results[i] = c.getOrCompile(key, compiler.fn()); });
  for (std::thread &thread : threads)
    thread.join();
  EXPECT_EQ(compiler.runs, 1);
  int compiled = 0;
  for (const CacheEntry &result : results) {
    EXPECT_EQ(result.directory, entry(key));
    compiled += result.compiled;
  }
  EXPECT_EQ(compiled, 1);
  EXPECT_TRUE(c.isValidEntry(key));
}

TEST_F(RuntimeJitCacheTest, RacingProcessesCompileOnce) {
  const std::string cacheDir = root.path() + "/cache";
  const std::string log = root.path() + "/compiles.log";
  constexpr int kProcesses = 6;
  std::vector<pid_t> children;
  for (int i = 0; i < kProcesses; ++i) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int status = 1;
      try {
        JitCache::Options options;
        options.directory = cacheDir;
        options.alwaysCompile = false;
        JitCache c(options);
        CacheEntry result = c.getOrCompile(key, [&](const std::string &out) {
          int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
          (void)!::write(fd, "compile\n", 8);
          ::close(fd);
          // Write slowly, so that a reader could see a half-written entry.
          rttest::writeText(out + "/kernels.cubin", "partial");
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
          rttest::writeKernelDir(out, rttest::exampleManifest());
        });
        // Whoever wins, every process sees the complete entry.
        status =
            result.directory == cacheDir + "/" + key && c.isValidEntry(key) &&
                    rttest::readText(result.directory + "/kernels.cubin") !=
                        "partial"
                ? 0
                : 2;
      } catch (...) {
        status = 3;
      }
      ::_exit(status);
    }
    children.push_back(pid);
  }
  for (pid_t pid : children) {
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0);
  }
  EXPECT_EQ(rttest::readText(log), "compile\n");
}

TEST_F(RuntimeJitCacheTest, CrashedWriterLeavesNoEntry) {
  const std::string cacheDir = root.path() + "/cache";
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    JitCache::Options options;
    options.directory = cacheDir;
    options.alwaysCompile = false;
    JitCache c(options);
    c.getOrCompile(key, [](const std::string &out) {
      rttest::writeKernelDir(out, rttest::exampleManifest());
      ::kill(::getpid(), SIGKILL); // dies mid-publish, holding the lock
    });
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status));
  // The half-made entry is a hidden temporary, never <key>.
  JitCache c = cache();
  EXPECT_FALSE(c.isValidEntry(key));
  std::vector<std::string> names = listDir(cacheDir);
  ASSERT_EQ(names.size(), 2u);
  EXPECT_EQ(names[0].rfind(".tmp-" + key + "-", 0), 0u);
  EXPECT_EQ(names[1], key + ".lock");
  // The next compile removes it (the kernel released the dead lock).
  FakeCompiler compiler;
  EXPECT_TRUE(c.getOrCompile(key, compiler.fn()).compiled);
  EXPECT_EQ(listDir(cacheDir), (std::vector<std::string>{key, key + ".lock"}));
}

TEST_F(RuntimeJitCacheTest, UnwritableCacheDirectory) {
  rttest::writeText(root.path() + "/file", "x");
  JitCache::Options options;
  options.directory = root.path() + "/file/cache";
  options.alwaysCompile = false;
  JitCache c(options);
  FakeCompiler compiler;
  try {
    c.getOrCompile(key, compiler.fn());
    FAIL() << "expected an error";
  } catch (const Error &e) {
    EXPECT_EQ(e.kind(), Error::Kind::Cache);
    EXPECT_EQ(
        std::string(e.what()).rfind("cannot create the cache directory '" +
                                        root.path() + "/file/cache': ",
                                    0),
        0u)
        << e.what();
  }
}

} // namespace
