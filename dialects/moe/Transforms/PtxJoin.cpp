//===- PtxJoin.cpp - One PTX module from kernels compiled apart -----------===//
//
// Works on the text the NVPTX backend prints: a header, then module-scope
// statements, each starting at column 0 with a directive and ending with
// `;` or with its body's closing brace. Anything else is refused, and the
// caller serializes the module whole.
//
//===----------------------------------------------------------------------===//

#include "dialects/moe/Transforms/PtxJoin.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringRef.h"

#include <utility>
#include <vector>

using llvm::StringRef;

namespace {

/// One module-scope PTX statement: a declaration, or a function with its
/// body, with the comments and blank lines before it.
struct PtxStatement {
  std::string symbol;
  std::string leading; // comments and blank lines
  std::string text;
};

/// The symbol a module-scope statement declares or defines: for a function
/// the name before its parameter list (past a return parameter in
/// parentheses), for a variable the name before `[`, `=` or `;`.
std::string declaredSymbol(StringRef firstLine) {
  StringRef line = firstLine.trim();
  bool isFunction = line.contains(".entry") || line.contains(".func");
  if (isFunction) {
    size_t keyword = line.find(".entry");
    keyword = keyword == StringRef::npos ? line.find(".func") : keyword;
    StringRef rest = line.drop_front(keyword).split(' ').second.ltrim();
    if (rest.starts_with("(")) // the return parameter
      rest = rest.split(')').second.ltrim();
    return rest.take_until([](char c) { return c == '(' || c == ' '; }).str();
  }
  StringRef head = line.take_until(
      [](char c) { return c == '[' || c == '=' || c == ';'; });
  return head.rtrim().rsplit(' ').second.str();
}

/// Splits PTX into its header (up to and including `.address_size`) and its
/// module-scope statements; nullopt when the text is not laid out as the
/// NVPTX backend prints it.
std::optional<std::pair<std::string, std::vector<PtxStatement>>>
splitPtx(StringRef ptx) {
  llvm::SmallVector<StringRef> lines;
  ptx.split(lines, '\n');
  std::string header;
  size_t i = 0;
  for (; i < lines.size(); ++i) {
    header += lines[i].str() + "\n";
    if (lines[i].starts_with(".address_size"))
      break;
  }
  if (i == lines.size())
    return std::nullopt;
  std::vector<PtxStatement> statements;
  std::string pending; // comments and blank lines before a statement
  PtxStatement current;
  bool inStatement = false;
  int braces = 0, parens = 0;
  bool sawBody = false;
  for (++i; i < lines.size(); ++i) {
    StringRef line = lines[i];
    StringRef trimmed = line.trim();
    if (!inStatement) {
      if (trimmed.empty() || trimmed.starts_with("//")) {
        pending += line.str() + "\n";
        continue;
      }
      if (!trimmed.starts_with("."))
        return std::nullopt;
      inStatement = true;
      current = PtxStatement{declaredSymbol(trimmed), std::move(pending), ""};
      pending.clear();
      braces = parens = 0;
      sawBody = false;
    }
    current.text += line.str() + "\n";
    StringRef code = line.split("//").first; // comments may hold anything
    for (char c : code) {
      braces += c == '{';
      braces -= c == '}';
      parens += c == '(';
      parens -= c == ')';
      sawBody |= c == '{';
    }
    if (braces < 0 || parens < 0)
      return std::nullopt;
    StringRef codeEnd = code.rtrim();
    bool ends = braces == 0 && parens == 0 &&
                (codeEnd.ends_with(";") || (sawBody && codeEnd.ends_with("}")));
    if (ends) {
      if (current.symbol.empty())
        return std::nullopt;
      statements.push_back(std::move(current));
      inStatement = false;
    }
  }
  if (inStatement)
    return std::nullopt;
  // Trailing comments and blank lines belong to no statement; dropped.
  return std::make_pair(std::move(header), std::move(statements));
}

} // namespace

std::optional<std::string>
mlir::moe::joinPtx(llvm::ArrayRef<std::string> parts) {
  std::string header;
  std::string joined;
  llvm::StringMap<std::string> declared;
  for (const std::string &part : parts) {
    auto split = splitPtx(part);
    if (!split)
      return std::nullopt;
    if (header.empty()) {
      header = split->first;
      joined = header;
    } else if (split->first != header) {
      return std::nullopt;
    }
    std::string leading; // of statements dropped as repeats
    for (PtxStatement &statement : split->second) {
      auto [it, inserted] = declared.try_emplace(statement.symbol,
                                                 statement.text);
      if (!inserted) {
        if (it->second != statement.text)
          return std::nullopt;
        leading += statement.leading;
        continue;
      }
      joined += leading + statement.leading + statement.text;
      leading.clear();
    }
  }
  return joined;
}

std::optional<std::string> mlir::moe::selectAndRenameKernels(
    const std::string &ptx,
    llvm::ArrayRef<std::pair<std::string, std::string>> renames) {
  auto split = splitPtx(ptx);
  if (!split)
    return std::nullopt;
  std::string out = split->first;
  size_t renamed = 0;
  for (PtxStatement &statement : split->second) {
    StringRef firstLine = StringRef(statement.text).split('\n').first;
    if (!firstLine.contains(".entry")) {
      out += statement.leading + statement.text;
      continue;
    }
    const auto *rename = llvm::find_if(renames, [&](const auto &pair) {
      return pair.first == statement.symbol;
    });
    if (rename == renames.end())
      continue;
    // The name follows `.entry` and precedes the parameter list.
    size_t entry = statement.text.find(".entry");
    size_t name = statement.text.find(statement.symbol, entry);
    if (name == std::string::npos)
      return std::nullopt;
    statement.text.replace(name, statement.symbol.size(), rename->second);
    out += statement.leading + statement.text;
    ++renamed;
  }
  if (renamed != renames.size())
    return std::nullopt;
  return out;
}
