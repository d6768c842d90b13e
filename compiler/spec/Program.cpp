//===- Program.cpp - Gating programs: parse, check, expand ----------------===//
//
// Three steps: lines become entry headers and statements (a small lexer and
// a recursive-descent parser per line); the route entry's selection fixes k;
// then every entry is checked against the kernel ABI's signature and every
// call against its op's typing rule, in text order, giving one typed op per
// call. The first broken rule stops the parse with its location.
//
//===----------------------------------------------------------------------===//

#include "compiler/spec/Program.h"

#include "support/Numbers.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <sstream>

namespace moegen::program {

namespace {

using abi::DimRule;
using abi::DType;
using abi::EntryKind;

//===----------------------------------------------------------------------===//
// Syntax
//===----------------------------------------------------------------------===//

struct Token {
  enum Kind { Ident, Number, Punct, End } kind = End;
  std::string text;
  Location loc;
};

/// An expression as written: a name, a number, a bare word (an option's
/// value such as top2_sum) or a call with positional and named arguments.
struct Expr {
  enum Kind { Name, Number, Call } kind = Name;
  Location loc;
  std::string text; // the name, the number's literal, or the callee
  std::vector<Expr> args;
  // Named options, `key: value`, as two parallel lists (a pair would hold
  // the incomplete Expr).
  std::vector<Token> optionKeys;
  std::vector<Expr> optionValues;
};

struct Statement {
  Location loc;
  std::vector<Token> targets;
  Expr value;
};

struct EntrySyntax {
  Token name;
  std::vector<Token> params;
  std::vector<Token> results;
  std::vector<Statement> body;
};

struct Failure {
  ProgramError error;
};

[[noreturn]] void fail(Location loc, const std::string &message) {
  throw Failure{ProgramError{loc, message}};
}

bool isIdentStart(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool isIdentChar(char c) { return isIdentStart(c) || (c >= '0' && c <= '9'); }
bool isDigit(char c) { return c >= '0' && c <= '9'; }

/// The tokens of one line (comments removed), located past `origin`.
std::vector<Token> lex(std::string_view line, int lineNo, Location origin) {
  std::vector<Token> tokens;
  size_t i = 0;
  while (i < line.size()) {
    char c = line[i];
    Location loc{origin.line + lineNo, origin.column + static_cast<int>(i) + 1};
    if (c == ' ' || c == '\t' || c == '\r') {
      ++i;
    } else if (c == '#') {
      break;
    } else if (isIdentStart(c)) {
      size_t start = i;
      while (i < line.size() && isIdentChar(line[i]))
        ++i;
      tokens.push_back({Token::Ident, std::string(line.substr(start, i - start)), loc});
    } else if (isDigit(c) || c == '.' ||
               (c == '-' && i + 1 < line.size() &&
                (isDigit(line[i + 1]) || line[i + 1] == '.'))) {
      // [-]digits[.digits][e[+-]digits]; the number grammar checks it.
      size_t start = i++;
      while (i < line.size() &&
             (isDigit(line[i]) || line[i] == '.' || line[i] == 'e' ||
              line[i] == 'E' ||
              ((line[i] == '+' || line[i] == '-') &&
               (line[i - 1] == 'e' || line[i - 1] == 'E'))))
        ++i;
      tokens.push_back({Token::Number, std::string(line.substr(start, i - start)), loc});
    } else if (c == '-' && i + 1 < line.size() && line[i + 1] == '>') {
      tokens.push_back({Token::Punct, "->", loc});
      i += 2;
    } else if (std::string_view("(),:=+").find(c) != std::string_view::npos) {
      tokens.push_back({Token::Punct, std::string(1, c), loc});
      ++i;
    } else {
      std::string shown = (c >= 0x20 && c < 0x7f)
                              ? std::string(1, c)
                              : "\\x" + [&] {
                                  char hex[3];
                                  std::snprintf(hex, sizeof hex, "%02x",
                                                static_cast<unsigned char>(c));
                                  return std::string(hex);
                                }();
      fail(loc, "unexpected character '" + shown + "'");
    }
  }
  tokens.push_back({Token::End, "", {origin.line + lineNo,
                                     origin.column + static_cast<int>(line.size()) + 1}});
  return tokens;
}

class LineParser {
public:
  explicit LineParser(std::vector<Token> tokens) : tokens(std::move(tokens)) {}

  const Token &peek() const { return tokens[pos]; }
  bool isPunct(std::string_view p) const {
    return peek().kind == Token::Punct && peek().text == p;
  }
  Token take() { return tokens[pos == tokens.size() - 1 ? pos : pos++]; }
  static std::string describe(const Token &token) {
    return token.kind == Token::End ? "the end of the line"
                                    : "'" + token.text + "'";
  }
  Token expectIdent(const std::string &what) {
    if (peek().kind != Token::Ident)
      fail(peek().loc, "expected " + what + ", got " + describe(peek()));
    return take();
  }
  void expectPunct(std::string_view p, const std::string &context) {
    if (!isPunct(p))
      fail(peek().loc, "expected '" + std::string(p) + "' " + context +
                           ", got " + describe(peek()));
    take();
  }
  void expectEnd(const std::string &context) {
    if (peek().kind != Token::End)
      fail(peek().loc, "unexpected " + describe(peek()) + " " + context);
  }

  /// name '(' params ')' '->' (name | '(' names ')') ':'
  EntrySyntax header() {
    EntrySyntax entry;
    entry.name = expectIdent("an entry point name (route, route_hash, "
                             "replay, dispatch, permute, combine)");
    expectPunct("(", "after the entry point name");
    if (!isPunct(")")) {
      do
        entry.params.push_back(expectIdent("a parameter name"));
      while (isPunct(",") && (take(), true));
    }
    expectPunct(")", "after the parameters");
    expectPunct("->", "before the results");
    if (isPunct("(")) {
      take();
      do
        entry.results.push_back(expectIdent("a result name"));
      while (isPunct(",") && (take(), true));
      expectPunct(")", "after the results");
    } else {
      entry.results.push_back(expectIdent("a result name or '('"));
    }
    expectPunct(":", "at the end of the entry header");
    expectEnd("after the entry header");
    return entry;
  }

  /// names '=' expr
  Statement statement() {
    Statement statement;
    statement.loc = peek().loc;
    do
      statement.targets.push_back(expectIdent("a value name"));
    while (isPunct(",") && (take(), true));
    expectPunct("=", "after the value name");
    statement.value = expr();
    expectEnd("after the expression");
    return statement;
  }

private:
  /// primary ('+' primary)*: '+' adds a bias, add_bias(x, b).
  Expr expr() {
    Nesting nested(*this, peek().loc);
    Expr left = primary();
    // Each '+' nests the sum so far one level deeper.
    std::vector<std::unique_ptr<Nesting>> sums;
    while (isPunct("+")) {
      Token plus = take();
      sums.push_back(std::make_unique<Nesting>(*this, plus.loc));
      Expr call{Expr::Call, plus.loc, "add_bias", {}, {}, {}};
      call.args.push_back(std::move(left));
      call.args.push_back(primary());
      left = std::move(call);
    }
    return left;
  }

  /// Expressions nest at most kMaxDepth deep (calls, parentheses and sums
  /// together): the checker, the IR builder and the destructors recurse.
  static constexpr int kMaxDepth = 64;
  struct Nesting {
    Nesting(LineParser &parser, Location loc) : parser(parser) {
      if (++parser.depth > kMaxDepth)
        fail(loc, "expression nested more than " + std::to_string(kMaxDepth) +
                      " deep; name the inner values instead");
    }
    ~Nesting() { --parser.depth; }
    LineParser &parser;
  };
  int depth = 0;

  Expr primary() {
    Token token = peek();
    if (token.kind == Token::Number) {
      take();
      return Expr{Expr::Number, token.loc, token.text, {}, {}, {}};
    }
    if (isPunct("(")) {
      Nesting nested(*this, take().loc);
      Expr inner = expr();
      expectPunct(")", "to close '('");
      return inner;
    }
    if (token.kind != Token::Ident)
      fail(token.loc, "expected a value, a number or a call, got " +
                          describe(token));
    take();
    if (!isPunct("("))
      return Expr{Expr::Name, token.loc, token.text, {}, {}, {}};
    Nesting nested(*this, take().loc);
    Expr call{Expr::Call, token.loc, token.text, {}, {}, {}};
    if (!isPunct(")")) {
      do {
        if (peek().kind == Token::Ident && pos + 1 < tokens.size() &&
            tokens[pos + 1].kind == Token::Punct && tokens[pos + 1].text == ":") {
          Token key = take();
          take();
          call.optionKeys.push_back(key);
          call.optionValues.push_back(primary());
        } else {
          if (!call.optionKeys.empty())
            fail(peek().loc, "positional argument after a named one in '" +
                                 call.text + "(...)'");
          call.args.push_back(expr());
        }
      } while (isPunct(",") && (take(), true));
    }
    expectPunct(")", "to close '" + call.text + "('");
    return call;
  }

  std::vector<Token> tokens;
  size_t pos = 0;
};

/// Splits the text into entries: unindented lines are headers, indented
/// lines the statements of the header above them.
std::vector<EntrySyntax> parseSyntax(std::string_view text, Location origin) {
  std::vector<EntrySyntax> entries;
  int lineNo = 0;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos)
      end = text.size();
    std::string_view line = text.substr(start, end - start);
    ++lineNo;
    start = end + 1;
    std::vector<Token> tokens = lex(line, lineNo, origin);
    if (tokens.front().kind == Token::End) {
      if (end == text.size())
        break;
      continue;
    }
    bool indented = tokens.front().loc.column > origin.column + 1;
    LineParser parser(std::move(tokens));
    if (!indented) {
      entries.push_back(parser.header());
    } else {
      if (entries.empty())
        fail(parser.peek().loc,
             "a statement outside an entry point: start with a header such "
             "as 'route(logits) -> (ids, weights):'");
      entries.back().body.push_back(parser.statement());
    }
    if (end == text.size())
      break;
  }
  return entries;
}

//===----------------------------------------------------------------------===//
// Types and checking
//===----------------------------------------------------------------------===//

constexpr double kMaxF32 = 3.4028234e38;
constexpr double kMinNormalF32 = 1.1754944e-38;
bool isNormalF32(double v) {
  return std::isfinite(v) && v >= kMinNormalF32 && v <= kMaxF32;
}

DType toDType(LogitsDType dtype) {
  switch (dtype) {
  case LogitsDType::F32:
    return DType::F32;
  case LogitsDType::BF16:
    return DType::BF16;
  case LogitsDType::F16:
    return DType::F16;
  }
  return DType::F32;
}

ValueType tensor(DType dtype, std::vector<DimRule> dims, bool selected = false) {
  return ValueType{dtype, std::move(dims), selected};
}

const char *kEntryNames =
    "route, route_hash, replay, dispatch, permute, combine, update_bias";

/// What each callee takes, for messages.
const std::map<std::string, std::string, std::less<>> kCallees = {
    {"softmax", "softmax(x, temperature: t, softcap: c)"},
    {"sigmoid", "sigmoid(x, temperature: t, softcap: c)"},
    {"sqrtsoftplus", "sqrtsoftplus(x, temperature: t, softcap: c)"},
    {"identity", "identity(x, temperature: t, softcap: c)"},
    {"sparsemixer", "sparsemixer(x, ids, jitter_eps: e)"},
    {"add_bias", "add_bias(x, bias), or x + bias"},
    {"group_mask", "group_mask(x, groups: G, keep: K, by: top2_sum|max)"},
    {"topk", "topk(x, k)"},
    {"topp", "topp(x, k, p: P)"},
    {"expert_choice", "expert_choice(x, k, capacity_factor: f)"},
    {"hash", "hash(token_ids, hash_table, k)"},
    {"forced", "forced(forced_ids)"},
    {"gather", "gather(x, ids)"},
    {"normalize", "normalize(w, epsilon: e)"},
    {"scale", "scale(w, factor)"},
    {"capture", "capture(ids, capture, layer)"},
    {"shared_gate", "shared_gate(shared_gate_logits)"},
    {"dispatch", "dispatch(topk_ids, capacity_factor: f)"},
    {"permute", "permute(hidden, sorted_slots)"},
    {"combine", "combine(expert_output, slot_positions, topk_weights)"},
    {"update_bias", "update_bias(bias, expert_counts, rate: r)"},
};

std::string calleeList() {
  std::string list;
  for (const auto &[name, usage] : kCallees)
    list += (list.empty() ? "" : ", ") + name;
  return list;
}

class Checker {
public:
  Checker(const ProgramShape &shape, Location origin)
      : shape(shape), origin(origin) {}

