//===- SplitGpuModule.cpp - A gpu.module per kernel ------------------------===//
//
// See the pass description in Passes.td. The NVVM lowering converts a whole
// gpu.module at once; with a module per kernel, the pass manager runs it on
// the context's threads, a kernel each. moe-join-gpu-modules puts the parts
// back together.
//
//===----------------------------------------------------------------------===//

#include "dialects/moe/IR/MoEDialect.h"
#include "dialects/moe/Transforms/Passes.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/SymbolTable.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOESPLITGPUMODULE
#include "dialects/moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;

namespace {

bool isKernel(Operation &op) {
  auto func = dyn_cast<gpu::GPUFuncOp>(op);
  return func && func.isKernel();
}

struct MoESplitGpuModulePass
    : public moe::impl::MoESplitGpuModuleBase<MoESplitGpuModulePass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    SymbolTable symbols(module);
    for (auto gpuModule :
         llvm::make_early_inc_range(module.getOps<gpu::GPUModuleOp>())) {
      if (gpuModule->hasAttr(moe::kSplitFromAttrName)) {
        gpuModule.emitError("is already a part of a split gpu.module");
        return signalPassFailure();
      }
      SmallVector<gpu::GPUFuncOp> kernels;
      for (Operation &op : gpuModule.getBody()->without_terminator())
        if (isKernel(op))
          kernels.push_back(cast<gpu::GPUFuncOp>(op));
      if (kernels.size() < 2)
        continue;
      OpBuilder b(gpuModule);
      const StringAttr from = gpuModule.getNameAttr();
      for (gpu::GPUFuncOp kernel : kernels) {
        auto part = b.create<gpu::GPUModuleOp>(gpuModule.getLoc(),
                                               gpuModule.getName());
        part->setAttrs(gpuModule->getAttrDictionary());
        part->setAttr(moe::kSplitFromAttrName, from);
        // "<module>_<kernel>", numbered by the symbol table on a clash.
        SymbolTable::setSymbolName(
            part, (gpuModule.getName() + "_" + kernel.getName()).str());
        symbols.insert(part);
        // Every part holds what is not a kernel (declarations, globals),
        // in the module's order; the kernel is moved, not copied.
        OpBuilder inPart = OpBuilder::atBlockBegin(part.getBody());
        for (Operation &op : llvm::make_early_inc_range(
                 gpuModule.getBody()->without_terminator())) {
          if (&op == kernel.getOperation())
            op.moveBefore(inPart.getInsertionBlock(),
                          inPart.getInsertionPoint());
          else if (!isKernel(op))
            inPart.clone(op);
        }
      }
      symbols.erase(gpuModule);
    }
  }
};

} // namespace
