//===- MoEToLoops.cpp - Fuse each entry point into a kernel over tokens ---===//
//
// Not a pattern-based conversion: every row-wise op of an entry point must
// land in the same loop over tokens, reading its operands' rows from where
// the producer left them, so the pass walks the entry's ops in order and
// emits each into that loop (RowCodegen.h). The op families are lowered in
// their own files; this file owns the kernel ABI: the new signature, the
// token loop, and the copy of result rows to the output arguments.
//
//===----------------------------------------------------------------------===//

#include "dialects/moe/Conversion/MoEToLoops/RowCodegen.h"
#include "dialects/moe/Conversion/Passes.h"
#include "dialects/moe/IR/MoEDialect.h"

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
};

class EntryConverter {
public:
  explicit EntryConverter(func::FuncOp func) : func(func) {}

  LogicalResult convert() {
    auto config = func->getAttrOfType<DictionaryAttr>(kKernelConfigAttrName);
    if (!config)
      return func.emitOpError("needs 'moe.kernel_config' to be lowered: run "
                              "-moe-kernel-config first");
    vectorWidth = config.getAs<IntegerAttr>("vector_width").getInt();
    topkMethod = parseTopKMethod(config.getAs<StringAttr>("topk").getValue())
                     .value_or(TopKMethod::ArgmaxPasses);
    target = parseKernelTarget(config.getAs<StringAttr>("target").getValue())
                 .value_or(KernelTarget::Cpu);
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
      ResultPlan plan{result, std::nullopt};
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

    SmallVector<DispatchOp> dispatches(body.getOps<DispatchOp>());
    if (!dispatches.empty()) {
      if (std::distance(body.begin(), body.end()) != 2 ||
          ret.getOperands() != dispatches.front().getResults())
        return dispatches.front().emitOpError(
            "spans tokens and must be alone in its entry point, its results "
            "returned in order");
      return convertDispatch(dispatches.front());
    }
    return convertRowKernel(body, ret);
  }

private:
  /// Kernel signature: inputs as memrefs, an output memref per result not
  /// tied to an input, the error record, then `extra` (token range).
  func::FuncOp createKernel(TypeRange extra) {
    Block &body = func.getBody().front();
    SmallVector<Type> inputs;
    for (BlockArgument arg : body.getArguments())
      inputs.push_back(isa<RankedTensorType>(arg.getType())
                           ? Type(toMemRef(cast<RankedTensorType>(arg.getType())))
                           : arg.getType());
    for (const ResultPlan &plan : results)
      if (!plan.tiedArgument)
        inputs.push_back(toMemRef(cast<RankedTensorType>(plan.value.getType())));
    OpBuilder b(func);
    inputs.push_back(MemRefType::get({target == KernelTarget::Nvptx
                                          ? moegen::kGpuKernelErrorWords
                                          : kKernelErrorWords},
                                     b.getI64Type()));
    inputs.append(extra.begin(), extra.end());

    auto kernel = b.create<func::FuncOp>(func.getLoc(), func.getName(),
                                         b.getFunctionType(inputs, {}));
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

  LogicalResult convertRowKernel(Block &body, func::ReturnOp ret) {
    OpBuilder typeBuilder(func);
    Type indexType = typeBuilder.getIndexType();
    func::FuncOp kernel = createKernel({indexType, indexType});
    Block &entry = kernel.getBody().front();
    unsigned numInputs = body.getNumArguments();
    unsigned numArgs = entry.getNumArguments();
    Value errorRecord = entry.getArgument(numArgs - 3);
    Value firstToken = entry.getArgument(numArgs - 2);
    Value lastToken = entry.getArgument(numArgs - 1);

    OpBuilder b = OpBuilder::atBlockEnd(&entry);
    OpBuilder allocBuilder = startKernelBody(b, entry);
    RowCodegen cg(b, allocBuilder, func.getLoc(), vectorWidth, errorRecord);
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

    LogicalResult status = success();
    b.create<scf::ForOp>(
        func.getLoc(), firstToken, lastToken, cg.index(1), ValueRange{},
        [&](OpBuilder &nested, Location loc, Value token, ValueRange) {
          OpBuilder::InsertionGuard guard(b);
          b.setInsertionPointToStart(nested.getInsertionBlock());
          cg.token = token;
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
    return finish(kernel, status);
  }

  LogicalResult lowerRowOp(Operation *op, RowCodegen &cg) {
    return llvm::TypeSwitch<Operation *, LogicalResult>(op)
        .Case([&](ScoreOp score) { return lowerScoring(score, cg); })
        .Case<AddBiasOp, GroupMaskOp, TopKOp>(
            [&](Operation *op) { return lowerSelection(op, cg); })
        .Case<HashSelectOp, ForcedSelectOp>(
            [&](Operation *op) { return lowerValidatedSelection(op, cg); })
        .Case<GatherOp, NormalizeOp, ScaleOp>(
            [&](Operation *op) { return lowerWeights(op, cg); })
        .Case([&](CaptureOp capture) { return lowerCapture(capture, cg); })
        .Default([](Operation *op) {
          return op->emitOpError("cannot be lowered inside a routing entry "
                                 "point");
        });
  }

  /// Writes the token's row of each untied result to its output argument.
  void copyResults(RowCodegen &cg, Block &entry, unsigned numInputs) {
    unsigned output = numInputs;
    for (const ResultPlan &plan : results) {
      if (plan.tiedArgument)
        continue;
      RowRef from = cg.rowOf(plan.value);
      RowRef to{entry.getArgument(output++), /*perToken=*/true, from.size};
      cg.forLoop(0, from.size, {}, [&](Value j, ValueRange) {
        cg.store(cg.load(from, j), to, j);
        return SmallVector<Value>{};
      });
    }
  }

  LogicalResult convertDispatch(DispatchOp dispatch) {
    func::FuncOp kernel = createKernel({});
    Block &entry = kernel.getBody().front();
    OpBuilder b = OpBuilder::atBlockEnd(&entry);
    OpBuilder allocBuilder = startKernelBody(b, entry);
    RowCodegen cg(b, allocBuilder, func.getLoc(), vectorWidth,
                  entry.getArgument(5));
    cg.target = target;
    LogicalResult status = lowerDispatch(dispatch, cg, entry.getArgument(0),
                                         entry.getArguments().slice(1, 4));
    return finish(kernel, status);
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
  int64_t vectorWidth = 1;
  TopKMethod topkMethod = TopKMethod::ArgmaxPasses;
  KernelTarget target = KernelTarget::Cpu;
  SmallVector<ResultPlan> results;
};

struct ConvertMoEToLoopsPass
    : public moe::impl::ConvertMoEToLoopsBase<ConvertMoEToLoopsPass> {
  void runOnOperation() override {
    SmallVector<func::FuncOp> entries;
    for (auto func : getOperation().getOps<func::FuncOp>())
      if (func->hasAttr(kEntryAttrName))
        entries.push_back(func);
    for (func::FuncOp func : entries)
      if (failed(EntryConverter(func).convert()))
        return signalPassFailure();
  }
};

} // namespace
