//===- JitCache.h - On-disk cache of compiled kernel directories -*- C++
//-*-===//
//
// Compiling a spec takes a while; engines compile on first use and keep the
// result, the way Triton does. A cache entry is a complete `moegen compile
// --emit=cubin -o DIR` output directory (manifest.json and the binaries)
// plus a CHECKSUMS file, stored as <cache>/<key>/.
//
// The compile step itself is a callback, so the runtime stays free of LLVM
// and MLIR: the compiler side passes a function that writes the output
// directory. getOrCompile:
//
//   - returns a valid published entry at once (no lock taken);
//   - otherwise takes an exclusive flock on <cache>/<key>.lock, checks again
//     (another process may have published meanwhile), removes a corrupt
//     entry, runs the callback into a fresh temporary directory inside the
//     cache, writes CHECKSUMS, checks the result, and publishes it with one
//     rename(); a process that loses a rename race uses the winner's entry;
//   - treats an entry as corrupt when CHECKSUMS is missing or malformed, a
//     file it lists is missing or has another SHA-256, or manifest.json does
//     not parse as a manifest of this runtime;
//   - with MOEGEN_ALWAYS_COMPILE=1 (or Options::alwaysCompile), compiles and
//     replaces the entry on every call.
//
// Errors are thrown as moegen::rt::Error (Kind::Cache, or whatever the
// callback throws, after the temporary directory is removed).
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_RUNTIME_JITCACHE_H
#define MOEGEN_RUNTIME_JITCACHE_H

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace moegen::rt {

/// $MOEGEN_CACHE_DIR, else $XDG_CACHE_HOME/moegen, else $HOME/.cache/moegen
/// (empty variables count as unset). Throws Error(Kind::Cache) when none is
/// set.
std::string cacheDirectory();

/// The cache key: SHA-256, as 64 lowercase hex digits, of the four inputs
/// framed with their lengths (so no two different inputs collide by
/// concatenation) under a version tag of the key scheme.
std::string cacheKey(std::string_view normalizedSpecText, std::string_view arch,
                     std::string_view compilerVersion,
                     std::string_view kernelConfigText);

/// Writes a complete output directory (manifest.json and the binaries it
/// names) into the given, existing, empty directory. Throws on failure.
using CompileFn = std::function<void(const std::string &outputDirectory)>;

struct CacheEntry {
  /// The published entry directory: pass it to CudaRouter::load.
  std::string directory;
  /// Whether this call ran the compile step (false: found in the cache).
  bool compiled = false;
};

class JitCache {
public:
  struct Options {
    /// Empty: cacheDirectory().
    std::string directory;
    /// nullopt: MOEGEN_ALWAYS_COMPILE=1 in the environment.
    std::optional<bool> alwaysCompile;
    /// The compiler version manifests must carry; empty: the runtime's.
    std::string compilerVersion;
  };

  JitCache();
  explicit JitCache(Options options);

  const std::string &directory() const { return root; }
  bool alwaysCompile() const { return always; }

  /// The entry for `key` (as made by cacheKey; [0-9a-z_-], 1-128
  /// characters), compiling it with `compile` when it is missing, corrupt,
  /// or alwaysCompile() is set. Safe across threads and processes sharing
  /// the directory (on a local file system with flock).
  CacheEntry getOrCompile(const std::string &key, const CompileFn &compile);

  /// Whether <cache>/<key> is a complete, uncorrupted entry; on false,
  /// `why` (when non-null) says what is wrong.
  bool isValidEntry(const std::string &key, std::string *why = nullptr) const;

  struct EntryStatus {
    std::string key;
    std::string directory;
    /// Why the entry is not valid (as isValidEntry says); empty when it is.
    std::string problem;
  };
  /// Every entry in the cache directory (a directory named by a key; not
  /// the temporaries of writers), sorted by key, each checked as
  /// isValidEntry checks it. None when the directory does not exist.
  std::vector<EntryStatus> entries() const;

  /// Removes the entry of `key`, under its lock (so it waits for a compile
  /// of that key in progress); returns whether there was one. A process
  /// that already loaded the entry keeps its copy; one that is reading its
  /// files may find them gone. Lock files stay: removing one that another
  /// process holds would let two writers in.
  bool remove(const std::string &key);

  /// The file in every entry listing "<sha256>  <file>" per line.
  static constexpr const char *kChecksumsFile = "CHECKSUMS";

private:
  std::string entryPath(const std::string &key) const;
  std::string root;
  bool always = false;
  std::string compilerVersion;
};

} // namespace moegen::rt

#endif // MOEGEN_RUNTIME_JITCACHE_H
