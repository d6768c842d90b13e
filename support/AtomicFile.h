//===- AtomicFile.h - Publish a file whole or not at all --------*- C++ -*-===//
//
// Outputs of moegen (IR, .npy tensors, checksums) are written to a
// temporary file beside the target, synced, and renamed over it, so that a
// reader sees the old file or the new one, never a partial file, and a
// failed write leaves neither a temporary nor a changed target behind. The
// temporary lives in the target's directory so that the rename stays
// within one file system (and is atomic); its leading dot hides it from
// globs such as "*.npy". A symlink's target is replaced, not the link. A
// character device or FIFO (/dev/null, /dev/stdout, a pipe) is not ours to
// replace: it is written through, as Unix tools do. Plain C++20 and POSIX;
// no LLVM.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_SUPPORT_ATOMICFILE_H
#define MOEGEN_SUPPORT_ATOMICFILE_H

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace moegen::support {

/// Writes `bytes` to `path` through ".NAME.tmp-XXXXXXXXXXXXXXXX" beside it
/// (beside a symlink's final target) and a rename; a character device or
/// FIFO at `path` is written directly. On failure returns false, sets
/// `error` to one line, "PATH: MESSAGE", with PATH as given, and leaves an
/// existing file unchanged and no temporary behind.
bool writeFileAtomically(const std::string &path,
                         std::span<const std::byte> bytes, std::string &error);
bool writeFileAtomically(const std::string &path, std::string_view text,
                         std::string &error);

/// A random suffix ".tmp-" + 16 hex digits for temporary names; `attempt`
/// changes it when a name is taken.
std::string temporarySuffix(unsigned attempt);

/// Several files published together: each is written into a private,
/// hidden directory inside the target directory, then all are renamed
/// into place in the order given (so a reader that looks for the last one,
/// a manifest, finds the others), and the staging directory goes away.
/// Whatever fails, nothing half-written is left in the target directory.
/// Safe to use from several threads and processes on one directory.
class StagingDirectory {
public:
  /// Creates "DIR/.PREFIX-XXXXXXXXXXXXXXXX" (DIR must exist); on failure
  /// path() is empty and `error` holds the system's message.
  StagingDirectory(const std::string &dir, std::string_view prefix,
                   std::string &error);
  /// Removes the staging directory and what is left in it.
  ~StagingDirectory();
  StagingDirectory(const StagingDirectory &) = delete;
  StagingDirectory &operator=(const StagingDirectory &) = delete;

  const std::string &path() const { return staging; }
  /// Where to write the file `name` before publish().
  std::string pathFor(std::string_view name) const;
  /// Renames the staged files `names` into the target directory in order.
  /// On failure returns false, with `failedName` the file that could not
  /// be moved and `error` the system's message.
  bool publish(std::span<const std::string> names, std::string &failedName,
               std::string &error);

private:
  std::string target;
  std::string staging;
};

} // namespace moegen::support

#endif // MOEGEN_SUPPORT_ATOMICFILE_H