  Program check(std::vector<EntrySyntax> syntax) {
    if (syntax.empty())
      fail({origin.line + 1, origin.column + 1},
           "the program defines no entry point: a router needs at "
                   "least 'route(logits) -> (ids, weights):' (or route_hash) "
                   "with a selection");
    std::map<EntryKind, Location> seen;
    for (const EntrySyntax &entry : syntax) {
      std::optional<EntryKind> kind = abi::parseEntryKind(entry.name.text);
      if (!kind)
        fail(entry.name.loc, "unknown entry point '" +
                                 quoteForDiagnostic(entry.name.text) +
                                 "'; entry points are " + kEntryNames);
      if (auto it = seen.find(*kind); it != seen.end())
        fail(entry.name.loc, "entry point '" + entry.name.text +
                                 "' is defined twice (first at line " +
                                 std::to_string(it->second.line) + ")");
      seen[*kind] = entry.name.loc;
    }
    bool route = seen.count(EntryKind::Route), hash = seen.count(EntryKind::RouteHash);
    if (route && hash)
      fail(seen[EntryKind::RouteHash],
           "a router has one selection entry: route or route_hash, not both "
           "(route is at line " +
               std::to_string(seen[EntryKind::Route].line) + ")");
    if (!route && !hash)
      fail(syntax.front().name.loc,
           "the program has no route entry: every router needs "
           "'route(...)' (top-k) or 'route_hash(...)' (a hash table)");
    if (seen.count(EntryKind::Permute) != seen.count(EntryKind::Combine)) {
      bool permute = seen.count(EntryKind::Permute);
      fail(seen[permute ? EntryKind::Permute : EntryKind::Combine],
           std::string(permute ? "permute" : "combine") +
               " needs its partner entry point " +
               (permute ? "combine" : "permute") +
               " (the runtime loads both or neither)");
    }
    if (seen.count(EntryKind::Permute) && !seen.count(EntryKind::Dispatch))
      fail(seen[EntryKind::Permute],
           "permute needs a dispatch entry point (it reads dispatch's "
           "sorted_slots, combine its slot_positions)");

    // The route entry first: its selection fixes k, which every other
    // selection must repeat. Without one, k stays 0 and the route entry's
    // result check says where its ids should come from.
    auto routeEntry = std::find_if(
        syntax.begin(), syntax.end(), [](const EntrySyntax &e) {
          return e.name.text == "route" || e.name.text == "route_hash";
        });
    for (const Statement &statement : routeEntry->body)
      if (std::optional<int64_t> k = topKIn(statement.value)) {
        program.topK = *k;
        break;
      }
    std::vector<Entry> entries(syntax.size());
    size_t routeIndex = routeEntry - syntax.begin();
    entries[routeIndex] = checkEntry(*routeEntry);
    for (size_t i = 0; i < syntax.size(); ++i)
      if (i != routeIndex)
        entries[i] = checkEntry(syntax[i]);
    program.entries = std::move(entries);
    return std::move(program);
  }

private:
  // k ------------------------------------------------------------------

