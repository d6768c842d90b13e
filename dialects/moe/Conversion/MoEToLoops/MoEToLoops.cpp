//===- MoEToLoops.cpp - Fuse each entry point into a kernel over tokens ---===//
//
// Not a pattern-based conversion: every row-wise op of an entry point must
// land in the same loop over tokens, reading its operands' rows from where
// the producer left them, so the pass walks the entry's ops in order and
// emits each into that loop (RowCodegen.h). The op families are lowered in
// their own files; this file owns the kernel ABI: the new signature, each
// argument stamped with its `#moe.kernel_arg` from the catalogue of
// abi/KernelAbi.h, the token loop, and the copy of result rows to the output
// arguments.
//
//===----------------------------------------------------------------------===//

#include "dialects/moe/Conversion/MoEToLoops/RowCodegen.h"
#include "dialects/moe/Conversion/Passes.h"
#include "dialects/moe/IR/MoEAttrs.h"
#include "dialects/moe/IR/MoEDialect.h"
#include "dialects/moe/Transforms/KernelConfigHeuristics.h"

#include "abi/KernelAbi.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "llvm/ADT/TypeSwitch.h"

namespace mlir::moe {
#define GEN_PASS_DEF_CONVERTMOETOLOOPS
#include "dialects/moe/Conversion/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::loops;

namespace {

MemRefType toMemRef(RankedTensorType type) {
  return MemRefType::get(type.getShape(), type.getElementType());
}

/// How each result of an entry reaches the caller: written to a new output
/// argument, or updated in place in the argument it is tied to (capture).
struct ResultPlan {
  Value value;
  std::optional<unsigned> tiedArgument;
  /// A fused dispatch's output: written after the token loop, not per token.
  bool fromDispatch = false;
};

/// The ABI name of an entry argument, from the op operand that reads it; ""
/// when no moe op names it.
std::string abiNameOfArgument(BlockArgument arg) {
  for (OpOperand &use : arg.getUses()) {
    Operation *user = use.getOwner();
    unsigned index = use.getOperandNumber();
    std::string name =
        llvm::TypeSwitch<Operation *, std::string>(user)
            .Case([&](ScoreOp) { return "logits"; })
            .Case([&](SharedGateOp) { return "shared_gate_logits"; })
            .Case([&](AddBiasOp) { return index == 1 ? "bias" : ""; })
            .Case([&](HashSelectOp) {
              return index == 0 ? "token_ids" : "hash_table";
            })
            .Case([&](ForcedSelectOp) { return "forced_ids"; })
            .Case([&](CaptureOp) {
              return index == 1 ? "capture" : index == 2 ? "layer" : "";
            })
            .Case([&](DispatchOp) { return "topk_ids"; })
            .Case([&](UpdateBiasOp) {
              return index == 0 ? "bias" : "expert_counts";
            })
            .Case([&](PermuteOp) {
              return index == 0 ? "hidden" : "sorted_slots";
            })
            .Case([&](CombineOp) {
              return index == 0   ? "expert_output"
                     : index == 1 ? "slot_positions"
                                  : "topk_weights";
            })
            .Default([](Operation *) { return ""; });
    if (!name.empty())
      return name;
  }
  return "";
}

/// The ABI name of an entry result, from the op that computes it.
std::string abiNameOfResult(Value result) {
  Operation *op = result.getDefiningOp();
  if (!op)
    return "";
  if (auto dispatch = dyn_cast<DispatchOp>(op)) {
    static const char *const kNames[] = {"expert_counts", "expert_offsets",
                                         "sorted_slots", "slot_positions"};
    return kNames[cast<OpResult>(result).getResultNumber()];
  }
  return llvm::TypeSwitch<Operation *, std::string>(op)
      .Case<TopKOp, TopPOp, ExpertChoiceOp, HashSelectOp, ForcedSelectOp>(
          [](Operation *) { return "topk_ids"; })
      .Case<GatherOp, NormalizeOp, ScaleOp, SparsemixerOp>(
          [](Operation *) { return "topk_weights"; })
      .Case([](SharedGateOp) { return "shared_gate"; })
      .Case([](UpdateBiasOp) { return "updated_bias"; })
      .Case([](PermuteOp) { return "permuted"; })
      .Case([](CombineOp) { return "combined"; })
      .Default([](Operation *) { return ""; });
}

class EntryConverter {
public:
  EntryConverter(func::FuncOp func, int64_t hostPrefetchBytes)
      : func(func), hostPrefetchBytes(hostPrefetchBytes) {}

