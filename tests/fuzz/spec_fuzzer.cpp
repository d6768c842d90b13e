//===- spec_fuzzer.cpp - libFuzzer target for the routing spec parser -----===//
//
// Feeds arbitrary text to parseRoutingSpec. An error must be one line
// "NAME:LINE:COL: error: MESSAGE"; a spec that parses must print in
// canonical form, and the canonical form must parse back to the same print.
// LLVM's YAML parser lives in the uninstrumented libLLVM, so coverage
// guidance sees only moegen's side of the parser.
//
//===----------------------------------------------------------------------===//

#include "compiler/spec/SpecParser.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

[[noreturn]] void broken(const char *what, const std::string &detail) {
  std::fprintf(stderr, "spec_fuzzer: %s: %s\n", what, detail.c_str());
  std::abort();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  llvm::StringRef text(reinterpret_cast<const char *>(data), size);
  const std::string name = "fuzz.yaml";
  std::string error;
  std::optional<moegen::RoutingSpec> spec =
      moegen::parseRoutingSpec(text, name, error);
  if (!spec) {
    if (error.empty())
      broken("failure without a message", name);
    if (error.find('\n') != std::string::npos)
      broken("message is not one line", error);
    if (error.rfind(name + ":", 0) != 0)
      broken("message does not start with the name", error);
    return 0;
  }
  std::string canonical = moegen::printRoutingSpec(*spec);
  std::string againError;
  std::optional<moegen::RoutingSpec> again =
      moegen::parseRoutingSpec(canonical, name, againError);
  if (!again)
    broken("canonical form does not parse", againError + "\n" + canonical);
  if (moegen::printRoutingSpec(*again) != canonical)
    broken("canonical form is not a fixed point", canonical);
  return 0;
}