  /// k of the first topk(x, k) or hash(t, h, k) in `expr`, if it is a
  /// valid one.
  std::optional<int64_t> topKIn(const Expr &expr) {
    if (expr.kind != Expr::Call)
      return std::nullopt;
    for (const Expr &arg : expr.args)
      if (std::optional<int64_t> k = topKIn(arg))
        return k;
    size_t index = expr.text == "topk" || expr.text == "topp" ||
                           expr.text == "expert_choice"
                       ? 1
                   : expr.text == "hash"                     ? 2
                                                             : 0;
    if (!index || expr.args.size() != index + 1 ||
        expr.args[index].kind != Expr::Number)
      return std::nullopt;
    // Out-of-range values are reported by the op's own check.
    std::optional<int64_t> k = support::parseDecimalInteger(expr.args[index].text);
    if (k && *k >= 1 && *k <= std::min(kMaxTopK, shape.numExperts))
      return k;
    return std::nullopt;
  }

  // Numbers -------------------------------------------------------------

  static double number(const Expr &call, const Expr &arg,
                       const std::string &what) {
    if (arg.kind != Expr::Number)
      fail(arg.loc, call.text + ": " + what + " must be a number, got '" +
                        quoteForDiagnostic(arg.text) + "'");
    if (!support::isDecimalNumber(arg.text))
      fail(arg.loc, call.text + ": " + what + " must be a decimal number, got '" +
                        quoteForDiagnostic(arg.text) + "'");
    return std::strtod(arg.text.c_str(), nullptr);
  }

  static int64_t integerArg(const Expr &call, const Expr &arg,
                            const std::string &what, int64_t lo, int64_t hi,
                            const std::string &why) {
    std::optional<int64_t> value;
    if (arg.kind == Expr::Number)
      value = support::parseDecimalInteger(arg.text);
    if (!value)
      fail(arg.loc, call.text + ": " + what + " must be an integer, got '" +
                        quoteForDiagnostic(arg.text) + "'");
    if (*value < lo || *value > hi)
      fail(arg.loc, call.text + ": " + what + " = " + std::to_string(*value) +
                        " must be in [" + std::to_string(lo) + ", " +
                        std::to_string(hi) + "]" +
                        (why.empty() ? "" : " (" + why + ")"));
    return *value;
  }

  // Entries -------------------------------------------------------------

  ValueType abiType(const abi::ArgSpec &arg) {
    if (arg.role == abi::ArgRole::Scalar)
      return tensor(DType::I64, {});
    DType dtype = arg.dtype;
    switch (arg.dtypeRule) {
    case abi::DTypeRule::Fixed:
      break;
    case abi::DTypeRule::Logits:
      dtype = toDType(shape.logitsDType);
      break;
    case abi::DTypeRule::Hidden:
      dtype = toDType(shape.hiddenDType);
      break;
    case abi::DTypeRule::Capture:
      dtype = abi::captureDType(shape.numExperts);
      break;
    }
    return tensor(dtype, {arg.shape().begin(), arg.shape().end()});
  }

  static bool isInput(const abi::ArgSpec &arg) {
    return (arg.role == abi::ArgRole::Tensor ||
            arg.role == abi::ArgRole::Scalar) &&
           arg.access != abi::Access::Write;
  }

  static std::string signatureText(EntryKind kind) {
    std::string text;
    for (const abi::ArgSpec &arg : abi::entrySignature(kind))
      if (isInput(arg))
        text += (text.empty() ? "" : ", ") + std::string(arg.name) +
                (arg.required ? "" : "?");
    return std::string(abi::toString(kind)) + "(" + text + ")";
  }

