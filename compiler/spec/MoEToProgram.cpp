//===- MoEToProgram.cpp - moe dialect IR as a router source ---------------===//
//
// One program line per op: each moe op is written as the call that builds
// it (Program.h), its operands named by the kernel ABI (entry arguments) or
// by the op's own result names (scores, ids, weights, ...). The program is then checked like any other, and
// a broken rule is reported at the op the line came from.
//
//===----------------------------------------------------------------------===//

#include "compiler/spec/MoEToProgram.h"

#include "compiler/spec/Program.h"
#include "compiler/spec/SpecParser.h"
#include "compiler/spec/SpecToMoE.h"
#include "dialects/moe/IR/MoEDialect.h"
#include "dialects/moe/IR/MoEOps.h"
#include "support/Quote.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <map>
#include <set>

using namespace mlir;

namespace moegen {

namespace {

/// "FILE:LINE:COL" of `loc` (through names and call sites), or "" when it
/// carries no file position.
std::string positionOf(Location loc) {
  if (auto file = dyn_cast<FileLineColLoc>(loc))
    return support::quotePath(file.getFilename().str()) + ":" +
           std::to_string(file.getLine()) + ":" +
           std::to_string(file.getColumn());
  if (auto name = dyn_cast<NameLoc>(loc))
    return positionOf(name.getChildLoc());
  if (auto fused = dyn_cast<FusedLoc>(loc))
    for (Location inner : fused.getLocations())
      if (std::string text = positionOf(inner); !text.empty())
        return text;
  if (auto call = dyn_cast<CallSiteLoc>(loc))
    return positionOf(call.getCallee());
  return "";
}

struct RaiseError {
  Location loc;
  std::string message;
};

std::optional<LogitsDType> dtypeOf(Type type) {
  if (type.isF32())
    return LogitsDType::F32;
  if (type.isBF16())
    return LogitsDType::BF16;
  if (type.isF16())
    return LogitsDType::F16;
  return std::nullopt;
}

class Raiser {
public:
  explicit Raiser(ModuleOp module) : module(module) {
    // What the program derives unused_slots from, read once.
    module.walk([&](Operation *op) {
      hasDynamicK |= isa<mlir::moe::TopPOp, mlir::moe::ExpertChoiceOp>(op);
    });
    module.walk([&](mlir::moe::DispatchOp dispatch) {
      hasCapacity |= dispatch.getCapacityFactor().has_value();
    });
  }

  std::optional<RoutingSpec> raise(std::string &error) {
    std::optional<RoutingSpec> spec;
    try {
      spec = raiseOrThrow();
    } catch (const RaiseError &failure) {
      std::string position = positionOf(failure.loc);
      error = (position.empty() ? std::string("<module>") : position) +
              ": error: " + failure.message;
      return std::nullopt;
    }
    return spec;
  }

private:
  [[noreturn]] static void fail(Location loc, const std::string &message) {
    throw RaiseError{loc, message};
  }

