//===- AtomicFile.cpp - Publish a file whole or not at all ----------------===//

#include "support/AtomicFile.h"
#include "support/Quote.h"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <functional>
#include <system_error>
#include <thread>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace moegen::support {

namespace {

std::string errnoMessage(int errorNumber) {
  return std::error_code(errorNumber, std::generic_category()).message();
}

/// Quoted like the .npy reader quotes header text (all non-ASCII escaped).
std::string quoteTemporary(const std::string &path) {
  return quote(path, QuoteStyle{std::string::npos, false, true});
}

} // namespace

// Concurrent writers must not pick the same name, using only the standard
// library (std::random_device may be unavailable).
std::string temporarySuffix(unsigned attempt) {
  static std::atomic<uint64_t> counter{0};
  uint64_t mix = static_cast<uint64_t>(
      std::chrono::steady_clock::now().time_since_epoch().count());
  mix ^= std::hash<std::thread::id>()(std::this_thread::get_id()) *
         0x9E3779B97F4A7C15ull;
  mix ^= (counter.fetch_add(1) + attempt) * 0xBF58476D1CE4E5B9ull;
  mix ^= reinterpret_cast<uintptr_t>(&counter) >> 4;
  static constexpr char kHex[] = "0123456789abcdef";
  std::string suffix = ".tmp-";
  for (int i = 0; i < 16; ++i, mix >>= 4)
    suffix += kHex[mix & 0xF];
  return suffix;
}

bool writeFileAtomically(const std::string &path, std::string_view text,
                         std::string &error) {
  return writeFileAtomically(
      path,
      std::span<const std::byte>(
          reinterpret_cast<const std::byte *>(text.data()), text.size()),
      error);
}

namespace {

/// Writes all of `bytes` to `fd`; returns 0 or the errno of the failure.
int writeAll(int fd, std::span<const std::byte> bytes) {
  const std::byte *data = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    ssize_t written = ::write(fd, data, left);
    if (written < 0) {
      if (errno == EINTR)
        continue;
      return errno;
    }
    if (written == 0)
      return EIO;
    data += written;
    left -= static_cast<size_t>(written);
  }
  return 0;
}

/// True for a path inside /proc, whose links (/proc/self/fd/1) name open
/// files rather than paths ("pipe:[1234]").
bool isInProc(const std::filesystem::path &path) {
  std::error_code ec;
  std::filesystem::path parent = std::filesystem::canonical(
      path.has_parent_path() ? path.parent_path() : ".", ec);
  if (ec)
    return false;
  std::string text = parent.string();
  return text == "/proc" || text.rfind("/proc/", 0) == 0;
}

/// Writes into an existing file that is not ours to replace (a device, a
/// FIFO, the file behind /dev/stdout), as Unix tools do.
bool writeThrough(const std::string &path, std::span<const std::byte> bytes,
                  bool regular, std::string &error) {
  // Behind /dev/stdout a regular file is the shell's: appending keeps what
  // ">>" (or this process) put there, and ">" left it empty anyway.
  int fd = ::open(path.c_str(),
                  O_WRONLY | O_NOCTTY | O_CLOEXEC | (regular ? O_APPEND : 0));
  int writeErrno = fd < 0 ? errno : writeAll(fd, bytes);
  if (fd >= 0 && ::close(fd) != 0 && !writeErrno)
    writeErrno = errno;
  if (writeErrno) {
    error = path + ": cannot write: " + errnoMessage(writeErrno);
    return false;
  }
  return true;
}

} // namespace