  LogicalResult convert() {
    KernelConfigAttr config = getKernelConfig(func);
    if (!config)
      return func.emitOpError("needs 'moe.kernel_config' to be lowered: run "
                              "-moe-kernel-config first");
    vectorWidth = config.getVectorWidth();
    topkMethod = config.getTopk();
    target = config.getTarget();
    auto entryName = func->getAttrOfType<StringAttr>(kEntryAttrName);
    std::optional<moegen::abi::EntryKind> kind =
        moegen::abi::parseEntryKind(entryName.getValue());
    if (!kind)
      return func.emitOpError("unknown entry kind ") << entryName;
    entryKind = *kind;
    if (!func.getBody().hasOneBlock())
      return func.emitOpError("entry point must have a single block");
    Block &body = func.getBody().front();
    auto ret = cast<func::ReturnOp>(body.getTerminator());

    for (BlockArgument arg : body.getArguments())
      if (!isa<RankedTensorType, IndexType>(arg.getType()))
        return func.emitOpError("argument #")
               << arg.getArgNumber() << " has type " << arg.getType()
               << ": entry points take ranked tensors and indices";
    for (Value result : ret.getOperands()) {
      ResultPlan plan{result, std::nullopt,
                      isa_and_nonnull<DispatchOp>(result.getDefiningOp())};
      if (auto capture = result.getDefiningOp<CaptureOp>()) {
        auto buffer = dyn_cast<BlockArgument>(capture.getBuffer());
        if (!buffer)
          return capture.emitOpError(
              "buffer must be an argument of the entry point");
        plan.tiedArgument = buffer.getArgNumber();
      } else if (isa<BlockArgument>(result)) {
        return func.emitOpError("returns an argument unchanged; entry results "
                                "must be computed by moe ops");
      }
      results.push_back(plan);
    }

    if (failed(planArguments(body)))
      return failure();

    SmallVector<DispatchOp> dispatches(body.getOps<DispatchOp>());
    if (func->hasAttr(kFusedDispatchAttrName)) {
      // A route with a fused dispatch (moe-fuse-dispatch): the dispatch
      // sorts the entry's ids after the token loop, its results last.
      if (dispatches.size() != 1 || target != KernelTarget::Nvptx ||
          !llvm::equal(ret.getOperands().take_back(4),
                       dispatches.front().getResults()) ||
          &*std::prev(body.end(), 2) != dispatches.front().getOperation())
        return func.emitOpError("'")
               << kFusedDispatchAttrName
               << "' needs an nvptx entry that ends in one moe.dispatch, "
                  "its results returned last";
      fusedDispatch = dispatches.front();
      if (!body.getOps<ExpertChoiceOp>().empty())
        return fusedDispatch.emitOpError(
            "cannot follow an expert choice in one kernel");
    } else if (!dispatches.empty()) {
      if (std::distance(body.begin(), body.end()) != 2 ||
          ret.getOperands() != dispatches.front().getResults())
        return dispatches.front().emitOpError(
            "spans tokens and must be alone in its entry point, its results "
            "returned in order");
      return convertDispatch(dispatches.front());
    }
    for (Operation &op : body.without_terminator()) {
      auto update = dyn_cast<UpdateBiasOp>(op);
      if (!update)
        continue;
      if (std::distance(body.begin(), body.end()) != 2 ||
          ret.getOperands() != op.getResults())
        return op.emitOpError("spans all experts and must be alone in its "
                              "entry point, its result returned");
      return convertUpdateBias(update);
    }
    for (Operation &op : body.without_terminator()) {
      if (!isa<PermuteOp, CombineOp>(op))
        continue;
      if (std::distance(body.begin(), body.end()) != 2 ||
          ret.getOperands() != op.getResults())
        return op.emitOpError("moves whole rows of a run-time size and must "
                              "be alone in its entry point, its result "
                              "returned");
      return convertRowMovement(&op);
    }
    SmallVector<ExpertChoiceOp> choices(body.getOps<ExpertChoiceOp>());
    if (choices.size() > 1)
      return choices[1].emitOpError("is the entry point's second expert "
                                    "choice; an entry selects once");
    if (!choices.empty())
      return convertExpertChoiceKernel(body, choices.front());
    return convertRowKernel(body, ret);
  }

private:
  /// Names the entry's arguments and untied results by the ABI.
  LogicalResult planArguments(Block &body) {
    for (BlockArgument arg : body.getArguments()) {
      std::string name = abiNameOfArgument(arg);
      if (name.empty())
        return func.emitOpError("argument #")
               << arg.getArgNumber()
               << " is read by no moe op that gives it a kernel ABI name";
      argumentNames.push_back(name);
    }
    for (const ResultPlan &plan : results) {
      if (plan.tiedArgument)
        continue;
      std::string name = abiNameOfResult(plan.value);
      if (name.empty())
        return func.emitOpError("result computed by ")
               << plan.value.getDefiningOp()->getName()
               << " has no kernel ABI name";
      resultNames.push_back(name);
    }
    return success();
  }