  RoutingSpec raiseOrThrow() {
    RoutingSpec spec;
    if (!module.getSymName())
      fail(module.getLoc(), "the module needs the router's name: "
                            "'module @my_router { ... }'");
    spec.name = module.getSymName()->str();

    std::vector<func::FuncOp> entries;
    for (Operation &op : module.getBody()->getOperations()) {
      auto func = dyn_cast<func::FuncOp>(op);
      if (!func)
        fail(op.getLoc(), "'" + op.getName().getStringRef().str() +
                              "': a router module holds only entry "
                              "functions (func.func with moe.entry)");
      auto entryAttr = func->getAttrOfType<StringAttr>(mlir::moe::kEntryAttrName);
      if (!entryAttr)
        fail(func.getLoc(), "func @" + func.getSymName().str() +
                                " has no moe.entry attribute: every function "
                                "of a router module is an entry point");
      std::optional<abi::EntryKind> kind =
          abi::parseEntryKind(entryAttr.getValue().str());
      if (!kind)
        fail(func.getLoc(), "func @" + func.getSymName().str() +
                                ": moe.entry = \"" +
                                entryAttr.getValue().str() +
                                "\" is not an entry point; entry points are "
                                "route, route_hash, replay, dispatch, "
                                "permute, combine");
      if (func.getSymName() != entryAttr.getValue())
        fail(func.getLoc(), "func @" + func.getSymName().str() +
                                ": an entry function is named after its "
                                "entry point, @" +
                                entryAttr.getValue().str());
      if (func.isExternal())
        fail(func.getLoc(), "func @" + func.getSymName().str() +
                                " has no body");
      entries.push_back(func);
    }

    // E and the logits dtype come from the route entry's logits, the
    // hidden dtype from permute's rows; every function's type is then
    // compared with the one the program builds.
    for (func::FuncOp func : entries) {
      StringRef name = func.getSymName();
      auto first = func.getNumArguments()
                       ? dyn_cast<RankedTensorType>(func.getArgumentTypes()[0])
                       : RankedTensorType();
      if ((name == "route" || name == "route_hash") && first &&
          first.getRank() == 2 && !ShapedType::isDynamic(first.getDimSize(1)) &&
          dtypeOf(first.getElementType())) {
        spec.numExperts = first.getDimSize(1);
        spec.logitsDType = *dtypeOf(first.getElementType());
      }
      if (name == "permute" && first && dtypeOf(first.getElementType()))
        spec.hiddenDType = *dtypeOf(first.getElementType());
    }
    if (!spec.numExperts)
      fail(module.getLoc(), "the module has no route entry with logits "
                            "[T, E]: every router needs func @route or "
                            "@route_hash (moe.entry) taking tensor<?xEx...>");

    std::string text;
    for (func::FuncOp func : entries)
      text += raiseEntry(func, spec.numExperts);

    program::ProgramError programError;
    std::optional<program::Program> program = program::parseProgram(
        text, {spec.numExperts, spec.logitsDType, spec.hiddenDType},
        programError);
    if (!program)
      fail(lineLocs.count(programError.loc.line)
               ? lineLocs.at(programError.loc.line)
               : module.getLoc(),
           programError.message);
    spec.program = text;
    program::applyProgramFacts(*program, spec);
    for (auto [op, loc] : permuteKs)
      if (op != program->topK)
        fail(loc, "moe.permute: k " + std::to_string(op) +
                      " differs from the router's k = " +
                      std::to_string(program->topK));
    if (std::optional<SpecViolation> violation = validateRoutingSpec(spec))
      fail(module.getLoc(), violation->message);
    // The raise is exact: the program builds these very signatures.
    OwningOpRef<ModuleOp> rebuilt =
        buildRouterModule(spec, *module.getContext());
    for (func::FuncOp func : entries) {
      auto twin = rebuilt->lookupSymbol<func::FuncOp>(func.getSymName());
      if (twin && twin.getFunctionType() == func.getFunctionType())
        continue;
      std::string expected;
      llvm::raw_string_ostream os(expected);
      if (twin)
        os << twin.getFunctionType();
      fail(func.getLoc(),
           "func @" + func.getSymName().str() + ": its type is not the " +
               "router's " + expected +
               " (E, k and the dtypes come from @route's logits and "
               "selection, and @permute's rows)");
    }
    return spec;
  }

  /// The ABI names of `func`'s arguments: its entry point's inputs, the
  /// optional groups (bias; capture and layer) present or not by count.
  std::vector<std::string> parameterNames(func::FuncOp func,
                                          abi::EntryKind kind) {
    std::vector<std::vector<std::string>> groups;
    std::vector<bool> optional;
    for (const abi::ArgSpec &arg : abi::entrySignature(kind)) {
      if ((arg.role != abi::ArgRole::Tensor && arg.role != abi::ArgRole::Scalar) ||
          arg.access == abi::Access::Write)
        continue;
      // The layer goes with the capture buffer.
      if (arg.name == "layer" && !groups.empty()) {
        groups.back().emplace_back(arg.name);
        continue;
      }
      groups.push_back({std::string(arg.name)});
      optional.push_back(!arg.required);
    }
    std::string signature;
    for (size_t mask = 0; mask < (size_t(1) << groups.size()); ++mask) {
      std::vector<std::string> names;
      bool valid = true;
      for (size_t g = 0; g < groups.size(); ++g) {
        bool present = mask & (size_t(1) << g);
        if (!present && !optional[g])
          valid = false;
        if (present)
          names.insert(names.end(), groups[g].begin(), groups[g].end());
      }
      if (!valid)
        continue;
      // Optional inputs of equal count (a bias [E] or the shared gate's
      // logits [T, 1]) are told apart by their ranks.
      auto fits = [&] {
        for (auto [index, name] : llvm::enumerate(names)) {
          const abi::ArgSpec *arg = abi::findArg(kind, name);
          Type type = func.getArgumentTypes()[index];
          auto tensor = dyn_cast<RankedTensorType>(type);
          if (arg->role == abi::ArgRole::Scalar ? !isa<IndexType>(type)
                                                : !tensor ||
                                                      tensor.getRank() !=
                                                          arg->rank)
            return false;
        }
        return true;
      };
      if (names.size() == func.getNumArguments() && fits())
        return names;
      std::string list;
      for (const std::string &n : names)
        list += (list.empty() ? "" : ", ") + n;
      signature += (signature.empty() ? "" : " or ") + ("(" + list + ")");
    }
    fail(func.getLoc(), "func @" + func.getSymName().str() + " takes " +
                            std::to_string(func.getNumArguments()) +
                            " arguments; the kernel ABI's " +
                            func.getSymName().str() + " takes " + signature);
  }

