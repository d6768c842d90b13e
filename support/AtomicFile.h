//===- AtomicFile.h - Publish a file whole or not at all --------*- C++ -*-===//
//
// Outputs of moegen (IR, .npy tensors, checksums) are written to a
// temporary file beside the target and renamed over it, so that a reader
// sees the old file or the new one, never a partial file, and a failed
// write leaves neither a temporary nor a changed target behind. The
// temporary lives in the target's directory so that the rename stays
// within one file system (and is atomic); its leading dot hides it from
// globs such as "*.npy". Plain C++20; no LLVM.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_SUPPORT_ATOMICFILE_H
#define MOEGEN_SUPPORT_ATOMICFILE_H

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

namespace moegen::support {

/// Writes `bytes` to `path` through ".NAME.tmp-XXXXXXXXXXXXXXXX" beside it
/// and a rename. On failure returns false and sets `error` to one line,
/// "PATH: MESSAGE", with PATH as given.
bool writeFileAtomically(const std::string &path,
                         std::span<const std::byte> bytes, std::string &error);
bool writeFileAtomically(const std::string &path, std::string_view text,
                         std::string &error);

/// A random suffix ".tmp-" + 16 hex digits for temporary names; `attempt`
/// changes it when a name is taken.
std::string temporarySuffix(unsigned attempt);

} // namespace moegen::support

#endif // MOEGEN_SUPPORT_ATOMICFILE_H