  /// The `#moe.kernel_arg` of an argument of `type` called `name`, checked
  /// against the catalogue of abi/KernelAbi.h.
  FailureOr<KernelArgAttr> abiAttr(StringRef name, Type type) {
    using namespace moegen::abi;
    MLIRContext *ctx = func.getContext();
    const ArgSpec *spec = findArg(entryKind, name.str());
    auto fail = [&]() {
      return func.emitOpError("kernel argument '")
             << name << "' of type " << type << " ";
    };
    if (!spec)
      return fail() << "is not an argument of a " << toString(entryKind)
                    << " kernel (abi/KernelAbi.h)";
    auto role = static_cast<KernelArgRole>(spec->role);
    auto access = static_cast<KernelArgAccess>(spec->access);
    if (isa<IndexType>(type)) {
      if (spec->rank != 0)
        return fail() << "must be a tensor";
      return KernelArgAttr::get(ctx, name, role, IntegerType::get(ctx, 64),
                                ArrayAttr::get(ctx, {}), access);
    }
    auto memref = dyn_cast<MemRefType>(type);
    if (!memref || memref.getRank() != spec->rank)
      return fail() << "must have rank " << spec->rank;
    // The element type is stamped as the IR has it: the dialect also takes
    // i64 ids, which a backend binding i32 buffers refuses by the stamp.
    SmallVector<Attribute> shape;
    for (auto [dim, rule] : llvm::enumerate(spec->shape())) {
      if (isDynamic(rule) != memref.isDynamicDim(dim))
        return fail() << "must have a " << (isDynamic(rule) ? "dynamic" : "static")
                      << " dimension " << dim << " (" << toString(rule)
                      << ")";
      if (isDynamic(rule))
        shape.push_back(StringAttr::get(ctx, toString(rule)));
      else
        shape.push_back(IntegerAttr::get(IntegerType::get(ctx, 64),
                                         memref.getDimSize(dim)));
    }
    return KernelArgAttr::get(ctx, name, role, memref.getElementType(),
                              ArrayAttr::get(ctx, shape), access);
  }