  Entry checkEntry(const EntrySyntax &syntax) {
    Entry entry;
    entry.kind = *abi::parseEntryKind(syntax.name.text);
    entry.loc = syntax.name.loc;
    names.clear();
    uses.clear();
    paramNames.clear();
    const std::string entryName = syntax.name.text;

    // Parameters: the ABI's inputs in order; optional ones may be left out.
    size_t given = 0;
    bool hasCapture = false, hasLayer = false, hasSharedGate = false;
    for (const abi::ArgSpec &arg : abi::entrySignature(entry.kind)) {
      if (!isInput(arg))
        continue;
      if (given < syntax.params.size() && syntax.params[given].text == arg.name) {
        const Token &param = syntax.params[given++];
        int value = newValue(abiType(arg));
        entry.params.push_back(value);
        entry.paramNames.push_back(param.text);
        paramNames[value] = param.text;
        bind(param, value, /*isParam=*/true);
        hasCapture |= arg.name == "capture";
        hasLayer |= arg.name == "layer";
        hasSharedGate |= arg.name == "shared_gate_logits";
        continue;
      }
      if (arg.required) {
        Location loc = given < syntax.params.size() ? syntax.params[given].loc
                                                    : syntax.name.loc;
        fail(loc, entryName + ": expected parameter '" + std::string(arg.name) +
                      "' here; the kernel ABI's parameters are " +
                      signatureText(entry.kind) + ", in that order");
      }
    }
    if (given < syntax.params.size())
      fail(syntax.params[given].loc,
           entryName + ": unexpected parameter '" + syntax.params[given].text +
               "'; the kernel ABI's parameters are " + signatureText(entry.kind) +
               ", in that order (? marks the optional ones)");
    if (hasCapture != hasLayer)
      fail(syntax.name.loc, entryName + ": 'capture' and 'layer' come together "
                                        "(the buffer and the layer to write)");

    for (const Statement &statement : syntax.body)
      checkStatement(statement, entry);

    // Results: the ABI's outputs in order (the shared gate with its
    // logits), then the updated capture buffer.
    std::vector<std::pair<std::string, ValueType>> expected;
    for (const abi::ArgSpec &arg : abi::entrySignature(entry.kind))
      if (arg.role == abi::ArgRole::Tensor && arg.access == abi::Access::Write &&
          !arg.fusedDispatchOnly &&
          (arg.name != "shared_gate" || hasSharedGate)) {
        ValueType type = abiType(arg);
        type.selected = arg.name == "topk_ids";
        expected.emplace_back(std::string(arg.name), type);
      }
    if (hasCapture)
      expected.emplace_back("capture", abiType(*abi::findArg(entry.kind, "capture")));
    if (syntax.results.size() != expected.size()) {
      std::string list;
      for (const auto &[name, type] : expected)
        list += (list.empty() ? "" : ", ") + name + " " + toString(type);
      fail(syntax.results.empty() ? syntax.name.loc : syntax.results.front().loc,
           entryName + " returns " + std::to_string(expected.size()) +
               " values (" + list + "), got " +
               std::to_string(syntax.results.size()));
    }
    for (size_t i = 0; i < expected.size(); ++i) {
      const Token &result = syntax.results[i];
      int value = lookup(result);
      const auto &[abiName, type] = expected[i];
      const ValueType &actual = program.values[value];
      if (!actual.sameShapeAndDType(type) || (type.selected && !actual.selected))
        fail(result.loc, entryName + ": result " + std::to_string(i + 1) + " (" +
                             abiName + ") must be " + toString(type) + ", but '" +
                             result.text + "' is " + toString(actual));
    }
    // Every value feeds a result: a dead computation is most likely a
    // mistake (a rebinding that was meant to be read).
    for (const auto &[value, where] : defined)
      if (!uses.count(value))
        fail(where.loc, entryName + ": '" + where.text +
                            "' is never used; remove it or return it");
    defined.clear();
    for (size_t i = 0; i < entry.params.size(); ++i)
      if (!uses.count(entry.params[i]))
        fail(syntax.params[i].loc,
             entryName + ": parameter '" + syntax.params[i].text +
                 "' is never used" +
                 (abi::findArg(entry.kind, syntax.params[i].text)->required
                      ? " (the kernel ABI requires it)"
                      : "; leave it out of the header"));

    // The ids a selection entry returns come from its own kind of
    // selection; dispatch, permute and combine hold their one op.
    auto idsProducer = [&]() -> std::optional<OpKind> {
      auto it = producer.find(names.at(syntax.results.front().text));
      return it == producer.end() ? std::nullopt
                                  : std::optional<OpKind>(it->second);
    };
    switch (entry.kind) {
    case EntryKind::Route:
    case EntryKind::RouteHash: {
      OpKind wanted = entry.kind == EntryKind::Route ? OpKind::TopK : OpKind::Hash;
      std::optional<OpKind> got = idsProducer();
      if ((got == OpKind::TopP || got == OpKind::ExpertChoice) &&
          wanted == OpKind::TopK) {
        program.unusedSlots = true;
        program.expertChoice = got == OpKind::ExpertChoice;
      }
      else if (got != wanted)
        fail(syntax.results.front().loc,
             entryName + ": no selection: its ids must come from " +
                 (wanted == OpKind::TopK ? "topk(x, k), topp(x, k, p: P) or "
                                           "expert_choice(x, k, "
                                           "capacity_factor: f)"
                                         : "hash(token_ids, hash_table, k)"));
      break;
    }
    case EntryKind::Replay:
      if (idsProducer() != OpKind::Forced)
        fail(syntax.results.front().loc,
             "replay: its ids must come from forced(forced_ids)");
      break;
    case EntryKind::Dispatch:
    case EntryKind::Permute:
    case EntryKind::Combine:
    case EntryKind::UpdateBias:
      if (entry.ops.size() != 1)
        fail(syntax.name.loc, entryName + ": the entry holds exactly one "
                                          "call, " +
                                  kCallees.at(entryName));
      for (size_t i = 0; i < syntax.results.size(); ++i)
        if (names.at(syntax.results[i].text) != entry.ops[0].results[i])
          fail(syntax.results[i].loc,
               entryName + ": returns its call's results, in order (result " +
                   std::to_string(i + 1) + " is not the call's result " +
                   std::to_string(i + 1) + ")");
      break;
    }
    entry.results.reserve(syntax.results.size());
    for (const Token &result : syntax.results)
      entry.results.push_back(names.at(result.text));
    return entry;
  }

  void checkStatement(const Statement &statement, Entry &entry) {
    const Expr &value = statement.value;
    if (value.kind == Expr::Call && value.text == "dispatch") {
      if (statement.targets.size() != 4)
        fail(statement.targets.front().loc,
             "dispatch has 4 results (expert_counts, expert_offsets, "
             "sorted_slots, slot_positions); got " +
                 std::to_string(statement.targets.size()) + " names");
    } else if (statement.targets.size() != 1) {
      fail(statement.targets[1].loc, "'" + (value.kind == Expr::Call ? value.text : value.text) +
                                         "' has one result; got " +
                                         std::to_string(statement.targets.size()) + " names");
    }
    if (value.kind == Expr::Name)
      fail(value.loc, "'" + quoteForDiagnostic(statement.targets[0].text) +
                          " = " + quoteForDiagnostic(value.text) +
                          "' only renames a value; use '" +
                          quoteForDiagnostic(value.text) + "' itself");
    std::vector<int> results = eval(value, entry, statement.targets.size());
    for (size_t i = 0; i < results.size(); ++i)
      bind(statement.targets[i], results[i], /*isParam=*/false);
  }

  // Values --------------------------------------------------------------

  int newValue(ValueType type) {
    program.values.push_back(std::move(type));
    return static_cast<int>(program.values.size()) - 1;
  }