bool writeFileAtomically(const std::string &path,
                         std::span<const std::byte> bytes, std::string &error) {
  namespace fs = std::filesystem;
  auto fail = [&](const std::string &message) {
    error = path + ": " + message;
    return false;
  };
  if (!fs::path(path).has_filename())
    return fail("cannot write: the path names a directory, not a file");

  // Replace what a symlink points to, never the link itself: the temporary
  // goes beside the final target.
  fs::path target(path);
  struct stat status {};
  bool exists = false;
  constexpr int kMaxLinks = 40;
  for (int hop = 0;; ++hop) {
    if (::lstat(target.c_str(), &status) != 0) {
      if (errno != ENOENT && errno != ENOTDIR)
        return fail("cannot write: " + errnoMessage(errno));
      break; // a new file (or a dangling link's target)
    }
    exists = true;
    if (!S_ISLNK(status.st_mode))
      break;
    if (hop == kMaxLinks)
      return fail("cannot write: " + errnoMessage(ELOOP));
    if (isInProc(target)) {
      struct stat opened {};
      if (::stat(path.c_str(), &opened) != 0)
        return fail("cannot write: " + errnoMessage(errno));
      return writeThrough(path, bytes, S_ISREG(opened.st_mode), error);
    }
    std::error_code ec;
    fs::path link = fs::read_symlink(target, ec);
    if (ec)
      return fail("cannot write: " + ec.message());
    target = link.is_absolute() ? link : target.parent_path() / link;
    exists = false;
  }
  if (exists && (S_ISCHR(status.st_mode) || S_ISFIFO(status.st_mode)))
    return writeThrough(path, bytes, /*regular=*/false, error);
  if (exists && (S_ISBLK(status.st_mode) || S_ISSOCK(status.st_mode)))
    return fail("cannot write: not a regular file, character device or FIFO");

  fs::path directory = target.parent_path();
  // The leading dot hides the temporary from globs such as "*.npy";
  // appended rather than "." + ..., which GCC 12 misreads (-Wrestrict).
  std::string stem = ".";
  stem += target.filename().string();
  std::string temporary;
  int fd = -1;
  constexpr unsigned kAttempts = 64;
  for (unsigned attempt = 0; attempt < kAttempts && fd < 0; ++attempt) {
    temporary = (directory / (stem + temporarySuffix(attempt))).string();
    // O_EXCL: never clobber another writer's temporary.
    fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                0666);
    if (fd < 0 && errno != EEXIST)
      return fail("cannot create temporary file " + quoteTemporary(temporary) +
                  ": " + errnoMessage(errno));
  }
  if (fd < 0)
    return fail("cannot create a temporary file beside it");

  // The replacement keeps the permissions of the file it replaces. The
  // file reaches the disk before the rename, so that a crash leaves the
  // old file or the new one, never an empty one.
  int writeErrno = 0;
  if (exists && S_ISREG(status.st_mode) &&
      ::fchmod(fd, status.st_mode & 07777) != 0)
    writeErrno = errno;
  if (!writeErrno)
    writeErrno = writeAll(fd, bytes);
  if (!writeErrno && ::fsync(fd) != 0)
    writeErrno = errno;
  if (::close(fd) != 0 && !writeErrno)
    writeErrno = errno;
  if (writeErrno) {
    ::unlink(temporary.c_str());
    return fail("cannot write temporary file " + quoteTemporary(temporary) +
                ": " + errnoMessage(writeErrno));
  }
  if (::rename(temporary.c_str(), target.c_str()) != 0) {
    int renameErrno = errno;
    ::unlink(temporary.c_str());
    return fail("cannot rename temporary file into place: " +
                errnoMessage(renameErrno));
  }
  // Best effort: the rename itself reaches the disk with the directory.
  int dirFd = ::open(directory.empty() ? "." : directory.c_str(),
                     O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirFd >= 0) {
    ::fsync(dirFd);
    ::close(dirFd);
  }
  return true;
}

StagingDirectory::StagingDirectory(const std::string &dir,
                                   std::string_view prefix,
                                   std::string &error)
    : target(dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (unsigned attempt = 0; attempt < 64; ++attempt) {
    // ".PREFIX.tmp-XXXX": hidden, and unique across threads and processes.
    // Appended piece by piece: GCC 12 warns (-Wrestrict) on a + chain here.
    std::string name = ".";
    name.append(prefix);
    name.append(temporarySuffix(attempt));
    std::string candidate = (fs::path(dir) / name).string();
    if (fs::create_directory(candidate, ec)) {
      staging = candidate;
      return;
    }
    if (ec)
      break;
  }
  error = ec ? ec.message() : "no free staging name";
}

StagingDirectory::~StagingDirectory() {
  if (staging.empty())
    return;
  std::error_code ignored;
  std::filesystem::remove_all(staging, ignored);
}

std::string StagingDirectory::pathFor(std::string_view name) const {
  return (std::filesystem::path(staging) / name).string();
}

bool StagingDirectory::publish(std::span<const std::string> names,
                               std::string &failedName, std::string &error) {
  namespace fs = std::filesystem;
  for (const std::string &name : names) {
    fs::path destination = fs::path(target) / name;
    struct stat status {};
    if (::lstat(destination.c_str(), &status) == 0 &&
        !S_ISREG(status.st_mode) && !S_ISDIR(status.st_mode)) {
      // A symlink, device or FIFO is not ours to rename over: its target
      // is replaced, or it is written through, as by writeFileAtomically.
      std::ifstream in(pathFor(name), std::ios::binary);
      std::string bytes((std::istreambuf_iterator<char>(in)),
                        std::istreambuf_iterator<char>());
      std::string message;
      if (!in.good() && !in.eof()) {
        failedName = name;
        error = "cannot read the staged file";
        return false;
      }
      if (!writeFileAtomically(destination.string(), bytes, message)) {
        failedName = name;
        error = message.substr(
            std::min(message.size(), destination.string().size() + 2));
        return false;
      }
      continue;
    }
    std::error_code ec;
    fs::rename(pathFor(name), destination, ec);
    if (ec) {
      failedName = name;
      error = ec.message();
      return false;
    }
  }
  return true;
}

} // namespace moegen::support