  /// Kernel signature: inputs as memrefs, an output memref per result not
  /// tied to an input, the error record, then the token range (row kernels
  /// only); each argument stamped with its `#moe.kernel_arg`.
  FailureOr<func::FuncOp> createKernel(bool withTokenRange) {
    Block &body = func.getBody().front();
    OpBuilder b(func);
    SmallVector<Type> inputs;
    SmallVector<std::string> names(argumentNames.begin(), argumentNames.end());
    for (BlockArgument arg : body.getArguments())
      inputs.push_back(isa<RankedTensorType>(arg.getType())
                           ? Type(toMemRef(cast<RankedTensorType>(arg.getType())))
                           : arg.getType());
    for (const ResultPlan &plan : results)
      if (!plan.tiedArgument)
        inputs.push_back(toMemRef(cast<RankedTensorType>(plan.value.getType())));
    names.append(resultNames.begin(), resultNames.end());
    if (fusedDispatch) {
      // Before the error record, so that a row kernel still ends in
      // (error, token_begin, token_end).
      inputs.push_back(MemRefType::get(
          {moegen::abi::dispatchScratchWords(fusedDispatch.getExperts())},
          b.getI32Type()));
      names.push_back("dispatch_scratch");
    }
    inputs.push_back(MemRefType::get({target == KernelTarget::Nvptx
                                          ? moegen::kGpuKernelErrorWords
                                          : kKernelErrorWords},
                                     b.getI64Type()));
    names.push_back("error");
    if (entryKind == moegen::abi::EntryKind::Dispatch &&
        target == KernelTarget::Nvptx) {
      DispatchOp dispatch = *body.getOps<DispatchOp>().begin();
      inputs.push_back(MemRefType::get(
          {moegen::abi::dispatchScratchWords(dispatch.getExperts())},
          b.getI32Type()));
      names.push_back("scratch");
    }
    auto choices = body.getOps<ExpertChoiceOp>();
    if (!choices.empty() && target == KernelTarget::Nvptx) {
      auto keys = cast<RankedTensorType>((*choices.begin()).getKeys().getType());
      inputs.push_back(MemRefType::get(
          {moegen::abi::expertChoiceScratchWords(keys.getDimSize(1))},
          b.getI32Type()));
      names.push_back("scratch");
    }
    if (withTokenRange) {
      inputs.append({b.getIndexType(), b.getIndexType()});
      names.append({"token_begin", "token_end"});
    }

    SmallVector<DictionaryAttr> argAttrs;
    for (auto [name, type] : llvm::zip(names, inputs)) {
      FailureOr<KernelArgAttr> attr = abiAttr(name, type);
      if (failed(attr))
        return failure();
      argAttrs.push_back(b.getDictionaryAttr(
          b.getNamedAttr(kKernelArgAttrName, *attr)));
    }
    // Every argument the catalogue requires is there.
    for (const moegen::abi::ArgSpec &spec :
         moegen::abi::entrySignature(entryKind))
      if (spec.required && !llvm::is_contained(names, spec.name) &&
          (withTokenRange ||
           spec.role != moegen::abi::ArgRole::TokenBegin) &&
          (withTokenRange || spec.role != moegen::abi::ArgRole::TokenEnd))
        return func.emitOpError("a ")
               << moegen::abi::toString(entryKind) << " kernel needs '"
               << spec.name << "' (abi/KernelAbi.h)";

    auto kernel = b.create<func::FuncOp>(func.getLoc(), func.getName(),
                                         b.getFunctionType(inputs, {}));
    kernel.setAllArgAttrs(argAttrs);
    for (NamedAttribute attr : func->getAttrs())
      if (attr.getName().getValue().starts_with("moe."))
        kernel->setAttr(attr.getName(), attr.getValue());
    // A C-callable wrapper taking descriptors by pointer, for the host JIT.
    kernel->setAttr("llvm.emit_c_interface", b.getUnitAttr());
    kernel.addEntryBlock();
    return kernel;
  }

  /// Terminates the kernel's entry block and points `b` before the return;
  /// the builder returned inserts stack buffers ahead of everything `b`
  /// emits, so that they dominate the token loop.
  OpBuilder startKernelBody(OpBuilder &b, Block &entry) {
    b.create<func::ReturnOp>(func.getLoc());
    b.setInsertionPoint(entry.getTerminator());
    // Buffers go before this marker, code after it; canonicalize drops it.
    Operation *marker = b.create<arith::ConstantIndexOp>(func.getLoc(), 0);
    OpBuilder allocBuilder(marker);
    return allocBuilder;
  }

  /// Host row kernels: prefetches the rows that the token `hostPrefetchBytes`
  /// ahead will read of each per-token input of at least a cache line, one
  /// prefetch per line (the row's last element too, since a row need not
  /// start on a line). x86's prefetch never faults, so the rows past the
  /// token range cost nothing but the hint.
  void prefetchAhead(RowCodegen &cg, Block &body, Value token) {
    constexpr int64_t kLineBytes = 64;
    if (hostPrefetchBytes <= 0)
      return;
    OpBuilder &b = cg.b;
    for (BlockArgument arg : body.getArguments()) {
      RowRef row = cg.rowOf(arg);
      if (!row.memref || !row.perToken || ShapedType::isDynamic(row.size))
        continue;
      const int64_t bits = row.elementType().getIntOrFloatBitWidth();
      const int64_t rowBytes = row.size * bits / 8;
      if (rowBytes < kLineBytes)
        continue;
      const int64_t ahead = llvm::divideCeil(hostPrefetchBytes, rowBytes);
      Value next = b.create<arith::AddIOp>(cg.loc, token, cg.index(ahead));
      const int64_t bytes = std::min(rowBytes, hostPrefetchBytes);
      SmallVector<int64_t> elements;
      for (int64_t offset = 0; offset < bytes; offset += kLineBytes)
        elements.push_back(offset * 8 / bits);
      if (bytes == rowBytes)
        elements.push_back(row.size - 1);
      for (int64_t element : elements)
        b.create<memref::PrefetchOp>(cg.loc, row.memref,
                                     ValueRange{next, cg.index(element)},
                                     /*isWrite=*/false, /*localityHint=*/3,
                                     /*isDataCache=*/true);
    }
  }

