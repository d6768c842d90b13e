//===- Manifest.cpp - Load the manifest.json of a kernel directory --------===//

#include "runtime/Manifest.h"
#include "runtime/Error.h"

#include <filesystem>
#include <fstream>
#include <sstream>

namespace moegen::rt {

namespace fs = std::filesystem;

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
  std::ifstream in(file, std::ios::binary);
  if (!in)
    throw Error(Error::Kind::Manifest,
                file + ": cannot read the manifest (" +
                    (fs::exists(file, ec) ? "not readable" : "no such file") +
                    "; is this a `moegen compile --emit=cubin -o DIR` "
                    "output directory?)");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad())
    throw Error(Error::Kind::Manifest, file + ": cannot read the manifest");
  return rt::parseManifest(text.str(), file, options);
}

} // namespace moegen::rt
