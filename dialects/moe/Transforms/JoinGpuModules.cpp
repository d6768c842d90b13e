//===- JoinGpuModules.cpp - The parts of a split gpu.module, joined -------===//
//
// See the pass description in Passes.td: the inverse of
// moe-split-gpu-module, after the passes that ran on each part.
//
//===----------------------------------------------------------------------===//

#include "dialects/moe/IR/MoEDialect.h"
#include "dialects/moe/Transforms/Passes.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OperationSupport.h"
#include "mlir/IR/SymbolTable.h"

#include "llvm/ADT/MapVector.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOEJOINGPUMODULES
#include "dialects/moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;

namespace {

/// A kernel before or after the NVVM lowering.
bool isKernel(Operation &op) {
  if (auto func = dyn_cast<gpu::GPUFuncOp>(op))
    return func.isKernel();
  if (auto func = dyn_cast<LLVM::LLVMFuncOp>(op))
    return func->hasAttr(gpu::GPUDialect::getKernelFuncAttrName());
  return false;
}

struct MoEJoinGpuModulesPass
    : public moe::impl::MoEJoinGpuModulesBase<MoEJoinGpuModulesPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    // The parts of each split module, in order.
    llvm::MapVector<StringAttr, SmallVector<gpu::GPUModuleOp>> parts;
    for (auto gpuModule : module.getOps<gpu::GPUModuleOp>())
      if (auto from =
              gpuModule->getAttrOfType<StringAttr>(moe::kSplitFromAttrName))
        parts[from].push_back(gpuModule);
    SymbolTable symbols(module);
    for (auto &[from, pieces] : parts) {
      if (symbols.lookup(from)) {
        pieces.front().emitError("joins into @")
            << from.getValue() << ", which is a symbol already";
        return signalPassFailure();
      }
      OpBuilder b(pieces.front());
      auto joined = b.create<gpu::GPUModuleOp>(pieces.front().getLoc(),
                                               from.getValue());
      joined->setAttrs(pieces.front()->getAttrDictionary());
      joined->removeAttr(moe::kSplitFromAttrName);
      SymbolTable::setSymbolName(joined, from);
      Block *body = joined.getBody();
      OpBuilder inJoined = OpBuilder::atBlockBegin(body);
      // The first copy of each symbol, by name.
      llvm::StringMap<Operation *> kept;
      for (gpu::GPUModuleOp piece : pieces) {
        for (Operation &op :
             llvm::make_early_inc_range(piece.getBody()->without_terminator())) {
          auto name =
              op.getAttrOfType<StringAttr>(SymbolTable::getSymbolAttrName());
          if (name) {
            auto [it, fresh] = kept.try_emplace(name.getValue(), &op);
            if (!fresh) {
              if (isKernel(op) || isKernel(*it->second) ||
                  !OperationEquivalence::isEquivalentTo(
                      it->second, &op, OperationEquivalence::IgnoreLocations)) {
                op.emitError("@")
                    << name.getValue() << " differs between the parts of @"
                    << from.getValue() << " (or is a kernel twice)";
                return signalPassFailure();
              }
              continue;
            }
          }
          op.moveBefore(inJoined.getInsertionBlock(),
                        inJoined.getInsertionPoint());
        }
      }
      for (gpu::GPUModuleOp piece : pieces)
        piece.erase();
    }
  }
};

} // namespace
