//===- Manifest.h - Load the manifest.json of a kernel directory -*- C++ -*-===//
//
// The manifest's types, rules and JSON live in abi/Manifest.h, shared with
// the compiler that writes it; the runtime reads it from disk and reports a
// bad one as Error(Kind::Manifest), one line naming the file and the key:
//
//   out/manifest.json: kernels[1].params[3].dtype: unknown dtype 'f64'
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_RUNTIME_MANIFEST_H
#define MOEGEN_RUNTIME_MANIFEST_H

#include "abi/KernelAbi.h"
#include "abi/Manifest.h"

#include <string>
#include <string_view>

namespace moegen::rt {

using abi::Access;
using abi::Arch;
using abi::byteSize;
using abi::Dim;
using abi::DType;
using abi::EntryKind;
using abi::Kernel;
using abi::kKernelAbiVersion;
using abi::kManifestFormat;
using abi::LaunchRule;
using abi::Manifest;
using abi::ManifestOptions;
using abi::Param;
using abi::ParamKind;
using abi::parseArch;
using abi::parseDType;
using abi::parseEntryKind;
using abi::toString;

/// Parses and validates the text of a manifest. `path` names it in messages
/// and locates the binaries; an empty options.expectedCompilerVersion means
/// runtimeVersion(). Throws Error(Kind::Manifest).
Manifest parseManifest(std::string_view jsonText, const std::string &path,
                       const ManifestOptions &options = {});

/// Reads DIR/manifest.json (or the file itself when `path` names a file)
/// and parses it; a manifest is a regular file of at most 16 MiB (read no
/// further). Throws Error(Kind::Manifest).
Manifest loadManifest(const std::string &path,
                      const ManifestOptions &options = {});

} // namespace moegen::rt

#endif // MOEGEN_RUNTIME_MANIFEST_H