  /// Where each entry argument's rows live in the kernel.
  void bindArguments(RowCodegen &cg, Block &body, Block &entry) {
    cg.topkMethod = topkMethod;
    cg.target = target;
    for (BlockArgument arg : body.getArguments()) {
      Value lowered = entry.getArgument(arg.getArgNumber());
      if (auto type = dyn_cast<RankedTensorType>(arg.getType()))
        cg.rows[arg] = RowRef{lowered, /*perToken=*/type.getRank() == 2,
                              type.getDimSize(type.getRank() - 1)};
      else
        cg.scalars[arg] = lowered;
    }
  }

  LogicalResult convertRowKernel(Block &body, func::ReturnOp ret) {
    FailureOr<func::FuncOp> created = createKernel(/*withTokenRange=*/true);
    if (failed(created))
      return failure();
    func::FuncOp kernel = *created;
    Block &entry = kernel.getBody().front();
    unsigned numInputs = body.getNumArguments();
    unsigned numArgs = entry.getNumArguments();
    Value errorRecord = entry.getArgument(numArgs - 3);
    Value firstToken = entry.getArgument(numArgs - 2);
    Value lastToken = entry.getArgument(numArgs - 1);

    OpBuilder b = OpBuilder::atBlockEnd(&entry);
    OpBuilder allocBuilder = startKernelBody(b, entry);
    RowCodegen cg(b, allocBuilder, func.getLoc(), vectorWidth, errorRecord);
    bindArguments(cg, body, entry);
    if (topkMethod == TopKMethod::TokenLanes) {
      if (hasTokenLanesForm(body))
        return convertTokenLanesKernel(kernel, body, cg, firstToken, lastToken);
      // An entry with an op of no token-lanes form (replay's
      // forced_select, ...) keeps the token-per-row layout, and its config
      // says so (the GPU lowering maps tokens to lanes by it).
      cg.topkMethod = TopKMethod::ArgmaxPasses;
      auto config = getKernelConfig(func);
      kernel->setAttr(kKernelConfigAttrName,
                      KernelConfigAttr::get(kernel.getContext(),
                                            config.getTarget(),
                                            config.getVectorWidth(),
                                            config.getTokensPerTask(),
                                            TopKMethod::ArgmaxPasses));
    }

    LogicalResult status = success();
    b.create<scf::ForOp>(
        func.getLoc(), firstToken, lastToken, cg.index(1), ValueRange{},
        [&](OpBuilder &nested, Location loc, Value token, ValueRange) {
          OpBuilder::InsertionGuard guard(b);
          b.setInsertionPointToStart(nested.getInsertionBlock());
          cg.token = token;
          if (target == KernelTarget::Cpu)
            prefetchAhead(cg, body, token);
          for (Operation &op : body.without_terminator()) {
            if (failed(lowerRowOp(&op, cg))) {
              status = failure();
              break;
            }
          }
          if (succeeded(status))
            copyResults(cg, entry, numInputs);
          b.create<scf::YieldOp>(loc);
        });
    if (succeeded(status))
      status = lowerFusedTail(cg, kernel);
    return finish(kernel, status);
  }