  void bind(const Token &name, int value, bool isParam) {
    if (auto it = names.find(name.text); it != names.end()) {
      if (params.count(it->second))
        fail(name.loc, "'" + name.text + "' is a parameter; give the new "
                                          "value another name");
      if (isParam)
        fail(name.loc, "parameter '" + name.text + "' is given twice");
    }
    names[name.text] = value;
    if (isParam)
      params.insert(value);
    else
      defined[value] = name;
  }

  int lookup(const Token &name) {
    auto it = names.find(name.text);
    if (it == names.end())
      fail(name.loc, "'" + quoteForDiagnostic(name.text) + "' is not defined" +
                         (kCallees.count(name.text)
                              ? " (did you mean the call '" + name.text + "(...)'?)"
                              : ""));
    uses.insert(it->second);
    return it->second;
  }

  /// How `arg` reads in a message: its name, or the call it makes.
  static std::string describe(const Expr &arg) {
    return arg.kind == Expr::Call ? "'" + arg.text + "(...)'" : "'" + arg.text + "'";
  }

  void expectType(const Expr &call, size_t index, const Expr &arg, int value,
                  const ValueType &expected, const std::string &role) {
    const ValueType &actual = program.values[value];
    bool ok = actual.sameShapeAndDType(expected) &&
              (!expected.selected || actual.selected);
    if (!ok)
      fail(arg.loc, call.text + ": argument " + std::to_string(index + 1) +
                        " (" + role + ") must be " + toString(expected) +
                        ", but " + describe(arg) + " is " + toString(actual));
  }

