//===- Manifest.cpp - Load the manifest.json of a kernel directory --------===//

#include "runtime/Manifest.h"
#include "runtime/Error.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <vector>

namespace moegen::rt {

namespace fs = std::filesystem;

namespace {
constexpr size_t kMaxManifestBytes = size_t(16) << 20;
} // namespace

Manifest parseManifest(std::string_view jsonText, const std::string &path,
                       const ManifestOptions &options) {
  ManifestOptions resolved = options;
  if (resolved.expectedCompilerVersion.empty())
    resolved.expectedCompilerVersion = runtimeVersion();
  try {
    return abi::parseManifest(jsonText, path, resolved);
  } catch (const abi::ManifestError &error) {
    throw Error(Error::Kind::Manifest, error.what());
  }
}

Manifest loadManifest(const std::string &path, const ManifestOptions &options) {
  std::error_code ec;
  std::string file = path;
  if (fs::is_directory(path, ec))
    file = (fs::path(path) / "manifest.json").string();
  // Opening a FIFO would block until someone writes it; compile writes
  // manifests as regular files.
  if (fs::file_status status = fs::status(file, ec);
      fs::exists(status) && !fs::is_regular_file(status))
    throw Error(Error::Kind::Manifest,
                file + ": cannot read the manifest: not a regular file");
  std::ifstream in(file, std::ios::binary);
  if (!in)
    throw Error(Error::Kind::Manifest,
                file + ": cannot read the manifest (" +
                    (fs::exists(file, ec) ? "not readable" : "no such file") +
                    "; is this a `moegen compile --emit=cubin -o DIR` "
                    "output directory?)");
  // A manifest is a few KiB; reading at most one byte past the cap keeps a
  // corrupt huge file (or one that grows) from taking the memory.
  std::string text;
  std::vector<char> chunk(1 << 16);
  while (in && text.size() <= kMaxManifestBytes) {
    size_t room = kMaxManifestBytes + 1 - text.size();
    in.read(chunk.data(), std::streamsize(std::min(chunk.size(), room)));
    text.append(chunk.data(), size_t(in.gcount()));
  }
  if (in.bad())
    throw Error(Error::Kind::Manifest, file + ": cannot read the manifest");
  if (text.size() > kMaxManifestBytes)
    throw Error(Error::Kind::Manifest,
                file + ": cannot read the manifest: it is larger than " +
                    std::to_string(kMaxManifestBytes >> 20) +
                    " MiB, the limit for manifests");
  return rt::parseManifest(text, file, options);
}

} // namespace moegen::rt