  /// A row kernel in the token-lanes layout (TokenLanesToLoops.cpp): the
  /// token range in groups of cg.width tokens, then the tokens left one
  /// by one; a group with an invalid input also goes one token at a time.
  LogicalResult convertTokenLanesKernel(func::FuncOp kernel, Block &body,
                                        RowCodegen &cg, Value firstToken,
                                        Value lastToken) {
    OpBuilder &b = cg.b;
    Location loc = func.getLoc();
    Block &entry = kernel.getBody().front();
    const unsigned numInputs = body.getNumArguments();
    SmallVector<std::pair<Value, Value>> resultOutputs;
    unsigned output = numInputs;
    for (const ResultPlan &plan : results)
      if (!plan.tiedArgument && !plan.fromDispatch)
        resultOutputs.push_back({plan.value, entry.getArgument(output++)});
      else if (!plan.tiedArgument)
        ++output;
    // The token-per-row body, for the groups' fallback and the tail; both
    // emissions share its stack rows.
    cg.topkMethod = TopKMethod::ArgmaxPasses;
    size_t firstRow = 0, endRow = 0;
    bool emitted = false;
    auto perToken = [&](Value token) -> LogicalResult {
      if (emitted)
        cg.reuseRowsFrom(firstRow, endRow);
      else
        firstRow = cg.numStackRows();
      cg.token = token;
      for (Operation &op : body.without_terminator())
        if (failed(lowerRowOp(&op, cg)))
          return failure();
      copyResults(cg, entry, numInputs);
      if (!emitted)
        endRow = cg.numStackRows();
      emitted = true;
      cg.reuseRowsFrom(0, 0);
      return success();
    };
    Value width = cg.index(cg.width);
    Value count = b.create<arith::SubIOp>(loc, lastToken, firstToken);
    Value grouped = b.create<arith::AddIOp>(
        loc, firstToken,
        b.create<arith::MulIOp>(
            loc, b.create<arith::DivUIOp>(loc, count, width), width));
    LogicalResult status = success();
    b.create<scf::ForOp>(
        loc, firstToken, grouped, width, ValueRange{},
        [&](OpBuilder &nested, Location loc, Value first, ValueRange) {
          OpBuilder::InsertionGuard guard(b);
          b.setInsertionPointToStart(nested.getInsertionBlock());
          if (failed(lowerTokenLanesGroup(body, cg, first, resultOutputs,
                                          perToken)))
            status = failure();
          b.create<scf::YieldOp>(loc);
        });
    if (succeeded(status))
      b.create<scf::ForOp>(
          loc, grouped, lastToken, cg.index(1), ValueRange{},
          [&](OpBuilder &nested, Location loc, Value token, ValueRange) {
            OpBuilder::InsertionGuard guard(b);
            b.setInsertionPointToStart(nested.getInsertionBlock());
            if (failed(perToken(token)))
              status = failure();
            b.create<scf::YieldOp>(loc);
          });
    if (succeeded(status))
      status = lowerFusedTail(cg, kernel);
    return finish(kernel, status);
  }

  /// An entry that selects by expert choice: one kernel over all tokens
  /// without a token range (the host runs it as one task, the GPU as one
  /// cooperative grid), in the phases of ExpertChoiceToLoops.cpp. The ops
  /// before the selection run in each of its passes over the tokens.
  LogicalResult convertExpertChoiceKernel(Block &body, ExpertChoiceOp choice) {
    FailureOr<func::FuncOp> created = createKernel(/*withTokenRange=*/false);
    if (failed(created))
      return failure();
    func::FuncOp kernel = *created;
    Block &entry = kernel.getBody().front();
    const unsigned numInputs = body.getNumArguments();
    const bool gpu = target == KernelTarget::Nvptx;
    // The error record, then (GPU) the scratch buffer, end the arguments.
    const unsigned numArgs = entry.getNumArguments();
    Value errorRecord = entry.getArgument(numArgs - (gpu ? 2 : 1));
    OpBuilder b = OpBuilder::atBlockEnd(&entry);
    OpBuilder allocBuilder = startKernelBody(b, entry);
    RowCodegen cg(b, allocBuilder, func.getLoc(), vectorWidth, errorRecord);
    bindArguments(cg, body, entry);
    // T, from the logits (every routing entry's first argument).
    Value numTokens =
        b.create<memref::DimOp>(func.getLoc(), entry.getArgument(0), 0);

    auto emitBefore = [&]() -> LogicalResult {
      for (Operation &op : body.without_terminator()) {
        if (&op == choice.getOperation())
          return success();
        if (failed(lowerRowOp(&op, cg)))
          return failure();
      }
      return success();
    };
    auto emitAll = [&]() -> LogicalResult {
      for (Operation &op : body.without_terminator())
        if (failed(lowerRowOp(&op, cg)))
          return failure();
      copyResults(cg, entry, numInputs);
      return success();
    };
    KernelConfigAttr config = getKernelConfig(func);
    LogicalResult status =
        gpu ? lowerExpertChoiceGridKernel(choice, cg, numTokens,
                                          entry.getArgument(numArgs - 1),
                                          config.getTokensPerTask(),
                                          config.getVectorWidth(), emitBefore,
                                          emitAll)
            : lowerExpertChoiceHostKernel(choice, cg, numTokens, emitBefore,
                                          emitAll);
    return finish(kernel, status);
  }