  /// Evaluates `expr`, appending its ops to `entry`; returns its values.
  std::vector<int> eval(const Expr &expr, Entry &entry, size_t wanted = 1) {
    if (expr.kind == Expr::Name)
      return {lookup(Token{Token::Ident, expr.text, expr.loc})};
    if (expr.kind == Expr::Number)
      fail(expr.loc, "a number is not a value; numbers are arguments of "
                     "topk, hash, scale and the named options");
    const std::string &name = expr.text;
    auto callee = kCallees.find(name);
    if (callee == kCallees.end())
      fail(expr.loc, "unknown operation '" + quoteForDiagnostic(name) +
                         "'; operations are " +
                         calleeList());
    if (name == "dispatch" && wanted != 4)
      fail(expr.loc, "dispatch has 4 results: write 'counts, offsets, "
                     "sorted_slots, slot_positions = dispatch(topk_ids)'");

    // Arity: value arguments, then number arguments, then named options.
    bool isScore = name == "softmax" || name == "sigmoid" ||
                   name == "sqrtsoftplus" || name == "identity";
    size_t numValues = name == "add_bias" || name == "gather" || name == "hash" ||
                               name == "permute" || name == "sparsemixer" ||
                               name == "update_bias"
                           ? 2
                       : name == "capture" || name == "combine" ? 3
                                                                : 1;
    size_t numNumbers =
        name == "topk" || name == "topp" || name == "expert_choice" ||
                name == "hash" || name == "scale"
            ? 1
            : 0;
    std::vector<std::string> allowedOptions =
        isScore ? std::vector<std::string>{"temperature", "softcap"}
        : name == "group_mask" ? std::vector<std::string>{"groups", "keep", "by"}
        : name == "normalize"  ? std::vector<std::string>{"epsilon"}
        : name == "sparsemixer" ? std::vector<std::string>{"jitter_eps"}
        : name == "topp"        ? std::vector<std::string>{"p"}
        : name == "expert_choice" ? std::vector<std::string>{"capacity_factor"}
        : name == "dispatch"    ? std::vector<std::string>{"capacity_factor"}
        : name == "update_bias" ? std::vector<std::string>{"rate"}
                               : std::vector<std::string>{};
    if (expr.args.size() != numValues + numNumbers)
      fail(expr.loc, name + " takes " + std::to_string(numValues + numNumbers) +
                         " positional arguments, " + callee->second + "; got " +
                         std::to_string(expr.args.size()));
    std::map<std::string, const Expr *> options;
    for (size_t i = 0; i < expr.optionKeys.size(); ++i) {
      const Token &key = expr.optionKeys[i];
      const Expr &value = expr.optionValues[i];
      if (std::find(allowedOptions.begin(), allowedOptions.end(), key.text) ==
          allowedOptions.end())
        fail(key.loc, name + " has no option '" + key.text + "'; it takes " +
                          callee->second);
      if (!options.emplace(key.text, &value).second)
        fail(key.loc, name + ": option '" + key.text + "' is given twice");
    }

    std::vector<int> operands;
    for (size_t i = 0; i < numValues; ++i) {
      if (expr.args[i].kind == Expr::Number)
        fail(expr.args[i].loc, name + ": argument " + std::to_string(i + 1) +
                                   " must be a value, got the number " +
                                   expr.args[i].text + "; " + callee->second);
      std::vector<int> values = eval(expr.args[i], entry);
      operands.push_back(values.front());
      // The logits reach a kernel only through a scoring call, which
      // validates them; forced ids only through forced(), the capture
      // buffer only through capture(), each as the parameter itself.
      const std::string param = paramNameOf(values.front());
      if (param == "logits" && !isScore)
        fail(expr.args[i].loc, name + ": the logits are read by a scoring "
                                      "call only (softmax, sigmoid, "
                                      "sqrtsoftplus or identity), which "
                                      "validates them");
    }
    auto requireParam = [&](size_t i, const char *param) {
      if (paramNameOf(operands[i]) != param)
        fail(expr.args[i].loc, name + ": argument " + std::to_string(i + 1) +
                                   " must be the parameter '" + param + "'");
    };

    auto arg = [&](size_t i) -> const Expr & { return expr.args[i]; };
    // The named option `key`, a normal f32 value > 0; nullopt when it is
    // absent and not `required` (`need` says what it is for).
    auto positiveOption = [&](const char *key, bool required,
                              const std::string &need,
                              const std::string &why) -> std::optional<double> {
      auto it = options.find(key);
      if (it == options.end()) {
        if (required)
          fail(expr.loc, name + " needs the option '" + key + "', " + need +
                             "; " + callee->second);
        return std::nullopt;
      }
      double v = number(expr, *it->second, key);
      if (!isNormalF32(v))
        fail(it->second->loc, name + ": " + key + " = " + it->second->text +
                                  " must be a normal f32 value > 0 (" + why +
                                  ")");
      return v;
    };

    const int64_t e = shape.numExperts, k = program.topK;
    const DType hidden = toDType(shape.hiddenDType);
    const ValueType scores = tensor(DType::F32, {DimRule::Tokens, DimRule::Experts});
    const ValueType ids = tensor(DType::I32, {DimRule::Tokens, DimRule::TopK}, true);
    const ValueType rawIds = tensor(DType::I32, {DimRule::Tokens, DimRule::TopK});
    const ValueType weights = tensor(DType::F32, {DimRule::Tokens, DimRule::TopK});
    const ValueType slots = tensor(DType::I32, {DimRule::Slots});

    Op op;
    op.loc = expr.loc;
    op.operands = operands;
    std::vector<ValueType> resultTypes;
    int64_t selectable = e;

    auto placeOnlyIn = [&](EntryKind kind) {
      if (entry.kind != kind)
        fail(expr.loc, name + "(...) is an entry point of its own: write it "
                              "alone in '" +
                           std::string(abi::toString(kind)) + "(...) -> ...:'");
    };

    if (isScore) {
      op.kind = OpKind::Score;
      op.scoring = name == "softmax"        ? Scoring::Softmax
                   : name == "sigmoid"      ? Scoring::Sigmoid
                   : name == "sqrtsoftplus" ? Scoring::SqrtSoftplus
                                            : Scoring::Identity;
      const ValueType &x = program.values[operands[0]];
      if (x.dims != scores.dims ||
          (x.dtype != DType::F32 && x.dtype != DType::BF16 && x.dtype != DType::F16))
        fail(arg(0).loc, name + ": argument 1 (logits) must be [T, E] of f32, "
                                "bf16 or f16, but " +
                             describe(arg(0)) + " is " + toString(x));
      for (const char *key : {"temperature", "softcap"})
        if (auto it = options.find(key); it != options.end()) {
          double v = number(expr, *it->second, key);
          if (!isNormalF32(v))
            fail(it->second->loc,
                 name + ": " + key + " = " + it->second->text +
                     " must be a normal f32 value > 0 (logits are divided by "
                     "it in f32); leave the option out for none");
          (std::string(key) == "temperature" ? op.temperature : op.softcap) = v;
        }
      resultTypes.push_back(scores);
    } else if (name == "add_bias") {
      op.kind = OpKind::AddBias;
      expectType(expr, 0, arg(0), operands[0], scores, "scores");
      expectType(expr, 1, arg(1), operands[1],
                 tensor(DType::F32, {DimRule::Experts}), "bias");
      selectable = selectableOf(operands[0]);
      resultTypes.push_back(scores);
    } else if (name == "group_mask") {
      op.kind = OpKind::GroupMask;
      expectType(expr, 0, arg(0), operands[0], scores, "keys");
      if (selectableOf(operands[0]) < e)
        fail(arg(0).loc, "group_mask: " + describe(arg(0)) +
                             " is already group-masked; mask once, with the "
                             "groups and keep you mean");
      if (mayBeNegInf.count(operands[0]))
        fail(arg(0).loc, "group_mask: " + describe(arg(0)) +
                             " holds identity scores, which keep -inf "
                             "logits; mask the groups of softmax, sigmoid "
                             "or sqrtsoftplus scores");
      for (const char *key : {"groups", "keep"})
        if (!options.count(key))
          fail(expr.loc, "group_mask needs the option '" + std::string(key) +
                             "'; " + callee->second);
      op.groups = integerArg(expr, *options["groups"], "groups", 2, e,
                             "at least 2 groups, at most E = " + std::to_string(e));
      if (e % op.groups != 0)
        fail(options["groups"]->loc,
             "group_mask: groups = " + std::to_string(op.groups) +
                 " must divide E = " + std::to_string(e) +
                 " into equal contiguous groups");
      op.keep = integerArg(expr, *options["keep"], "keep", 1, op.groups,
                           "the groups that stay selectable");
      if (auto it = options.find("by"); it != options.end()) {
        std::optional<GroupScore> by;
        if (it->second->kind == Expr::Name)
          by = parseGroupScore(it->second->text);
        if (!by)
          fail(it->second->loc, "group_mask: by must be top2_sum or max, got '" +
                                    quoteForDiagnostic(it->second->text) + "'");
        op.by = *by;
      }
      const int64_t perGroup = e / op.groups;
      if (op.by == GroupScore::Top2Sum && perGroup < 2)
        fail(expr.loc, "group_mask: by: top2_sum needs at least 2 experts per "
                       "group, but E / groups = " +
                           std::to_string(perGroup) + " (use by: max)");
      selectable = op.keep * perGroup;
      resultTypes.push_back(scores);
    } else if (name == "topk" || name == "topp" || name == "expert_choice" ||
               name == "hash") {
      bool isTopK = name != "hash";
      op.kind = name == "topk"            ? OpKind::TopK
                : name == "topp"          ? OpKind::TopP
                : name == "expert_choice" ? OpKind::ExpertChoice
                                          : OpKind::Hash;
      if (isTopK) {
        expectType(expr, 0, arg(0), operands[0], scores, "keys");
      } else {
        expectType(expr, 0, arg(0), operands[0],
                   tensor(DType::I32, {DimRule::Tokens}), "token ids");
        expectType(expr, 1, arg(1), operands[1],
                   tensor(DType::I32, {DimRule::HashRows, DimRule::TopK}),
                   "hash table");
      }
      const Expr &kArg = arg(numValues);
      op.k = integerArg(expr, kArg, "k", 1, std::min(kMaxTopK, e),
                        "at most min(" + std::to_string(kMaxTopK) + ", E = " +
                            std::to_string(e) + ")");
      if (op.k != k)
        fail(kArg.loc, name + ": k = " + std::to_string(op.k) +
                           ", but the route entry selects k = " +
                           std::to_string(k) +
                           "; every selection of a program picks the same k");
      if (isTopK && op.k > selectableOf(operands[0]))
        fail(kArg.loc, name + ": k = " + std::to_string(op.k) + " exceeds the " +
                           std::to_string(selectableOf(operands[0])) +
                           " experts that " + describe(arg(0)) +
                           " leaves selectable (keep * E / groups)");
      if (op.kind == OpKind::TopP) {
        if (entry.kind != EntryKind::Route)
          fail(expr.loc, "topp: a dynamic-k selection belongs in the route "
                         "entry (replay's forced() takes its ids)");
        op.p = *positiveOption("p", true,
                               "the running sum of the selected keys to pass",
                               "the running sum of the keys is compared with "
                               "it in f32");
      }
      if (op.kind == OpKind::ExpertChoice) {
        if (entry.kind != EntryKind::Route)
          fail(expr.loc, "expert_choice: a selection across tokens belongs in "
                         "the route entry (replay's forced() takes its ids)");
        op.capacityFactor = *positiveOption(
            "capacity_factor", true,
            "the tokens each expert takes per expert of the average token "
            "(c = ceil(f * T / E))",
            "each expert takes ceil(f * T / E) tokens");
      }
      resultTypes.push_back(ids);
    } else if (name == "forced") {
      op.kind = OpKind::Forced;
      expectType(expr, 0, arg(0), operands[0], rawIds, "forced ids");
      requireParam(0, "forced_ids");
      resultTypes.push_back(ids);
    } else if (name == "gather") {
      op.kind = OpKind::Gather;
      expectType(expr, 0, arg(0), operands[0], scores, "scores");
      expectType(expr, 1, arg(1), operands[1], ids, "selected ids");
      resultTypes.push_back(weights);
    } else if (name == "sparsemixer") {
      op.kind = OpKind::Sparsemixer;
      expectType(expr, 0, arg(0), operands[0], scores, "scores");
      expectType(expr, 1, arg(1), operands[1], ids, "selected ids");
      auto it = options.find("jitter_eps");
      if (it == options.end())
        fail(expr.loc, "sparsemixer needs the option 'jitter_eps' (Phi-3.5-MoE "
                       "uses router_jitter_noise, 0.01); " + callee->second);
      op.jitterEps = number(expr, *it->second, "jitter_eps");
      if (op.jitterEps != 0 &&
          (!isNormalF32(op.jitterEps) || op.jitterEps > kMaxF32 / 2))
        fail(it->second->loc, "sparsemixer: jitter_eps = " + it->second->text +
                                  " must be 0 or a normal f32 value at most "
                                  "1.7014117e38 (twice it is compared in f32)");
      resultTypes.push_back(weights);
    } else if (name == "normalize") {
      op.kind = OpKind::Normalize;
      expectType(expr, 0, arg(0), operands[0], weights, "weights");
      if (auto it = options.find("epsilon"); it != options.end()) {
        op.epsilon = number(expr, *it->second, "epsilon");
        if (op.epsilon != 0 && !isNormalF32(op.epsilon))
          fail(it->second->loc, "normalize: epsilon = " + it->second->text +
                                    " must be 0 or a normal f32 value > 0 "
                                    "(it is added in f32)");
      }
      resultTypes.push_back(weights);
    } else if (name == "scale") {
      op.kind = OpKind::Scale;
      expectType(expr, 0, arg(0), operands[0], weights, "weights");
      op.factor = number(expr, arg(1), "the factor");
      if (!isNormalF32(op.factor))
        fail(arg(1).loc, "scale: the factor " + arg(1).text +
                             " must be a normal f32 value > 0 (the weights are "
                             "scaled in f32)");
      resultTypes.push_back(weights);
    } else if (name == "capture") {
      op.kind = OpKind::Capture;
      expectType(expr, 0, arg(0), operands[0], ids, "selected ids");
      ValueType buffer = tensor(abi::captureDType(e),
                                {DimRule::Tokens, DimRule::Layers, DimRule::TopK});
      expectType(expr, 1, arg(1), operands[1], buffer, "capture buffer");
      expectType(expr, 2, arg(2), operands[2], tensor(DType::I64, {}), "layer");
      requireParam(1, "capture");
      requireParam(2, "layer");
      resultTypes.push_back(buffer);
    } else if (name == "shared_gate") {
      op.kind = OpKind::SharedGate;
      requireParam(0, "shared_gate_logits");
      resultTypes.push_back(tensor(DType::F32, {DimRule::Tokens, DimRule::One}));
    } else if (name == "dispatch") {
      placeOnlyIn(EntryKind::Dispatch);
      op.kind = OpKind::Dispatch;
      expectType(expr, 0, arg(0), operands[0], rawIds, "ids");
      op.capacityFactor = positiveOption(
          "capacity_factor", false, "",
          "each expert keeps ceil(f * T * k / E) slots");
      if (op.capacityFactor)
        program.capacityFactor = op.capacityFactor;
      resultTypes = {tensor(DType::I32, {DimRule::Experts}),
                     tensor(DType::I32, {DimRule::ExpertsPlus1}), slots, slots};
    } else if (name == "update_bias") {
      placeOnlyIn(EntryKind::UpdateBias);
      op.kind = OpKind::UpdateBias;
      const ValueType bias = tensor(DType::F32, {DimRule::Experts});
      expectType(expr, 0, arg(0), operands[0], bias, "bias");
      expectType(expr, 1, arg(1), operands[1],
                 tensor(DType::I32, {DimRule::Experts}), "expert loads");
      op.rate = *positiveOption("rate", true,
                                "the step the bias moves by (DeepSeek-V3: "
                                "0.001)",
                                "it is added to the bias in f32");
      resultTypes.push_back(bias);
    } else if (name == "permute") {
      placeOnlyIn(EntryKind::Permute);
      op.kind = OpKind::Permute;
      expectType(expr, 0, arg(0), operands[0],
                 tensor(hidden, {DimRule::Tokens, DimRule::Hidden}), "hidden rows");
      expectType(expr, 1, arg(1), operands[1], slots, "sorted slots");
      resultTypes.push_back(tensor(hidden, {DimRule::Slots, DimRule::Hidden}));
    } else {
      placeOnlyIn(EntryKind::Combine);
      op.kind = OpKind::Combine;
      expectType(expr, 0, arg(0), operands[0],
                 tensor(hidden, {DimRule::Slots, DimRule::Hidden}), "expert outputs");
      expectType(expr, 1, arg(1), operands[1], slots, "slot positions");
      expectType(expr, 2, arg(2), operands[2], weights, "weights");
      resultTypes.push_back(tensor(hidden, {DimRule::Tokens, DimRule::Hidden}));
    }

    // Identity scores keep -inf logits, and a bias keeps them -inf.
    bool negInf = (op.kind == OpKind::Score && op.scoring == Scoring::Identity) ||
                  (op.kind == OpKind::AddBias && mayBeNegInf.count(operands[0]));
    for (ValueType &type : resultTypes) {
      int value = newValue(std::move(type));
      op.results.push_back(value);
      producer[value] = op.kind;
      selectableCount[value] = selectable;
      if (negInf)
        mayBeNegInf.insert(value);
    }
    entry.ops.push_back(op);
    return op.results;
  }

