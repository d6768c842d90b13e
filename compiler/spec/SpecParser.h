//===- SpecParser.h - Routing specs from YAML -------------------*- C++ -*-===//
//
// Parses a routing spec (docs/spec-language.md) with LLVM's YAML parser.
// Every error is one line, "FILE:LINE:COL: error: MESSAGE", whose message
// names the key and what is allowed.
//
//===----------------------------------------------------------------------===//

#ifndef MOEGEN_COMPILER_SPEC_SPECPARSER_H
#define MOEGEN_COMPILER_SPEC_SPECPARSER_H

#include "compiler/spec/RoutingSpec.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"

#include <optional>
#include <string>

namespace moegen {

/// Parses `text` (named `bufferName` in diagnostics). On failure returns
/// nullopt and sets `error` to a single diagnostic line.
std::optional<RoutingSpec> parseRoutingSpec(llvm::StringRef text,
                                            llvm::StringRef bufferName,
                                            std::string &error);

/// Reads and parses the file at `path`; a file that cannot be read is an
/// error of the same one-line form.
std::optional<RoutingSpec> parseRoutingSpecFile(llvm::StringRef path,
                                                std::string &error);

/// The spec keys, in the order docs and diagnostics list them.
llvm::ArrayRef<llvm::StringLiteral> routingSpecKeys();

/// The spec in canonical YAML: every key, defaults made explicit, fixed
/// order. Equal specs print equally (a basis for cache keys).
std::string printRoutingSpec(const RoutingSpec &spec);

/// 16 hex digits of FNV-1a over printRoutingSpec(spec): the spec's identity
/// in manifests, kernel caches and tuning databases.
std::string specHash(const RoutingSpec &spec);

} // namespace moegen

#endif // MOEGEN_COMPILER_SPEC_SPECPARSER_H
