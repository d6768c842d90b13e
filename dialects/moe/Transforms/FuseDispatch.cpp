//===- FuseDispatch.cpp - A route kernel that also dispatches -------------===//
//
// For each row entry point of an nvptx module with a dispatch entry point,
// adds @<name>_dispatch: the entry's body followed by the dispatch on its
// topk_ids, for calls small enough for one block to sort (Passes.td).
//
//===----------------------------------------------------------------------===//

#include "dialects/moe/IR/MoEAttrs.h"
#include "dialects/moe/IR/MoEDialect.h"
#include "dialects/moe/IR/MoEOps.h"
#include "dialects/moe/Transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/SymbolTable.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOEFUSEDISPATCH
#include "dialects/moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {

/// The entry point's kind, or "" for a function that is none.
StringRef entryKind(func::FuncOp func) {
  auto kind = func->getAttrOfType<StringAttr>(kEntryAttrName);
  return kind ? kind.getValue() : StringRef();
}

/// The value a row entry returns as its ids: the result of its selection
/// (topk, top_p, hash_select, forced_select), as convert-moe-to-loops
/// names it topk_ids. Null when there is none.
Value returnedIds(func::ReturnOp ret) {
  for (Value result : ret.getOperands())
    if (Operation *op = result.getDefiningOp())
      if (isa<TopKOp, TopPOp, HashSelectOp, ForcedSelectOp>(op))
        return result;
  return {};
}

struct MoEFuseDispatchPass
    : public moe::impl::MoEFuseDispatchBase<MoEFuseDispatchPass> {
  using MoEFuseDispatchBase::MoEFuseDispatchBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    const int64_t slots = maxSlots;
    if (slots == 0)
      return;
    if (slots < 0 || slots > moegen::abi::kFusedDispatchMaxSlots) {
      module.emitError("moe-fuse-dispatch: max-slots = ")
          << slots << " must be 0 to "
          << moegen::abi::kFusedDispatchMaxSlots
          << " (one dispatch block's slots)";
      return signalPassFailure();
    }
    DispatchOp dispatch;
    SmallVector<func::FuncOp> rows;
    for (auto func : module.getOps<func::FuncOp>()) {
      StringRef kind = entryKind(func);
      if (kind == "dispatch" && func.getBody().hasOneBlock())
        for (auto op : func.getBody().front().getOps<DispatchOp>())
          dispatch = op;
      if (kind == "route" || kind == "route_hash" || kind == "replay")
        rows.push_back(func);
    }
    if (!dispatch)
      return;
    SymbolTable symbols(module);
    for (func::FuncOp func : rows) {
      KernelConfigAttr config = getKernelConfig(func);
      if (!config || config.getTarget() != KernelTarget::Nvptx ||
          !func.getBody().hasOneBlock() || func->hasAttr(kFusedDispatchAttrName))
        continue;
      Block &body = func.getBody().front();
      // An expert choice is a cooperative grid of its own.
      if (!body.getOps<ExpertChoiceOp>().empty())
        continue;
      if (!moegen::abi::fusedDispatchFits(dispatch.getExperts(),
                                          config.getWarpsPerBlock()))
        continue;
      auto ret = cast<func::ReturnOp>(body.getTerminator());
      Value ids = returnedIds(ret);
      if (!ids || ids.getType() != dispatch.getIds().getType())
        continue;

      OpBuilder b(func);
      b.setInsertionPointAfter(func);
      auto fused = cast<func::FuncOp>(b.clone(*func));
      fused.setName((func.getName() + "_dispatch").str());
      symbols.insert(fused);
      Block &fusedBody = fused.getBody().front();
      auto fusedReturn = cast<func::ReturnOp>(fusedBody.getTerminator());
      const unsigned idsIndex =
          static_cast<unsigned>(llvm::find(ret.getOperands(), ids) -
                                ret.getOperands().begin());
      Value fusedIds = fusedReturn.getOperand(idsIndex);
      b.setInsertionPoint(fusedReturn);
      IRMapping mapping;
      mapping.map(dispatch.getIds(), fusedIds);
      Operation *sorted = b.clone(*dispatch, mapping);
      SmallVector<Value> results(fusedReturn.getOperands());
      llvm::append_range(results, sorted->getResults());
      b.create<func::ReturnOp>(fusedReturn.getLoc(), results);
      fusedReturn.erase();
      SmallVector<Type> resultTypes(fused.getResultTypes());
      llvm::append_range(resultTypes, sorted->getResultTypes());
      fused.setFunctionType(
          b.getFunctionType(fused.getArgumentTypes(), resultTypes));
      fused->setAttr(kFusedDispatchAttrName, b.getI64IntegerAttr(slots));
    }
  }
};

} // namespace