  std::string raiseEntry(func::FuncOp func, int64_t numExperts) {
    abi::EntryKind kind = *abi::parseEntryKind(func.getSymName().str());
    std::vector<std::string> params = parameterNames(func, kind);
    names.clear();
    // No value may take a parameter's name.
    taken = std::set<std::string>(params.begin(), params.end());
    std::string header = func.getSymName().str() + "(";
    for (auto [index, name] : llvm::enumerate(params)) {
      names[func.getArgument(index)] = name;
      header += (index ? ", " : "") + name;
    }
    header += ") -> (";

    std::string body;
    auto line = [&](Operation *op, const std::string &statement) {
      body += "  " + statement + "\n";
      lineLocs.emplace(++lineNo, op->getLoc());
    };
    lineLocs.emplace(++lineNo, func.getLoc());
    func::ReturnOp returnOp;
    for (Operation &op : func.getBody().front()) {
      if (auto ret = dyn_cast<func::ReturnOp>(op)) {
        returnOp = ret;
        continue;
      }
      auto experts = [&](int64_t value) {
        if (value != numExperts)
          fail(op.getLoc(), op.getName().getStringRef().str() + ": experts " +
                                std::to_string(value) +
                                " differs from the router's E = " +
                                std::to_string(numExperts) +
                                " (the logits' second dimension)");
      };
      std::vector<std::string> results;
      for (Value result : op.getResults())
        results.push_back(names[result] = freshName(result));
      auto operand = [&](unsigned i) { return nameOf(op.getOperand(i), op); };
      // The program derives unused_slots from the route's selection: an op
      // that says otherwise cannot be written as a program.
      // Permute and combine also meet the slots a capacity drops.
      auto unusedSlots = [&](bool given, bool rows = false) {
        bool derived = hasDynamicK || (rows && hasCapacity);
        if (given != derived)
          fail(op.getLoc(),
               op.getName().getStringRef().str() +
                   (given ? std::string(rows ? ": unused_slots without a "
                                               "moe.topp or moe.expert_choice "
                                               "selection or a dispatch "
                                               "capacity (only they leave "
                                               "slots without an expert row)"
                                             : ": unused_slots without a "
                                               "moe.topp or moe.expert_choice "
                                               "selection (only they leave "
                                               "slots unused)")
                          : std::string(hasDynamicK ? ": a moe.topp or "
                                               "moe.expert_choice router's "
                                               "ids may hold -1"
                                             : ": a dispatch with a capacity "
                                               "drops slots") +
                                ": it needs unused_slots"));
      };
      auto number = [](std::optional<double> v) {
        return program::formatNumber(*v);
      };
      std::string call =
          llvm::TypeSwitch<Operation *, std::string>(&op)
              .Case([&](mlir::moe::ScoreOp score) {
                std::string text =
                    stringifyScoringKind(score.getKind()).str() + "(" + operand(0);
                if (auto t = score.getTemperature())
                  text += ", temperature: " + number(t->convertToDouble());
                if (auto c = score.getSoftcap())
                  text += ", softcap: " + number(c->convertToDouble());
                return text + ")";
              })
              .Case([&](mlir::moe::AddBiasOp) {
                return "add_bias(" + operand(0) + ", " + operand(1) + ")";
              })
              .Case([&](mlir::moe::GroupMaskOp mask) {
                return "group_mask(" + operand(0) +
                       ", groups: " + std::to_string(mask.getGroups()) +
                       ", keep: " + std::to_string(mask.getKeep()) + ", by: " +
                       stringifyGroupScoreKind(mask.getGroupScore()).str() + ")";
              })
              .Case([&](mlir::moe::TopKOp topk) {
                return "topk(" + operand(0) + ", " + std::to_string(topk.getK()) +
                       ")";
              })
              .Case([&](mlir::moe::TopPOp topp) {
                return "topp(" + operand(0) + ", " + std::to_string(topp.getK()) +
                       ", p: " + program::formatNumber(topp.getP().convertToDouble()) +
                       ")";
              })
              .Case([&](mlir::moe::ExpertChoiceOp choice) {
                return "expert_choice(" + operand(0) + ", " +
                       std::to_string(choice.getK()) + ", capacity_factor: " +
                       program::formatNumber(
                           choice.getCapacityFactor().convertToDouble()) +
                       ")";
              })
              .Case([&](mlir::moe::HashSelectOp hash) {
                experts(hash.getExperts());
                auto ids = cast<RankedTensorType>(hash.getType());
                return "hash(" + operand(0) + ", " + operand(1) + ", " +
                       std::to_string(ids.getDimSize(1)) + ")";
              })
              .Case([&](mlir::moe::ForcedSelectOp forced) {
                experts(forced.getExperts());
                unusedSlots(forced.getUnusedSlots());
                return "forced(" + operand(0) + ")";
              })
              .Case([&](mlir::moe::GatherOp) {
                return "gather(" + operand(0) + ", " + operand(1) + ")";
              })
              .Case([&](mlir::moe::NormalizeOp normalize) {
                double epsilon = normalize.getEpsilon().convertToDouble();
                return "normalize(" + operand(0) +
                       (epsilon == kNormalizeEpsilon
                            ? std::string()
                            : ", epsilon: " + program::formatNumber(epsilon)) +
                       ")";
              })
              .Case([&](mlir::moe::SparsemixerOp mixer) {
                return "sparsemixer(" + operand(0) + ", " + operand(1) +
                       ", jitter_eps: " +
                       program::formatNumber(
                           mixer.getJitterEps().convertToDouble()) +
                       ")";
              })
              .Case([&](mlir::moe::ScaleOp scale) {
                return "scale(" + operand(0) + ", " +
                       program::formatNumber(scale.getFactor().convertToDouble()) +
                       ")";
              })
              .Case([&](mlir::moe::SharedGateOp) {
                return "shared_gate(" + operand(0) + ")";
              })
              .Case([&](mlir::moe::CaptureOp capture) {
                experts(capture.getExperts());
                return "capture(" + operand(0) + ", " + operand(1) + ", " +
                       operand(2) + ")";
              })
              .Case([&](mlir::moe::DispatchOp dispatch) {
                experts(dispatch.getExperts());
                unusedSlots(dispatch.getUnusedSlots());
                std::string text = "dispatch(" + operand(0);
                if (auto f = dispatch.getCapacityFactor())
                  text += ", capacity_factor: " +
                          program::formatNumber(f->convertToDouble());
                return text + ")";
              })
              .Case([&](mlir::moe::PermuteOp permute) {
                permuteKs.emplace_back(permute.getK(), permute.getLoc());
                unusedSlots(permute.getUnusedSlots(), /*rows=*/true);
                return "permute(" + operand(0) + ", " + operand(1) + ")";
              })
              .Case([&](mlir::moe::UpdateBiasOp update) {
                return "update_bias(" + operand(0) + ", " + operand(1) +
                       ", rate: " +
                       program::formatNumber(update.getRate().convertToDouble()) +
                       ")";
              })
              .Case([&](mlir::moe::CombineOp combine) {
                unusedSlots(combine.getUnusedSlots(), /*rows=*/true);
                return "combine(" + operand(0) + ", " + operand(1) + ", " +
                       operand(2) + ")";
              })
              .Default([&](Operation *other) -> std::string {
                fail(other->getLoc(),
                     "'" + other->getName().getStringRef().str() +
                         "': an entry point holds moe ops and func.return "
                         "only (the ops a gating program can write)");
              });
      std::string targets;
      for (const std::string &result : results)
        targets += (targets.empty() ? "" : ", ") + result;
      line(&op, targets + " = " + call);
    }
    if (!returnOp)
      fail(func.getLoc(), "func @" + func.getSymName().str() +
                              " does not end in func.return");
    for (auto [index, value] : llvm::enumerate(returnOp.getOperands()))
      header += (index ? ", " : "") + nameOf(value, *returnOp);
    header += "):\n";
    return header + body;
  }