  LogicalResult lowerRowOp(Operation *op, RowCodegen &cg) {
    return llvm::TypeSwitch<Operation *, LogicalResult>(op)
        .Case([&](ScoreOp score) { return lowerScoring(score, cg); })
        .Case([&](SharedGateOp gate) { return lowerSharedGate(gate, cg); })
        .Case<AddBiasOp, GroupMaskOp, TopKOp, TopPOp>(
            [&](Operation *op) { return lowerSelection(op, cg); })
        .Case([&](ExpertChoiceOp op) { return lowerExpertChoice(op, cg); })
        .Case<HashSelectOp, ForcedSelectOp>(
            [&](Operation *op) { return lowerValidatedSelection(op, cg); })
        .Case<GatherOp, NormalizeOp, ScaleOp, SparsemixerOp>(
            [&](Operation *op) { return lowerWeights(op, cg); })
        .Case([&](CaptureOp capture) { return lowerCapture(capture, cg); })
        // A fused dispatch runs after the token loop (lowerFusedTail).
        .Case([&](DispatchOp) { return success(fusedDispatch != nullptr); })
        .Default([](Operation *op) {
          return op->emitOpError("cannot be lowered inside a routing entry "
                                 "point");
        });
  }

  /// Writes the token's row of each untied result to its output argument,
  /// a vector chunk at a time (on a GPU one coalesced store per chunk, not
  /// one warp-wide store per element).
  void copyResults(RowCodegen &cg, Block &entry, unsigned numInputs) {
    unsigned output = numInputs;
    for (const ResultPlan &plan : results) {
      if (plan.tiedArgument)
        continue;
      if (plan.fromDispatch) {
        ++output;
        continue;
      }
      RowRef from = cg.rowOf(plan.value);
      RowRef to{entry.getArgument(output++), /*perToken=*/true, from.size};
      Type element = from.elementType();
      if (!element.isF32() && !element.isInteger(32)) {
        cg.forLoop(0, from.size, {}, [&](Value j, ValueRange) {
          cg.store(cg.load(from, j), to, j);
          return SmallVector<Value>{};
        });
        continue;
      }
      Value padding = element.isF32() ? cg.f32(0.0) : cg.i32(0);
      cg.forEachChunk(from.size, {},
                      [&](Value e0, int64_t valid, ValueRange) {
                        cg.storeChunk(cg.loadChunk(from, e0, valid, padding),
                                      to, e0, valid);
                        return SmallVector<Value>{};
                      });
    }
  }

  /// A kernel without a token range (dispatch, update_bias): `lower`
  /// fills its body from its arguments, the error record at `errorArg`.
  LogicalResult convertWholeKernel(
      unsigned errorArg,
      function_ref<LogicalResult(RowCodegen &, Block &)> lower) {
    FailureOr<func::FuncOp> created = createKernel(/*withTokenRange=*/false);
    if (failed(created))
      return failure();
    func::FuncOp kernel = *created;
    Block &entry = kernel.getBody().front();
    OpBuilder b = OpBuilder::atBlockEnd(&entry);
    OpBuilder allocBuilder = startKernelBody(b, entry);
    RowCodegen cg(b, allocBuilder, func.getLoc(), vectorWidth,
                  entry.getArgument(errorArg));
    cg.target = target;
    return finish(kernel, lower(cg, entry));
  }

  LogicalResult convertDispatch(DispatchOp dispatch) {
    return convertWholeKernel(5, [&](RowCodegen &cg, Block &entry) {
      return target == KernelTarget::Nvptx
                 ? lowerParallelDispatch(dispatch, cg, entry.getArgument(0),
                                         entry.getArguments().slice(1, 4),
                                         entry.getArgument(6))
                 : lowerDispatch(dispatch, cg, entry.getArgument(0),
                                 entry.getArguments().slice(1, 4));
    });
  }

  /// Update_bias: one pass over the experts, no token range; on the GPU one
  /// warp strides over them.
  LogicalResult convertUpdateBias(UpdateBiasOp op) {
    return convertWholeKernel(3, [&](RowCodegen &cg, Block &entry) {
      return lowerUpdateBias(op, cg, entry.getArgument(0),
                             entry.getArgument(1), entry.getArgument(2));
    });
  }

