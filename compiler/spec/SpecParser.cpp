//===- SpecParser.cpp - Routing specs from YAML ---------------------------===//
//
// Built on LLVM's YAML node API (llvm/Support/YAMLParser.h), the layer that
// YAML I/O (YAMLTraits.h) itself stands on. YAML I/O reports unknown keys and
// type errors with fixed messages, and cross-key rules at the mapping rather
// than at the offending key; walking the nodes ourselves lets every error
// name its key, what is allowed, and the exact line and column. No new
// dependency either way.
//
//===----------------------------------------------------------------------===//

#include "compiler/spec/SpecParser.h"
#include "compiler/spec/Program.h"
#include "support/Numbers.h"
#include "support/Quote.h"

#include "llvm/ADT/SmallString.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/ErrorHandling.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/YAMLParser.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>

using namespace llvm;

namespace moegen {

namespace {

constexpr StringLiteral kKeys[] = {
    "name",      "num_experts", "top_k",          "scoring",
    "selection", "score_bias",  "groups",         "topk_groups",
    "group_score", "normalize", "scaling_factor", "replay",
    "dispatch",  "capture",     "logits_dtype",   "permute",
    "hidden_dtype", "hidden_size", "normalize_epsilon", "temperature",
    "logit_softcap", "shared_expert_gate", "program"};

/// The keys a spec with a program still takes: the program states the rest.
constexpr StringLiteral kProgramKeys[] = {"name", "num_experts", "logits_dtype",
                                          "hidden_dtype", "hidden_size",
                                          "program"};

/// What each key allows, for messages; built from the constants and the
/// enum spellings that the rules themselves use, so the two cannot drift.
std::string allowedValues(StringRef key) {
  auto range = [](int64_t lo, const Twine &hi) {
    return ("an integer in [" + Twine(lo) + ", " + hi + "]").str();
  };
  auto oneOf = [](auto... values) {
    std::string joined;
    ((joined += (joined.empty() ? "" : ", ") + std::string(toString(values))),
     ...);
    return "one of " + joined;
  };
  if (key == "name")
    return "an identifier";
  if (key == "num_experts")
    return range(kMinExperts, Twine(kMaxExperts));
  if (key == "top_k")
    return range(1, "min(" + Twine(kMaxTopK) + ", num_experts)");
  if (key == "scoring")
    return oneOf(Scoring::Softmax, Scoring::Sigmoid, Scoring::SqrtSoftplus);
  if (key == "selection")
    return oneOf(Selection::TopK, Selection::Hash);
  if (key == "groups")
    return "an integer dividing num_experts";
  if (key == "topk_groups")
    return range(1, "groups");
  if (key == "group_score")
    return oneOf(GroupScore::Top2Sum, GroupScore::Max);
  if (key == "scaling_factor")
    return "a finite number > 0";
  if (key == "logits_dtype" || key == "hidden_dtype")
    return oneOf(LogitsDType::F32, LogitsDType::BF16, LogitsDType::F16);
  if (key == "hidden_size")
    return range(1, Twine(kMaxHiddenSize));
  if (key == "normalize_epsilon" || key == "logit_softcap")
    return "0 or a normal f32 number";
  if (key == "temperature")
    return "a normal f32 number > 0";
  if (key == "program")
    return "a gating program, as a literal block scalar (program: |)";
  return "true or false";
}

class SpecParser {
public:
  SpecParser(StringRef text, StringRef bufferName, std::string &error)
      : text(text), bufferName(bufferName), error(error) {
    // The YAML scanner reports syntax errors through the SourceMgr; keep the
    // first one, as a single line.
    sourceMgr.setDiagHandler(
        [](const SMDiagnostic &diag, void *context) {
          auto *self = static_cast<SpecParser *>(context);
          self->setError(diag.getLineNo(), diag.getColumnNo() + 1,
                         diag.getMessage());
        },
        this);
  }