  /// The op's own name for `result` (its asm name: scores, ids, ...),
  /// made unique within the entry; v1, v2, ... for ops without one.
  std::string freshName(Value result) {
    std::string base;
    if (auto asmOp = dyn_cast<OpAsmOpInterface>(result.getDefiningOp()))
      asmOp.getAsmResultNames([&](Value value, StringRef name) {
        if (value == result)
          base = name.str();
      });
    if (base.empty())
      base = "v";
    std::string name = base;
    for (int suffix = 1; taken.count(name); ++suffix)
      name = base + "_" + std::to_string(suffix);
    taken.insert(name);
    return name;
  }

  std::string nameOf(Value value, Operation &user) {
    auto it = names.find(value);
    if (it == names.end())
      fail(user.getLoc(), "an operand comes from outside the entry "
                          "function");
    return it->second;
  }

  ModuleOp module;
  /// The module selects by top-p or expert choice (ids may hold -1); a
  /// dispatch has a capacity.
  bool hasDynamicK = false, hasCapacity = false;
  llvm::DenseMap<Value, std::string> names;
  std::set<std::string> taken;
  /// The op each program line was written from, for error locations.
  std::map<int, Location> lineLocs;
  int lineNo = 0;
  std::vector<std::pair<int64_t, Location>> permuteKs;
};

} // namespace

std::optional<RoutingSpec> raiseRouterModule(ModuleOp module,
                                             std::string &error) {
  return Raiser(module).raise(error);
}

bool isIRPath(llvm::StringRef path) { return path.ends_with(".mlir"); }

std::optional<RoutingSpec> parseRouterFile(llvm::StringRef path,
                                           std::string &error) {
  if (!isIRPath(path))
    return parseRoutingSpecFile(path, error);
  // As for specs: a regular file of bounded size, read once.
  constexpr uint64_t kMaxModuleBytes = 16 << 20;
  auto fail = [&](const llvm::Twine &message) {
    error = support::quotePath(path.str()) + ": error: " + message.str();
    return std::nullopt;
  };
  llvm::sys::fs::file_status status;
  if (std::error_code ec = llvm::sys::fs::status(path, status))
    return fail("cannot read the module: " + ec.message());
  if (status.type() != llvm::sys::fs::file_type::regular_file)
    return fail("cannot read the module: not a regular file");
  if (status.getSize() > kMaxModuleBytes)
    return fail("the module is " + llvm::Twine(status.getSize()) +
                " bytes; router modules are at most 16 MiB");
  llvm::ErrorOr<std::unique_ptr<llvm::MemoryBuffer>> file =
      llvm::MemoryBuffer::getFile(path, /*IsText=*/true);
  if (std::error_code ec = file.getError())
    return fail("cannot read the module: " + ec.message());

  DialectRegistry registry;
  registry.insert<mlir::moe::MoEDialect, func::FuncDialect>();
  MLIRContext context(registry);
  context.loadAllAvailableDialects();
  // MLIR's located diagnostic, the first error, on one line.
  std::string first;
  ScopedDiagnosticHandler handler(&context, [&](Diagnostic &diag) {
    if (diag.getSeverity() == DiagnosticSeverity::Error && first.empty()) {
      std::string message = diag.str();
      std::replace(message.begin(), message.end(), '\n', ' ');
      std::string position = positionOf(diag.getLocation());
      first = (position.empty() ? support::quotePath(path.str()) : position) +
              ": error: " + message;
    }
    return success();
  });
  llvm::SourceMgr sourceMgr;
  sourceMgr.AddNewSourceBuffer(std::move(*file), llvm::SMLoc());
  OwningOpRef<ModuleOp> module =
      parseSourceFile<ModuleOp>(sourceMgr, ParserConfig(&context));
  if (!module) {
    error = first.empty() ? support::quotePath(path.str()) +
                                ": error: not a moe dialect module"
                          : first;
    return std::nullopt;
  }
  return raiseRouterModule(*module, error);
}

} // namespace moegen
