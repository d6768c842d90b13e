//===- manifest_fuzzer.cpp - libFuzzer target for the manifest reader -----===//
//
// Feeds arbitrary text to parseManifest. The reader promises to throw only
// ManifestError, with a one-line message naming the file; any other
// exception escapes and is reported by libFuzzer as a crash. What parses
// must survive a writeManifest round trip.
//
//===----------------------------------------------------------------------===//

#include "abi/Manifest.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

using namespace moegen::abi;

namespace {

[[noreturn]] void broken(const char *what, const std::string &detail) {
  std::fprintf(stderr, "manifest_fuzzer: %s: %s\n", what, detail.c_str());
  std::abort();
}

const std::string kPath = "fuzz/manifest.json";

void checkError(const ManifestError &error) {
  std::string_view message = error.what();
  if (message.find('\n') != std::string_view::npos)
    broken("message is not one line", std::string(message));
  if (message.rfind(kPath + ": ", 0) != 0)
    broken("message does not start with the path", std::string(message));
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string_view text(reinterpret_cast<const char *>(data), size);
  ManifestOptions options;
  // The version the seed manifests carry, so that mutants get past the check.
  options.expectedCompilerVersion = "0.1.0";
  options.checkFilesExist = false;
  Manifest manifest;
  try {
    manifest = parseManifest(text, kPath, options);
  } catch (const ManifestError &error) {
    checkError(error);
    return 0;
  }
  std::string written = writeManifest(manifest);
  try {
    (void)parseManifest(written, kPath, options);
  } catch (const ManifestError &error) {
    broken("written manifest does not parse", error.what());
  }
  return 0;
}