  std::optional<RoutingSpec> parse();

private:
  // Diagnostics.
  void setError(int line, int column, const Twine &message) {
    if (!error.empty())
      return;
    raw_string_ostream os(error);
    os << support::quotePath(bufferName.str()) << ":" << line << ":" << column
       << ": error: " << message;
  }
  bool fail(SMLoc loc, const Twine &message) {
    if (loc.isValid()) {
      auto [line, column] = sourceMgr.getLineAndColumn(loc);
      setError(line, column, message);
    } else {
      setError(1, 1, message);
    }
    return false;
  }
  bool fail(yaml::Node *node, const Twine &message) {
    return fail(node->getSourceRange().Start, message);
  }
  bool failed() const { return !error.empty(); }
  /// A number longer than any sensible literal is not converted at all.
  bool failTooLong(StringRef key, yaml::Node *node, StringRef allowed,
                   StringRef value) {
    return fail(node, "'" + key + "' must be " + allowed + ", got a value of " +
                          Twine(value.size()) +
                          " characters (numbers have at most " +
                          Twine(support::kMaxNumberLength) + ")");
  }

  // Value readers. Each names its key in the message and what is allowed.
  bool readScalar(StringRef key, yaml::Node *node, StringRef expected,
                  SmallVectorImpl<char> &storage, StringRef &value);
  bool readInteger(StringRef key, yaml::Node *node, StringRef allowed,
                   int64_t &out);
  bool readNumber(StringRef key, yaml::Node *node, StringRef allowed,
                  double &out);
  bool readBool(StringRef key, yaml::Node *node, bool &out);
  template <typename Enum>
  bool readEnum(StringRef key, yaml::Node *node,
                std::optional<Enum> (*parseFn)(std::string_view), Enum &out);
  bool readKey(StringRef key, yaml::Node *value, RoutingSpec &spec);
  bool readProgram(yaml::Node *value, RoutingSpec &spec);
  /// Where the program's text starts in the file, for its locations.
  program::Location programOrigin();

