//===- JitCache.cpp - On-disk cache of compiled kernel directories --------===//
//
// Layout of the cache directory:
//
//   <key>/                 a published entry: manifest.json, binaries,
//                          CHECKSUMS; never modified once published
//   <key>.lock             flock'ed by whoever compiles or replaces <key>
//   .tmp-<key>-XXXXXX/     an entry being written (removed on failure, and
//                          by the next lock holder if its writer died)
//   .trash-<key>-XXXXXX/   a corrupt or replaced entry being removed
//
//===----------------------------------------------------------------------===//

#include "runtime/JitCache.h"
#include "runtime/Error.h"
#include "runtime/Manifest.h"
#include "runtime/Sha256.h"
#include "support/AtomicFile.h"
#include "support/Quote.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

namespace moegen::rt {

namespace {

namespace fs = std::filesystem;

/// A path inside a message: quoted and escaped, kept whole.
std::string quoteInMessage(const std::string &path) {
  return support::quote(path, support::QuoteStyle{support::kMaxPathLength});
}

/// The largest CHECKSUMS file read; entries list a handful of files.
constexpr uintmax_t kMaxChecksumsBytes = uintmax_t(64) << 10;

[[noreturn]] void fail(const std::string &message) {
  throw Error(Error::Kind::Cache, message);
}

std::string errnoText(int error) { return std::strerror(error); }

const char *getenvNonEmpty(const char *name) {
  const char *value = std::getenv(name);
  return value && *value ? value : nullptr;
}

/// An exclusive flock on a lock file, released on destruction.
class FileLock {
public:
  explicit FileLock(const std::string &path) {
    fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0)
      fail("cannot open the cache lock file " + quoteInMessage(path) +
           ": " + errnoText(errno));
    while (::flock(fd, LOCK_EX) != 0) {
      if (errno == EINTR)
        continue;
      int error = errno;
      ::close(fd);
      fail("cannot lock " + quoteInMessage(path) + ": " + errnoText(error));
    }
  }
  ~FileLock() {
    ::flock(fd, LOCK_UN);
    ::close(fd);
  }
  FileLock(const FileLock &) = delete;
  FileLock &operator=(const FileLock &) = delete;

private:
  int fd = -1;
};

/// SHA-256 of a file's bytes; nullopt when it cannot be read or is not a
/// regular file (a FIFO or device in an entry would never end).
std::optional<std::string> hashFile(const fs::path &path) {
  std::error_code ec;
  if (!fs::is_regular_file(fs::status(path, ec)))
    return std::nullopt;
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return std::nullopt;
  Sha256 hash;
  std::vector<char> buffer(1 << 16);
  while (in) {
    in.read(buffer.data(), std::streamsize(buffer.size()));
    hash.update(buffer.data(), size_t(in.gcount()));
  }
  if (in.bad())
    return std::nullopt;
  return hash.finishHex();
}

void syncPath(const fs::path &path, bool directory) {
  int fd = ::open(path.c_str(),
                  (directory ? O_DIRECTORY : 0) | O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

/// Lists every regular file under `directory` (but CHECKSUMS) with its
/// SHA-256 into CHECKSUMS, after syncing each to disk.
void writeChecksums(const fs::path &directory) {
  std::vector<std::string> files;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(directory, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_regular_file())
      continue;
    std::string relative = fs::relative(it->path(), directory).generic_string();
    if (relative != JitCache::kChecksumsFile)
      files.push_back(relative);
  }
  if (ec)
    fail("cannot list " + quoteInMessage(directory.string()) + ": " + ec.message());
  std::sort(files.begin(), files.end());
  std::string text;
  for (const std::string &file : files) {
    syncPath(directory / file, false);
    std::optional<std::string> digest = hashFile(directory / file);
    if (!digest)
      fail("cannot read " + quoteInMessage((directory / file).string()));
    text += *digest + "  " + file + "\n";
  }
  // Through the support layer, which names the system's reason (a full
  // disk) and syncs the file before it appears.
  fs::path target = directory / JitCache::kChecksumsFile;
  std::string error;
  if (!support::writeFileAtomically(target.string(), text, error))
    fail("cannot write " + quoteInMessage(target.string()) + ": " +
         error.substr(std::min(error.size(), target.string().size() + 2)));
  syncPath(directory, true);
}

/// Why `directory` is not a complete entry, or empty when it is.
std::string checkEntry(const fs::path &directory,
                       const std::string &compilerVersion) {
  std::error_code ec;
  if (!fs::is_directory(directory, ec))
    return "no entry";
  fs::path checksums = directory / JitCache::kChecksumsFile;
  fs::file_status status = fs::symlink_status(checksums, ec);
  if (status.type() == fs::file_type::not_found)
    return "CHECKSUMS is missing";
  // A line per file of the entry: a few hundred bytes. The cap keeps a
  // corrupt or hostile entry from taking the memory of every reader.
  if (!fs::is_regular_file(status))
    return "CHECKSUMS is not a regular file";
  if (uintmax_t size = fs::file_size(checksums, ec);
      ec || size > kMaxChecksumsBytes)
    return "CHECKSUMS is larger than " +
           std::to_string(kMaxChecksumsBytes >> 10) + " KiB";
  std::ifstream in(checksums, std::ios::binary);
  if (!in)
    return "CHECKSUMS is missing";
  std::vector<std::string> listed;
  std::string line;
  int lineNumber = 0;
  while (std::getline(in, line)) {
    ++lineNumber;
    const std::string where = "CHECKSUMS line " + std::to_string(lineNumber);
    if (line.size() < 67 || line.compare(64, 2, "  ") != 0)
      return where + " is malformed";
    std::string digest = line.substr(0, 64), file = line.substr(66);
    if (file.empty() || file[0] == '/' || file.find("..") != std::string::npos)
      return where + " names a file outside the entry";
    fs::file_status fileStatus = fs::status(directory / file, ec);
    if (fs::exists(fileStatus) && !fs::is_regular_file(fileStatus))
      return file + " is not a regular file";
    std::optional<std::string> actual = hashFile(directory / file);
    if (!actual)
      return file + " is missing";
    if (*actual != digest)
      return file + " does not match its checksum";
    listed.push_back(file);
  }
  if (std::find(listed.begin(), listed.end(), "manifest.json") == listed.end())
    return "CHECKSUMS does not list manifest.json";
  try {
    ManifestOptions options;
    options.expectedCompilerVersion = compilerVersion;
    Manifest manifest =
        loadManifest((directory / "manifest.json").string(), options);
    for (const std::string &binary : {manifest.cubinPath, manifest.ptxPath}) {
      if (binary.empty())
        continue;
      std::string relative = fs::relative(binary, directory).generic_string();
      if (std::find(listed.begin(), listed.end(), relative) == listed.end())
        return "CHECKSUMS does not list " + relative;
    }
  } catch (const Error &e) {
    return e.what();
  }
  return {};
}

/// Renames `path` aside and removes it; a missing path is fine.
void removeEntry(const fs::path &root, const std::string &key,
                 const fs::path &path) {
  std::error_code ec;
  if (!fs::exists(path, ec))
    return;
  std::string pattern = (root / (".trash-" + key + "-XXXXXX")).string();
  std::vector<char> name(pattern.begin(), pattern.end());
  name.push_back('\0');
  if (!::mkdtemp(name.data()))
    fail("cannot create a directory in the cache " +
         quoteInMessage(root.string()) + ": " + errnoText(errno));
  fs::path trash = fs::path(name.data()) / "entry";
  if (::rename(path.c_str(), trash.c_str()) != 0)
    fail("cannot move the entry " + quoteInMessage(path.string()) +
         " aside: " + errnoText(errno));
  fs::remove_all(name.data(), ec);
}

/// Removes the temporaries and trash of dead writers of `key`. Only called
/// with <key>.lock held, when no live writer of the key has any.
void removeLeftovers(const fs::path &root, const std::string &key) {
  std::error_code ec;
  std::vector<fs::path> leftovers;
  for (auto it = fs::directory_iterator(root, ec);
       !ec && it != fs::directory_iterator(); it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (name.starts_with(".tmp-" + key + "-") ||
        name.starts_with(".trash-" + key + "-"))
      leftovers.push_back(it->path());
  }
  for (const fs::path &path : leftovers)
    fs::remove_all(path, ec);
}

void checkKey(const std::string &key) {
  bool valid = !key.empty() && key.size() <= 128 && key[0] != '-';
  for (char c : key)
    valid &= (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || c == '_' ||
             c == '-';
  if (!valid)
    fail("invalid cache key " +
         support::quote(key, support::QuoteStyle{140}) + ": 1 to 128 characters of [0-9a-z_-], not starting with '-'");
}

} // namespace

std::string cacheDirectory() {
  if (const char *dir = getenvNonEmpty("MOEGEN_CACHE_DIR"))
    return dir;
  if (const char *xdg = getenvNonEmpty("XDG_CACHE_HOME"))
    return (fs::path(xdg) / "moegen").string();
  if (const char *home = getenvNonEmpty("HOME"))
    return (fs::path(home) / ".cache" / "moegen").string();
  fail("no cache directory: set MOEGEN_CACHE_DIR (or XDG_CACHE_HOME or HOME)");
}

std::string cacheKey(std::string_view normalizedSpecText, std::string_view arch,
                     std::string_view compilerVersion,
                     std::string_view kernelConfigText) {
  Sha256 hash;
  hash.update("moegen-cache-key-v1\n");
  for (std::string_view field :
       {normalizedSpecText, arch, compilerVersion, kernelConfigText}) {
    hash.update(std::to_string(field.size()) + ":");
    hash.update(field);
    hash.update("\n");
  }
  return hash.finishHex();
}

JitCache::JitCache() : JitCache(Options{}) {}

JitCache::JitCache(Options options)
    : root(options.directory.empty() ? cacheDirectory() : options.directory),
      compilerVersion(options.compilerVersion) {
  if (options.alwaysCompile) {
    always = *options.alwaysCompile;
  } else {
    const char *value = std::getenv("MOEGEN_ALWAYS_COMPILE");
    always = value && *value && std::string_view(value) != "0";
  }
}

std::string JitCache::entryPath(const std::string &key) const {
  return (fs::path(root) / key).string();
}

bool JitCache::isValidEntry(const std::string &key, std::string *why) const {
  checkKey(key);
  std::string problem = checkEntry(entryPath(key), compilerVersion);
  if (why)
    *why = problem;
  return problem.empty();
}

std::vector<JitCache::EntryStatus> JitCache::entries() const {
  std::vector<EntryStatus> found;
  std::error_code ec;
  fs::file_status status = fs::status(root, ec);
  // A missing cache is an empty one; a file where the cache should be is
  // a mistake to report, not an empty cache.
  if (status.type() == fs::file_type::not_found)
    return found;
  if (ec)
    fail("cannot read the cache directory " + quoteInMessage(root) + ": " +
         ec.message());
  if (!fs::is_directory(status))
    fail("the cache directory " + quoteInMessage(root) +
         " is not a directory (MOEGEN_CACHE_DIR, XDG_CACHE_HOME or HOME "
         "names it)");
  for (auto it = fs::directory_iterator(root, ec);
       !ec && it != fs::directory_iterator(); it.increment(ec)) {
    std::string name = it->path().filename().string();
    // Temporaries and trash start with '.', which no key does.
    if (name.starts_with(".") || !it->is_directory())
      continue;
    try {
      checkKey(name);
    } catch (const Error &) {
      continue; // not ours
    }
    found.push_back(
        {name, it->path().string(), checkEntry(it->path(), compilerVersion)});
  }
  if (ec)
    fail("cannot list the cache directory " + quoteInMessage(root) + ": " + ec.message());
  std::sort(found.begin(), found.end(),
            [](const EntryStatus &a, const EntryStatus &b) {
              return a.key < b.key;
            });
  return found;
}

bool JitCache::remove(const std::string &key) {
  checkKey(key);
  const fs::path entry = entryPath(key);
  std::error_code ec;
  if (!fs::exists(entry, ec))
    return false;
  FileLock lock((fs::path(root) / (key + ".lock")).string());
  if (!fs::exists(entry, ec))
    return false;
  removeEntry(root, key, entry);
  removeLeftovers(root, key);
  syncPath(root, true);
  return true;
}

CacheEntry JitCache::getOrCompile(const std::string &key,
                                  const CompileFn &compile) {
  checkKey(key);
  const fs::path entry = entryPath(key);
  // Published entries never change, so a valid one needs no lock.
  if (!always && checkEntry(entry, compilerVersion).empty())
    return {entry.string(), false};

  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec || !fs::is_directory(root))
    fail("cannot create the cache directory " + quoteInMessage(root) +
         ": " + (ec ? ec.message() : "not a directory"));
  FileLock lock((fs::path(root) / (key + ".lock")).string());
  // Someone may have published it while we waited for the lock.
  if (!always && checkEntry(entry, compilerVersion).empty())
    return {entry.string(), false};
  removeLeftovers(root, key);

  std::string pattern = (fs::path(root) / (".tmp-" + key + "-XXXXXX")).string();
  std::vector<char> name(pattern.begin(), pattern.end());
  name.push_back('\0');
  if (!::mkdtemp(name.data()))
    fail("cannot create a temporary directory in the cache " +
         quoteInMessage(root) + ": " + errnoText(errno));
  const fs::path temporary(name.data());
  try {
    compile(temporary.string());
    writeChecksums(temporary);
    if (std::string why = checkEntry(temporary, compilerVersion); !why.empty())
      fail("the compile step for cache key " + key +
           " wrote an invalid entry: " + why);
  } catch (...) {
    fs::remove_all(temporary, ec);
    throw;
  }

  // A corrupt entry, or the old one under always-compile, goes first; the
  // window in which <key> is missing is covered by the lock for writers,
  // and readers that find nothing take the lock and wait.
  removeEntry(root, key, entry);
  if (::rename(temporary.c_str(), entry.c_str()) != 0) {
    int error = errno;
    // Only a writer that ignores the lock (another host on a file system
    // without flock) can get here; its entry is as good as ours.
    if ((error == EEXIST || error == ENOTEMPTY) &&
        checkEntry(entry, compilerVersion).empty()) {
      fs::remove_all(temporary, ec);
      return {entry.string(), false};
    }
    fs::remove_all(temporary, ec);
    fail("cannot publish the cache entry " +
         quoteInMessage(entry.string()) + ": " + errnoText(error));
  }
  syncPath(root, true);
  return {entry.string(), true};
}

} // namespace moegen::rt
