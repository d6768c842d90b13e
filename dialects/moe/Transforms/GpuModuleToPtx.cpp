//===- GpuModuleToPtx.cpp - Kernels to PTX in parallel --------------------===//
//
// See the pass description in Passes.td. LLVM's O3 pipeline and NVPTX code
// generation are most of a compile's time; kernels share nothing, so each
// is serialized alone on its own thread and the PTX texts are joined.
//
//===----------------------------------------------------------------------===//

#include "dialects/moe/Transforms/Passes.h"
#include "dialects/moe/Transforms/PtxJoin.h"

#include "mlir/Dialect/GPU/IR/CompilationInterfaces.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/IR/Threading.h"

#include <optional>
#include <string>
#include <vector>

namespace mlir::moe {
#define GEN_PASS_DEF_MOEGPUMODULETOPTX
#include "dialects/moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;

namespace {

/// The serializer keeps the C string's terminator; the join works on text.
StringRef ptxText(const SmallVector<char, 0> &object) {
  return StringRef(object.data(), object.size()).rtrim('\0');
}

bool isKernel(LLVM::LLVMFuncOp func) {
  return func->hasAttr(NVVM::NVVMDialect::getKernelFuncAttrName());
}

/// A copy of `gpuModule` with `kernel` as its only kernel and without the
/// functions and globals nothing left refers to. The other kernels are
/// not cloned at all: cloning the whole module once per kernel was a
/// twentieth of a compile, on one thread.
OwningOpRef<gpu::GPUModuleOp> cutOut(gpu::GPUModuleOp gpuModule,
                                     StringRef kernel) {
  OpBuilder b(gpuModule.getContext());
  OwningOpRef<gpu::GPUModuleOp> copy =
      b.create<gpu::GPUModuleOp>(gpuModule.getLoc(), gpuModule.getName());
  copy.get()->setAttrs(gpuModule->getAttrDictionary());
  b.setInsertionPointToStart(copy->getBody());
  for (Operation &op : gpuModule.getBody()->without_terminator()) {
    auto func = dyn_cast<LLVM::LLVMFuncOp>(op);
    if (!func || !isKernel(func) || func.getName() == kernel)
      b.clone(op);
  }
  // Dropping a function can leave what only it used unused in turn.
  for (bool erased = true; erased;) {
    erased = false;
    for (Operation &op : llvm::make_early_inc_range(copy->getBody()->getOperations())) {
      auto func = dyn_cast<LLVM::LLVMFuncOp>(op);
      if ((func && isKernel(func)) ||
          !isa<LLVM::LLVMFuncOp, LLVM::GlobalOp>(op))
        continue;
      if (SymbolTable::symbolKnownUseEmpty(&op, copy.get())) {
        op.erase();
        erased = true;
      }
    }
  }
  return copy;
}

/// Whether `module` calls into libdevice.
bool usesLibdevice(gpu::GPUModuleOp module) {
  for (auto func : module.getOps<LLVM::LLVMFuncOp>())
    if (func.isExternal() && func.getName().starts_with("__nv_"))
      return true;
  return false;
}

struct MoEGpuModuleToPtxPass
    : public moe::impl::MoEGpuModuleToPtxBase<MoEGpuModuleToPtxPass> {
  using MoEGpuModuleToPtxBase::MoEGpuModuleToPtxBase;

  void runOnOperation() override {
    SmallVector<gpu::GPUModuleOp> modules(
        getOperation().getOps<gpu::GPUModuleOp>());
    for (gpu::GPUModuleOp gpuModule : modules)
      if (failed(serialize(gpuModule)))
        return signalPassFailure();
  }

  gpu::TargetOptions targetOptions(StringRef toolkit) const {
    return gpu::TargetOptions(toolkit, {}, {},
                              gpu::CompilationTarget::Assembly);
  }

  LogicalResult serialize(gpu::GPUModuleOp gpuModule) {
    ArrayAttr targets = gpuModule.getTargetsAttr();
    auto target = targets && targets.size() == 1
                      ? dyn_cast<NVVM::NVVMTargetAttr>(targets[0])
                      : NVVM::NVVMTargetAttr();
    if (!target)
      return gpuModule.emitError("expected exactly one #nvvm.target");
    auto serializer = cast<gpu::TargetAttrInterface>(Attribute(target));

    std::optional<std::string> ptx;
    SmallVector<StringRef> kernels;
    for (auto func : gpuModule.getOps<LLVM::LLVMFuncOp>())
      if (isKernel(func))
        kernels.push_back(func.getName());
    if (splitKernels && kernels.size() > 1) {
      std::vector<std::string> parts;
      if (failed(serializeApart(gpuModule, serializer, kernels, parts)))
        return failure();
      ptx = moe::joinPtx(parts);
    }
    if (!ptx) {
      std::optional<SmallVector<char, 0>> object =
          serializer.serializeToObject(gpuModule, targetOptions(toolkitPath));
      if (!object)
        return gpuModule.emitError("NVPTX serialization failed");
      ptx = ptxText(*object).str();
    }

    SmallVector<char, 0> bytes(ptx->begin(), ptx->end());
    bytes.push_back('\0'); // as gpu-module-to-binary leaves it
    Attribute object = serializer.createObject(
        bytes, targetOptions(toolkitPath));
    OpBuilder builder(gpuModule);
    builder.create<gpu::BinaryOp>(gpuModule.getLoc(), gpuModule.getName(),
                                  Attribute(), builder.getArrayAttr({object}));
    gpuModule.erase();
    return success();
  }

  /// Each kernel alone, on the context's threads. A failing part's
  /// diagnostics are reported in kernel order.
  LogicalResult serializeApart(gpu::GPUModuleOp gpuModule,
                               gpu::TargetAttrInterface serializer,
                               ArrayRef<StringRef> kernels,
                               std::vector<std::string> &parts) {
    std::vector<OwningOpRef<gpu::GPUModuleOp>> copies;
    for (StringRef kernel : kernels)
      copies.push_back(cutOut(gpuModule, kernel));
    parts.assign(copies.size(), std::string());
    MLIRContext *context = &getContext();
    ParallelDiagnosticHandler diagnostics(context);
    return failableParallelForEachN(
        context, 0, copies.size(), [&](size_t i) -> LogicalResult {
          diagnostics.setOrderIDForThread(i);
          gpu::GPUModuleOp copy = copies[i].get();
          StringRef toolkit =
              usesLibdevice(copy) ? StringRef(toolkitPath) : StringRef();
          std::optional<SmallVector<char, 0>> object =
              serializer.serializeToObject(copy, targetOptions(toolkit));
          if (!object)
            copy.emitError("NVPTX serialization of kernel '")
                << kernels[i] << "' failed";
          diagnostics.eraseOrderIDForThread();
          if (!object)
            return failure();
          parts[i] = ptxText(*object).str();
          return success();
        });
  }
};

} // namespace