  int64_t selectableOf(int value) const {
    auto it = selectableCount.find(value);
    return it == selectableCount.end() ? shape.numExperts : it->second;
  }

  const ProgramShape &shape;
  Location origin;
  Program program;
  std::map<std::string, int> names;
  std::set<int> params, uses;
  std::map<int, Token> defined;
  std::map<int, OpKind> producer;
  std::map<int, int64_t> selectableCount;
  std::set<int> mayBeNegInf;
  /// The ABI name of each parameter value of the entry being checked.
  std::map<int, std::string> paramNames;

  std::string paramNameOf(int value) const {
    auto it = paramNames.find(value);
    return it == paramNames.end() ? "" : it->second;
  }
};

} // namespace

std::string toString(const ValueType &type) {
  if (type.dims.empty())
    return "index (the layer)";
  std::string text = "[";
  for (size_t i = 0; i < type.dims.size(); ++i)
    text += (i ? ", " : "") + std::string(abi::toString(type.dims[i]));
  text += "] " + std::string(abi::toString(type.dtype));
  if (type.selected)
    text += " (selected ids)";
  return text;
}

const Entry *Program::find(abi::EntryKind kind) const {
  for (const Entry &entry : entries)
    if (entry.kind == kind)
      return &entry;
  return nullptr;
}