  StringRef text;
  StringRef bufferName;
  std::string &error;
  SourceMgr sourceMgr;
  SMLoc currentKeyLoc;        // the key whose value is being read
  StringMap<SMLoc> keyLocs;   // where each given key starts
  StringMap<SMLoc> valueLocs; // where each given key's value starts
  SMLoc programLoc;           // the program's block indicator, '|'
  std::optional<size_t> programIndent; // its explicit indentation, if any

};

bool SpecParser::readProgram(yaml::Node *value, RoutingSpec &spec) {
  SmallString<64> storage;
  StringRef program;
  if (!readScalar("program", value, allowedValues("program"), storage, program))
    return false;
  // Plain and quoted scalars fold their lines; a program's lines are its
  // statements.
  auto *block = dyn_cast<yaml::BlockScalarNode>(value);
  // The indicator follows the key's ':' on the key's line ('>' folds).
  const char *indicator = nullptr;
  if (block) {
    StringRef rest(currentKeyLoc.getPointer(),
                   text.end() - currentKeyLoc.getPointer());
    rest = rest.take_until([](char c) { return c == '\n'; });
    size_t colon = rest.find(':');
    if (colon != StringRef::npos) {
      StringRef after = rest.drop_front(colon + 1).ltrim(" \t");
      if (!after.empty())
        indicator = after.data();
    }
  }
  if (!block || !indicator || *indicator != '|')
    return fail(currentKeyLoc, "'program' must be a literal block scalar: "
                               "'program: |', then the program's lines, "
                               "indented");
  programLoc = SMLoc::getFromPointer(indicator);
  // An explicit indentation indicator ('|2') fixes the block's indentation.
  programIndent.reset();
  for (const char *c = indicator + 1; c < text.end() && *c != '\n'; ++c) {
    if (*c >= '1' && *c <= '9') {
      programIndent = *c - '0';
      break;
    }
    if (*c != '+' && *c != '-')
      break;
  }
  if (program.trim().empty())
    return fail(currentKeyLoc, "'program' is empty: it needs at least a "
                               "route entry, e.g. 'route(logits) -> (ids, "
                               "weights):'");
  // Trailing blanks mean nothing in a program: dropped, so that equal
  // programs print (and hash) equally.
  SmallVector<StringRef> lines;
  program.rtrim("\n").split(lines, '\n');
  spec.program.clear();
  for (StringRef line : lines)
    spec.program += line.rtrim(" \t\r").str() + "\n";
  return true;
}

program::Location SpecParser::programOrigin() {
  // Program line l is file line (indicator line + l); its columns are
  // shifted by the block's indentation, that of its first non-blank line.
  unsigned indicatorLine = sourceMgr.getLineAndColumn(programLoc).first;
  SmallVector<StringRef> lines;
  text.split(lines, '\n');
  size_t indent = programIndent.value_or(0);
  for (size_t i = indicatorLine; !programIndent && i < lines.size(); ++i)
    if (!lines[i].trim().empty()) {
      indent = lines[i].size() - lines[i].ltrim(' ').size();
      break;
    }
  return {static_cast<int>(indicatorLine), static_cast<int>(indent)};
}

bool SpecParser::readScalar(StringRef key, yaml::Node *node,
                            StringRef expected, SmallVectorImpl<char> &storage,
                            StringRef &value) {
  // Empty and non-scalar values have no useful position of their own (an
  // empty value "starts" at the next token): point at their key.
  if (isa<yaml::NullNode>(node))
    return fail(currentKeyLoc, "'" + key + "' needs a value: " + expected);
  // Alias nodes carry no usable source range: point at their key.
  if (isa<yaml::AliasNode>(node))
    return fail(currentKeyLoc,
                "'" + key + "': YAML aliases are not supported in specs");
  if (!node->getRawTag().empty() || !node->getAnchor().empty())
    return fail(currentKeyLoc,
                "'" + key + "': YAML anchors and tags are not supported in specs");
  if (auto *block = dyn_cast<yaml::BlockScalarNode>(node)) {
    value = block->getValue();
    return true;
  }
  auto *scalar = dyn_cast<yaml::ScalarNode>(node);
  if (!scalar) {
    StringRef kind = isa<yaml::SequenceNode>(node)  ? "a sequence"
                     : isa<yaml::MappingNode>(node) ? "a mapping"
                                                    : "a non-scalar";
    return fail(currentKeyLoc,
                "'" + key + "' must be " + expected + ", got " + kind);
  }
  value = scalar->getValue(storage);
  return true;
}

bool SpecParser::readInteger(StringRef key, yaml::Node *node,
                             StringRef allowed, int64_t &out) {
  SmallString<32> storage;
  StringRef value;
  if (!readScalar(key, node, allowed, storage, value))
    return false;
  if (value.size() > support::kMaxNumberLength)
    return failTooLong(key, node, allowed, value);
  // Decimal only: "0x10" or "1e3" for an expert count is more likely a typo
  // than intent.
  std::optional<int64_t> parsed = support::parseDecimalInteger(value);
  if (!parsed)
    return fail(node, "'" + key + "' must be " + allowed + ", got '" +
                          quoteForDiagnostic(value) + "'");
  out = *parsed;
  return true;
}

bool SpecParser::readNumber(StringRef key, yaml::Node *node, StringRef allowed,
                            double &out) {
  SmallString<32> storage;
  StringRef value;
  if (!readScalar(key, node, allowed, storage, value))
    return false;
  if (value.size() > support::kMaxNumberLength)
    return failTooLong(key, node, allowed, value);
  // "inf" and "nan" read as what they say, for the finiteness rule in
  // validateRoutingSpec to reject with the rule's own message.
  if (value == "inf" || value == "+inf" || value == "-inf" || value == "nan") {
    out = value == "nan"    ? std::numeric_limits<double>::quiet_NaN()
          : value == "-inf" ? -std::numeric_limits<double>::infinity()
                            : std::numeric_limits<double>::infinity();
    return true;
  }
  if (!support::isDecimalNumber(value))
    return fail(node, "'" + key + "' must be " + allowed + ", got '" +
                          quoteForDiagnostic(value) + "'");
  // The grammar and the length cap hold, so strtod reads all of it (no
  // locale is set, so '.' is the decimal point); out-of-range values come
  // back as inf or a tiny value for the range rule to reject.
  std::string literal = value.str();
  out = std::strtod(literal.c_str(), nullptr);
  return true;
}

bool SpecParser::readBool(StringRef key, yaml::Node *node, bool &out) {
  SmallString<16> storage;
  StringRef value;
  if (!readScalar(key, node, "true or false", storage, value))
    return false;
  // YAML 1.2 core schema only; YAML 1.1's yes/no/on/off are ambiguous.
  if (value == "true" || value == "True" || value == "TRUE") {
    out = true;
    return true;
  }
  if (value == "false" || value == "False" || value == "FALSE") {
    out = false;
    return true;
  }
  return fail(node, "'" + key + "' must be true or false, got '" +
                        quoteForDiagnostic(value) + "'");
}

template <typename Enum>
bool SpecParser::readEnum(StringRef key, yaml::Node *node,
                          std::optional<Enum> (*parseFn)(std::string_view),
                          Enum &out) {
  SmallString<32> storage;
  StringRef value;
  std::string allowed = allowedValues(key);
  if (!readScalar(key, node, allowed, storage, value))
    return false;
  std::optional<Enum> parsed = parseFn(std::string_view(value));
  if (!parsed)
    return fail(node, "'" + key + "' must be " + allowed + ", got '" +
                          quoteForDiagnostic(value) + "'");
  out = *parsed;
  return true;
}

bool SpecParser::readKey(StringRef key, yaml::Node *value, RoutingSpec &spec) {
  if (key == "name") {
    SmallString<64> storage;
    StringRef name;
    if (!readScalar(key, value, allowedValues(key), storage, name))
      return false;
    spec.name = name.str();
    return true;
  }
  if (key == "num_experts")
    return readInteger(key, value, allowedValues(key), spec.numExperts);
  if (key == "top_k")
    return readInteger(key, value, allowedValues(key), spec.topK);
  if (key == "scoring")
    return readEnum(key, value, &parseScoring, spec.scoring);
  if (key == "selection")
    return readEnum(key, value, &parseSelection, spec.selection);
  if (key == "score_bias")
    return readBool(key, value, spec.scoreBias);
  if (key == "groups")
    return readInteger(key, value, allowedValues(key), spec.groups);
  if (key == "topk_groups")
    return readInteger(key, value, allowedValues(key), spec.topkGroups);
  if (key == "group_score")
    return readEnum(key, value, &parseGroupScore, spec.groupScore);
  if (key == "normalize")
    return readBool(key, value, spec.normalize);
  if (key == "scaling_factor")
    return readNumber(key, value, allowedValues(key), spec.scalingFactor);
  if (key == "replay")
    return readBool(key, value, spec.replay);
  if (key == "dispatch")
    return readBool(key, value, spec.dispatch);
  if (key == "capture")
    return readBool(key, value, spec.capture);
  if (key == "logits_dtype")
    return readEnum(key, value, &parseLogitsDType, spec.logitsDType);
  if (key == "permute")
    return readBool(key, value, spec.permute);
  if (key == "hidden_dtype")
    return readEnum(key, value, &parseLogitsDType, spec.hiddenDType);
  if (key == "hidden_size")
    return readInteger(key, value, allowedValues(key), spec.hiddenSize);
  if (key == "normalize_epsilon")
    return readNumber(key, value, allowedValues(key), spec.normalizeEpsilon);
  if (key == "temperature")
    return readNumber(key, value, allowedValues(key), spec.temperature);
  if (key == "logit_softcap")
    return readNumber(key, value, allowedValues(key), spec.logitSoftcap);
  if (key == "shared_expert_gate")
    return readBool(key, value, spec.sharedGate);
  if (key == "program")
    return readProgram(value, spec);
  llvm_unreachable("keys are checked against kKeys before readKey");
}

std::string joinedKeys() {
  std::string joined;
  for (StringRef key : kKeys) {
    if (!joined.empty())
      joined += ", ";
    joined += key;
  }
  return joined;
}

std::optional<RoutingSpec> SpecParser::parse() {
  auto buffer = MemoryBuffer::getMemBuffer(text, bufferName,
                                           /*RequiresNullTerminator=*/false);
  yaml::Stream stream(buffer->getMemBufferRef(), sourceMgr,
                      /*ShowColors=*/false);
  auto document = stream.begin();
  if (failed())
    return std::nullopt;
  yaml::Node *root = document == stream.end() ? nullptr : document->getRoot();
  if (failed())
    return std::nullopt;
  if (!root || isa<yaml::NullNode>(root)) {
    fail(SMLoc(), "empty spec: expected a mapping with at least name, "
                  "num_experts, top_k and scoring");
    return std::nullopt;
  }
  auto *mapping = dyn_cast<yaml::MappingNode>(root);
  if (!mapping) {
    fail(root, "a spec must be a YAML mapping of keys (" + joinedKeys() + ")");
    return std::nullopt;
  }

  // Taken now: advancing the stream past this document frees its nodes.
  SMLoc mappingLoc = mapping->getSourceRange().Start;
  // Anchors and tags change nothing a spec can say; rejecting them keeps a
  // spec's meaning plain from its text.
  if (!mapping->getRawTag().empty() || !mapping->getAnchor().empty()) {
    fail(mappingLoc, "YAML anchors and tags are not supported in specs");
    return std::nullopt;
  }

  RoutingSpec spec;
  for (yaml::KeyValueNode &entry : *mapping) {
    if (failed())
      return std::nullopt;
    yaml::Node *keyNode = entry.getKey();
    if (failed())
      return std::nullopt;
    auto *keyScalar = dyn_cast_or_null<yaml::ScalarNode>(keyNode);
    if (!keyScalar) {
      fail(keyNode ? keyNode->getSourceRange().Start : SMLoc(),
           "spec keys must be plain scalars");
      return std::nullopt;
    }
    SmallString<32> keyStorage;
    StringRef key = keyScalar->getValue(keyStorage);
    SMLoc keyLoc = keyScalar->getSourceRange().Start;
    if (!keyScalar->getRawTag().empty() || !keyScalar->getAnchor().empty()) {
      fail(keyLoc, "'" + quoteForDiagnostic(key) +
                       "': YAML anchors and tags are not supported in specs");
      return std::nullopt;
    }

    if (!llvm::is_contained(kKeys, key)) {
      std::string hint;
      unsigned best = 3; // suggest only close spellings
      for (StringRef candidate : kKeys) {
        unsigned distance = key.edit_distance(candidate);
        if (distance < best) {
          best = distance;
          hint = ("; did you mean '" + candidate + "'?").str();
        }
      }
      if (hint.empty())
        hint = "; allowed keys: " + joinedKeys();
      fail(keyLoc, "unknown key '" + quoteForDiagnostic(key) + "'" + hint);
      return std::nullopt;
    }
    if (auto previous = keyLocs.find(key); previous != keyLocs.end()) {
      unsigned firstLine =
          sourceMgr.getLineAndColumn(previous->second).first;
      fail(keyLoc, "duplicate key '" + key + "' (first given at line " +
                       Twine(firstLine) + ")");
      return std::nullopt;
    }
    keyLocs[key] = keyLoc;
    currentKeyLoc = keyLoc;

    yaml::Node *value = entry.getValue();
    if (failed())
      return std::nullopt;
    if (!value) {
      fail(keyLoc, "'" + key + "' needs a value");
      return std::nullopt;
    }
    // Block scalars start on the line after their key: point at the key.
    valueLocs[key] =
        isa<yaml::ScalarNode>(value) ? value->getSourceRange().Start : keyLoc;
    if (!readKey(key, value, spec))
      return std::nullopt;
  }
  if (failed())
    return std::nullopt;

  // A stream holds exactly one spec.
  if (++document != stream.end()) {
    if (!failed())
      fail(document->getRoot() ? document->getRoot()->getSourceRange().Start
                               : SMLoc(),
           "a spec file holds one YAML document; found a second one");
    return std::nullopt;
  }
  if (failed())
    return std::nullopt;

  if (keyLocs.count("program")) {
    for (StringRef key : kKeys)
      if (keyLocs.count(key) && !llvm::is_contained(kProgramKeys, key)) {
        fail(keyLocs[key], "'" + key +
                               "' is stated by the program: a spec with "
                               "'program' takes only name, num_experts, "
                               "logits_dtype, hidden_dtype and hidden_size");
        return std::nullopt;
      }
    for (StringRef key : {"name", "num_experts"})
      if (!keyLocs.count(key)) {
        fail(mappingLoc, "missing required key '" + key + "' (" +
                             allowedValues(key) + ")");
        return std::nullopt;
      }
    // The program's types need E and the dtypes; report their own rules
    // first.
    if (std::optional<SpecViolation> violation = validateRoutingSpec([&] {
          RoutingSpec keysOnly = spec;
          keysOnly.program.clear();
          keysOnly.topK = 1;
          keysOnly.permute = keysOnly.dispatch = true;
          return keysOnly;
        }())) {
      auto it = valueLocs.find(violation->key);
      fail(it != valueLocs.end() ? it->second : mappingLoc, violation->message);
      return std::nullopt;
    }
    program::ProgramError programError;
    std::optional<program::Program> parsed = program::parseProgram(
        spec.program, {spec.numExperts, spec.logitsDType, spec.hiddenDType},
        programError, programOrigin());
    if (!parsed) {
      setError(programError.loc.line, programError.loc.column,
               programError.message);
      return std::nullopt;
    }
    program::applyProgramFacts(*parsed, spec);
  }

  for (StringRef key : {"name", "num_experts", "top_k", "scoring"}) {
    if (keyLocs.count("program"))
      break;
    if (!keyLocs.count(key)) {
      fail(mappingLoc, "missing required key '" + key + "' (" +
                           allowedValues(key) + ")");
      return std::nullopt;
    }
  }
  if (spec.groups > 1 && !keyLocs.count("topk_groups")) {
    fail(valueLocs["groups"], "'groups' = " + Twine(spec.groups) +
                                  " needs 'topk_groups' (how many groups to "
                                  "keep, in [1, groups])");
    return std::nullopt;
  }

  if (std::optional<SpecViolation> violation = validateRoutingSpec(spec)) {
    // A rule broken by a defaulted key (group_score's default top2_sum with
    // one expert per group) is reported at the key that brought it in.
    SMLoc loc = mappingLoc;
    for (StringRef key : {StringRef(violation->key), StringRef("groups")}) {
      if (auto it = valueLocs.find(key); it != valueLocs.end()) {
        loc = it->second;
        break;
      }
    }
    fail(loc, violation->message);
    return std::nullopt;
  }
  return spec;
}

} // namespace

std::optional<RoutingSpec> parseRoutingSpec(StringRef text,
                                            StringRef bufferName,
                                            std::string &error) {
  error.clear();
  std::optional<RoutingSpec> spec = SpecParser(text, bufferName, error).parse();
  // Every failure path sets a message; this keeps a missed one from ever
  // surfacing as exit code 2 with an empty line.
  if (!spec && error.empty())
    error = support::quotePath(bufferName.str()) + ":1:1: error: invalid spec";
  return spec;
}

std::optional<RoutingSpec> parseRoutingSpecFile(StringRef path,
                                                std::string &error) {
  // A spec is a few hundred bytes; the cap keeps /dev/zero or a mistaken
  // multi-gigabyte path from hanging the compiler.
  constexpr uint64_t kMaxSpecBytes = 1 << 20;
  auto fail = [&](const Twine &message) {
    // The path as the user gave it, escaped: it may hold any byte.
    error = support::quotePath(path.str()) + ": error: " + message.str();
    return std::nullopt;
  };
  if (path != "-") {
    sys::fs::file_status status;
    if (std::error_code ec = sys::fs::status(path, status))
      return fail("cannot read spec: " + ec.message());
    if (status.type() != sys::fs::file_type::regular_file)
      return fail("cannot read spec: not a regular file");
    if (status.getSize() > kMaxSpecBytes)
      return fail("spec is " + Twine(status.getSize()) +
                  " bytes; specs are at most 1 MiB");
  }
  if (path == "-") {
    // Standard input may be endless (/dev/zero, a pipe): read at most one
    // byte past the cap, never the whole stream.
    SmallString<4096> text;
    char chunk[16384];
    while (text.size() <= kMaxSpecBytes) {
      size_t room = kMaxSpecBytes + 1 - text.size();
      Expected<size_t> count = sys::fs::readNativeFile(
          sys::fs::getStdinHandle(),
          MutableArrayRef<char>(chunk, std::min(sizeof(chunk), room)));
      if (!count)
        return fail("cannot read spec: " + toString(count.takeError()));
      if (*count == 0)
        break;
      text.append(chunk, chunk + *count);
    }
    if (text.size() > kMaxSpecBytes)
      return fail("spec is more than 1 MiB");
    return parseRoutingSpec(text, "<stdin>", error);
  }
  ErrorOr<std::unique_ptr<MemoryBuffer>> file =
      MemoryBuffer::getFile(path, /*IsText=*/true);
  if (std::error_code ec = file.getError())
    return fail("cannot read spec: " + ec.message());
  // The file may have grown since it was checked.
  if ((*file)->getBufferSize() > kMaxSpecBytes)
    return fail("spec is more than 1 MiB");
  return parseRoutingSpec((*file)->getBuffer(), path, error);
}

ArrayRef<StringLiteral> routingSpecKeys() { return kKeys; }

std::string printRoutingSpec(const RoutingSpec &spec) {
  std::string out;
  raw_string_ostream os(out);
  if (spec.isProgram()) {
    os << "name: " << spec.name << "\n"
       << "num_experts: " << spec.numExperts << "\n"
       << "logits_dtype: " << toString(spec.logitsDType) << "\n";
    if (spec.permute)
      os << "hidden_dtype: " << toString(spec.hiddenDType) << "\n"
         << "hidden_size: " << spec.hiddenSize << "\n";
    SmallVector<StringRef> lines;
    StringRef(spec.program).rtrim('\n').split(lines, '\n');
    // An indented first line (a comment) needs the indentation stated.
    auto first = llvm::find_if(lines, [](StringRef l) { return !l.empty(); });
    bool indented = first != lines.end() && first->starts_with(" ");
    os << (indented ? "program: |2\n" : "program: |\n");
    for (StringRef line : lines)
      os << (line.empty() ? "" : "  ") << line << "\n";
    return out;
  }
  auto flag = [](bool value) { return value ? "true" : "false"; };
  os << "name: " << spec.name << "\n"
     << "num_experts: " << spec.numExperts << "\n"
     << "top_k: " << spec.topK << "\n"
     << "scoring: " << toString(spec.scoring) << "\n"
     << "selection: " << toString(spec.selection) << "\n"
     << "score_bias: " << flag(spec.scoreBias) << "\n"
     << "groups: " << spec.groups << "\n"
     << "topk_groups: " << spec.topkGroups << "\n"
     << "group_score: " << toString(spec.groupScore) << "\n"
     << "normalize: " << flag(spec.normalize) << "\n"
     // %.17g round-trips every double exactly.
     << "scaling_factor: " << format("%.17g", spec.scalingFactor) << "\n"
     << "replay: " << flag(spec.replay) << "\n"
     << "dispatch: " << flag(spec.dispatch) << "\n"
     << "capture: " << flag(spec.capture) << "\n"
     << "logits_dtype: " << toString(spec.logitsDType) << "\n";
  // The hidden keys mean something only with permute (validateRoutingSpec
  // refuses them otherwise), and specs without it keep their print, and so
  // their hash.
  if (spec.permute)
    os << "permute: true\n"
       << "hidden_dtype: " << toString(spec.hiddenDType) << "\n"
       << "hidden_size: " << spec.hiddenSize << "\n";
  // Likewise the epsilon, printed only when it is not the default.
  if (spec.normalizeEpsilon != kNormalizeEpsilon)
    os << "normalize_epsilon: " << format("%.17g", spec.normalizeEpsilon)
       << "\n";
  if (spec.temperature != 1.0)
    os << "temperature: " << format("%.17g", spec.temperature) << "\n";
  if (spec.logitSoftcap != 0.0)
    os << "logit_softcap: " << format("%.17g", spec.logitSoftcap) << "\n";
  if (spec.sharedGate)
    os << "shared_expert_gate: true\n";
  return out;
}

std::string specHash(const RoutingSpec &spec) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (unsigned char c : printRoutingSpec(spec)) {
    hash ^= c;
    hash *= 0x100000001b3ull;
  }
  char text[17];
  snprintf(text, sizeof(text), "%016llx", static_cast<unsigned long long>(hash));
  return text;
}

} // namespace moegen
