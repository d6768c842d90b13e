//===- AtomicFile.cpp - Publish a file whole or not at all ----------------===//

#include "support/AtomicFile.h"
#include "support/Quote.h"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <system_error>
#include <thread>

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

bool writeFileAtomically(const std::string &path,
                         std::span<const std::byte> bytes, std::string &error) {
  auto fail = [&](const std::string &message) {
    error = path + ": " + message;
    return false;
  };
  std::filesystem::path target(path);
  if (!target.has_filename())
    return fail("cannot write: the path names a directory, not a file");

  std::filesystem::path directory = target.parent_path();
  // The leading dot hides the temporary from globs such as "*.npy";
  // appended rather than "." + ..., which GCC 12 misreads (-Wrestrict).
  std::string stem = ".";
  stem += target.filename().string();
  std::string temporary;
  std::FILE *file = nullptr;
  constexpr unsigned kAttempts = 64;
  for (unsigned attempt = 0; attempt < kAttempts && !file; ++attempt) {
    temporary = (directory / (stem + temporarySuffix(attempt))).string();
    // "x": create exclusively, never clobbering another writer's temporary.
    file = std::fopen(temporary.c_str(), "wbx");
    if (!file && errno != EEXIST)
      return fail("cannot create temporary file " + quoteTemporary(temporary) +
                  ": " + errnoMessage(errno));
  }
  if (!file)
    return fail("cannot create a temporary file beside it");

  // Keep the first failure's errno: later calls may overwrite it.
  errno = 0;
  int writeErrno = 0;
  if (std::fwrite(bytes.data(), 1, bytes.size(), file) != bytes.size())
    writeErrno = errno ? errno : EIO;
  if (std::fflush(file) != 0 && !writeErrno)
    writeErrno = errno ? errno : EIO;
  if (std::fclose(file) != 0 && !writeErrno)
    writeErrno = errno ? errno : EIO;
  std::error_code ignored;
  if (writeErrno) {
    std::filesystem::remove(temporary, ignored);
    return fail("cannot write temporary file " + quoteTemporary(temporary) +
                ": " + errnoMessage(writeErrno));
  }
  std::error_code renameError;
  std::filesystem::rename(temporary, target, renameError);
  if (renameError) {
    std::filesystem::remove(temporary, ignored);
    return fail("cannot rename temporary file into place: " +
                renameError.message());
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
    std::error_code ec;
    fs::rename(pathFor(name), fs::path(target) / name, ec);
    if (ec) {
      failedName = name;
      error = ec.message();
      return false;
    }
  }
  return true;
}

} // namespace moegen::support