  /// Permute and combine: one token per trip of the token loop, like a row
  /// kernel, but the rows they move are H elements long, H known only at
  /// run time, so they read and write the arguments directly instead of
  /// through stack rows (PermuteToLoops.cpp).
  LogicalResult convertRowMovement(Operation *op) {
    FailureOr<func::FuncOp> created = createKernel(/*withTokenRange=*/true);
    if (failed(created))
      return failure();
    func::FuncOp kernel = *created;
    Block &entry = kernel.getBody().front();
    unsigned numArgs = entry.getNumArguments();
    OpBuilder b = OpBuilder::atBlockEnd(&entry);
    OpBuilder allocBuilder = startKernelBody(b, entry);
    RowCodegen cg(b, allocBuilder, func.getLoc(), vectorWidth,
                  entry.getArgument(numArgs - 3));
    cg.target = target;
    // The kernel's arguments in the entry's order, outputs after inputs.
    SmallVector<Value> operands(entry.getArguments().take_front(numArgs - 3));
    LogicalResult status = success();
    b.create<scf::ForOp>(
        func.getLoc(), entry.getArgument(numArgs - 2),
        entry.getArgument(numArgs - 1), cg.index(1), ValueRange{},
        [&](OpBuilder &nested, Location loc, Value token, ValueRange) {
          OpBuilder::InsertionGuard guard(b);
          b.setInsertionPointToStart(nested.getInsertionBlock());
          cg.token = token;
          status = isa<PermuteOp>(op)
                       ? lowerPermute(cast<PermuteOp>(op), cg, operands[0],
                                      operands[1], operands[2])
                       : lowerCombine(cast<CombineOp>(op), cg, operands[2],
                                      operands[1], operands[0], operands[3]);
          b.create<scf::YieldOp>(loc);
        });
    return finish(kernel, status);
  }

  /// A fused dispatch after the token loop: the kernel's ids, sorted by
  /// the block that finishes last on its warps (lowerFusedDispatch).
  LogicalResult lowerFusedTail(RowCodegen &cg, func::FuncOp kernel) {
    if (!fusedDispatch)
      return success();
    auto argument = [&](StringRef name) -> Value {
      for (unsigned i = 0; i < kernel.getNumArguments(); ++i)
        if (auto arg = kernel.getArgAttrOfType<KernelArgAttr>(
                i, kKernelArgAttrName);
            arg && arg.getName() == name)
          return kernel.getArgument(i);
      return {};
    };
    SmallVector<Value> outputs;
    for (StringRef name : {"expert_counts", "expert_offsets", "sorted_slots",
                           "slot_positions"})
      outputs.push_back(argument(name));
    Value ids = argument("topk_ids"), scratch = argument("dispatch_scratch");
    if (!ids || !scratch || llvm::is_contained(outputs, Value()))
      return fusedDispatch.emitOpError(
          "fused kernel lacks the dispatch's arguments");
    return lowerFusedDispatch(fusedDispatch, cg, ids, outputs, scratch,
                              getKernelConfig(kernel).getWarpsPerBlock());
  }

  /// Replaces the tensor entry point by its kernel, or drops the kernel.
  LogicalResult finish(func::FuncOp kernel, LogicalResult status) {
    if (failed(status)) {
      kernel.erase();
      return failure();
    }
    kernel->moveAfter(func);
    func.erase();
    return success();
  }

  func::FuncOp func;
  /// convert-moe-to-loops's host-prefetch-bytes.
  int64_t hostPrefetchBytes = 0;
  int64_t vectorWidth = 1;
  TopKMethod topkMethod = TopKMethod::ArgmaxPasses;
  KernelTarget target = KernelTarget::Cpu;
  moegen::abi::EntryKind entryKind = moegen::abi::EntryKind::Route;
  /// The dispatch of a fused entry (kFusedDispatchAttrName), else null.
  DispatchOp fusedDispatch;
  SmallVector<ResultPlan> results;
  /// ABI names of the entry's arguments and of its untied results.
  SmallVector<std::string> argumentNames, resultNames;
};

struct ConvertMoEToLoopsPass
    : public moe::impl::ConvertMoEToLoopsBase<ConvertMoEToLoopsPass> {
  using ConvertMoEToLoopsBase::ConvertMoEToLoopsBase;

  void runOnOperation() override {
    SmallVector<func::FuncOp> entries;
    for (auto func : getOperation().getOps<func::FuncOp>())
      if (func->hasAttr(kEntryAttrName))
        entries.push_back(func);
    for (func::FuncOp func : entries)
      if (failed(EntryConverter(func, hostPrefetchBytes).convert()))
        return signalPassFailure();
  }
};

} // namespace