std::optional<Program> parseProgram(std::string_view text,
                                    const ProgramShape &shape,
                                    ProgramError &error, Location origin) {
  try {
    return Checker(shape, origin).check(parseSyntax(text, origin));
  } catch (const Failure &failure) {
    error = failure.error;
    return std::nullopt;
  }
}

void applyProgramFacts(const Program &program, RoutingSpec &spec) {
  spec.topK = program.topK;
  const Entry *route = program.find(abi::EntryKind::Route);
  const Entry *hash = program.find(abi::EntryKind::RouteHash);
  const Entry &selection = route ? *route : *hash;
  spec.selection = route ? Selection::TopK : Selection::Hash;
  auto hasParam = [&](std::string_view name) {
    return std::find(selection.paramNames.begin(), selection.paramNames.end(),
                     name) != selection.paramNames.end();
  };
  spec.scoreBias = hasParam("bias");
  spec.capture = hasParam("capture");
  spec.sharedGate = hasParam("shared_gate_logits");
  spec.replay = program.find(abi::EntryKind::Replay) != nullptr;
  spec.dispatch = program.find(abi::EntryKind::Dispatch) != nullptr;
  spec.permute = program.find(abi::EntryKind::Permute) != nullptr;
  spec.unusedSlots = program.unusedSlots;
  spec.expertChoice = program.expertChoice;
  spec.capacityFactor = program.capacityFactor.value_or(0.0);
  spec.updateBias = program.find(abi::EntryKind::UpdateBias) != nullptr;
}

std::string formatNumber(double value) {
  char buffer[40];
  if (value == std::floor(value) && std::fabs(value) < 1e15) {
    std::snprintf(buffer, sizeof buffer, "%.0f", value);
    return buffer;
  }
  // The shortest of %.1g .. %.17g that reads back exactly, with a plain
  // exponent: 1e-06 is written 1e-6.
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buffer, sizeof buffer, "%.*g", precision, value);
    if (std::strtod(buffer, nullptr) == value)
      break;
  }
  std::string text = buffer;
  if (size_t e = text.find('e'); e != std::string::npos) {
    std::string mantissa = text.substr(0, e), exponent = text.substr(e + 1);
    bool negative = exponent[0] == '-';
    size_t digits = exponent.find_first_not_of("+-0");
    text = mantissa + "e" + (negative ? "-" : "") +
           (digits == std::string::npos ? "0" : exponent.substr(digits));
  }
  return text;
}

std::string expandToProgram(const RoutingSpec &spec) {
  std::ostringstream os;
  auto score = [&] {
    os << "  s = " << toString(spec.scoring) << "(logits";
    if (spec.temperature != 1.0)
      os << ", temperature: " << formatNumber(spec.temperature);
    if (spec.logitSoftcap != 0.0)
      os << ", softcap: " << formatNumber(spec.logitSoftcap);
    os << ")\n";
  };
  // The weights: gather, then normalize and scale when the spec has them.
  auto weights = [&] {
    std::string w = "gather(s, ids)";
    if (spec.normalize)
      w = "normalize(" + w +
          (spec.normalizeEpsilon != kNormalizeEpsilon
               ? ", epsilon: " + formatNumber(spec.normalizeEpsilon)
               : "") +
          ")";
    if (spec.scalingFactor != 1.0)
      w = "scale(" + w + ", " + formatNumber(spec.scalingFactor) + ")";
    os << "  weights = " << w << "\n";
  };
  const bool hash = spec.selection == Selection::Hash;
  os << (hash ? "route_hash(logits, token_ids, hash_table"
              : spec.scoreBias ? "route(logits, bias" : "route(logits");
  if (spec.capture)
    os << ", capture, layer";
  if (spec.sharedGate)
    os << ", shared_gate_logits";
  os << ") -> (ids, weights" << (spec.sharedGate ? ", gate" : "")
     << (spec.capture ? ", captured" : "") << "):\n";
  auto sharedGate = [&] {
    if (spec.sharedGate)
      os << "  gate = shared_gate(shared_gate_logits)\n";
  };
  score();
  if (hash) {
    os << "  ids = hash(token_ids, hash_table, " << spec.topK << ")\n";
  } else {
    std::string keys = spec.scoreBias ? "s + bias" : "s";
    if (spec.isGrouped()) {
      os << "  c = group_mask(" << keys << ", groups: " << spec.groups
         << ", keep: " << spec.topkGroups << ", by: " << toString(spec.groupScore)
         << ")\n";
      keys = "c";
    }
    os << "  ids = topk(" << keys << ", " << spec.topK << ")\n";
  }
  weights();
  sharedGate();
  if (spec.capture)
    os << "  captured = capture(ids, capture, layer)\n";
  if (spec.replay) {
    os << "replay(logits, forced_ids"
       << (spec.sharedGate ? ", shared_gate_logits" : "") << ") -> (ids, weights"
       << (spec.sharedGate ? ", gate" : "") << "):\n";
    score();
    os << "  ids = forced(forced_ids)\n";
    weights();
    sharedGate();
  }
  if (spec.dispatch)
    os << "dispatch(topk_ids) -> (counts, offsets, sorted_slots, "
          "slot_positions):\n"
          "  counts, offsets, sorted_slots, slot_positions = "
          "dispatch(topk_ids)\n";
  if (spec.permute)
    os << "permute(hidden, sorted_slots) -> permuted:\n"
          "  permuted = permute(hidden, sorted_slots)\n"
          "combine(topk_weights, slot_positions, expert_output) -> combined:\n"
          "  combined = combine(expert_output, slot_positions, topk_weights)\n";
  return os.str();
}

RoutingSpec programTwin(const RoutingSpec &spec) {
  if (spec.isProgram())
    return spec;
  RoutingSpec twin;
  twin.name = spec.name;
  twin.numExperts = spec.numExperts;
  twin.logitsDType = spec.logitsDType;
  twin.hiddenDType = spec.hiddenDType;
  twin.hiddenSize = spec.hiddenSize;
  twin.topK = spec.topK;
  twin.selection = spec.selection;
  twin.scoreBias = spec.scoreBias && spec.selection == Selection::TopK;
  twin.capture = spec.capture;
  twin.sharedGate = spec.sharedGate;
  twin.replay = spec.replay;
  twin.dispatch = spec.dispatch;
  twin.permute = spec.permute;
  twin.unusedSlots = spec.unusedSlots;
  twin.expertChoice = spec.expertChoice;
  twin.capacityFactor = spec.capacityFactor;
  twin.updateBias = spec.updateBias;
  twin.program = expandToProgram(spec);
  return twin;
}

} // namespace moegen::program
