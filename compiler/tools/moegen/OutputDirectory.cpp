//===- OutputDirectory.cpp - All outputs of a command or none -------------===//
//
// `moegen run --out DIR` writes several .npy files; a failure half-way must
// leave DIR as it was. Every file goes first into a private staging
// directory inside DIR (support::StagingDirectory), and only when all are
// complete are they renamed into place.
//
//===----------------------------------------------------------------------===//

#include "compiler/tools/moegen/Commands.h"

#include "support/AtomicFile.h"
#include "support/Quote.h"

#include "llvm/Support/raw_ostream.h"

#include <filesystem>


namespace moegen::tool {

namespace {

namespace fs = std::filesystem;

/// Creates `dir` and any missing parents, recording each one created so a
/// failed run can remove them again.
bool createDirectories(const fs::path &dir, std::vector<fs::path> &created,
                       std::string &error) {
  fs::path path = dir.lexically_normal();
  if (!path.has_filename())
    path = path.parent_path();
  std::vector<fs::path> missing;
  std::error_code ec;
  for (fs::path p = path; !p.empty() && !fs::exists(p, ec);
       p = p.parent_path()) {
    missing.push_back(p);
    if (p == p.parent_path())
      break;
  }
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    if (!fs::create_directory(*it, ec) && ec) {
      error = ec.message();
      return false;
    }
    created.push_back(*it);
  }
  return true;
}

} // namespace

int writeOutputs(
    const std::string &outDir,
    const std::vector<std::pair<std::string, npy::Array>> &outputs) {
  using support::quotePath;
  std::vector<fs::path> createdDirs;
  std::string error;
  auto fail = [&](const std::string &message) {
    std::error_code ignored;
    for (auto it = createdDirs.rbegin(); it != createdDirs.rend(); ++it)
      fs::remove_all(*it, ignored);
    llvm::errs() << message << "\n";
    return kExitBadInput;
  };
  if (!createDirectories(outDir, createdDirs, error))
    return fail(quotePath(outDir) +
                ": error: cannot create the output directory: " + error);

  std::error_code ec;
  for (const auto &[name, array] : outputs) {
    fs::path target = fs::path(outDir) / (name + ".npy");
    if (fs::is_directory(target, ec))
      return fail(quotePath(target.string()) +
                  ": error: cannot write the output: a directory is in "
                  "the way");
  }
  support::StagingDirectory staging(outDir, "moegen-run", error);
  if (staging.path().empty())
    return fail(quotePath(outDir) +
                ": error: cannot create a staging directory in it: " + error);
  std::vector<std::string> names;
  for (const auto &[name, array] : outputs) {
    std::string path = staging.pathFor(name + ".npy");
    if (!npy::writeNpy(path, array, error))
      return fail(quotePath(outDir) + ": error: cannot write " + name +
                  ".npy: " +
                  error.substr(std::min(error.size(), path.size() + 2)));
    names.push_back(name + ".npy");
  }
  std::string failed;
  if (!staging.publish(names, failed, error))
    return fail(quotePath(outDir) + ": error: cannot move " + failed +
                " into place: " + error);
  return kExitOk;
}

} // namespace moegen::tool
