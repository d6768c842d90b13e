//===- CpuPipeline.cpp - moe IR to LLVM IR for the host -------------------===//

#include "compiler/backend/cpu/CpuPipeline.h"

#include "dialects/moe/Conversion/Passes.h"
#include "dialects/moe/Transforms/Passes.h"

#include "mlir/Conversion/Passes.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Conversion/AffineToStandard/AffineToStandard.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

namespace moegen::cpu {

void addCpuConfigStage(mlir::OpPassManager &pm,
                       const CpuPipelineOptions &options) {
  mlir::moe::MoEKernelConfigOptions config;
  config.target = "cpu";
  config.vectorWidth = options.vectorWidth;
  config.tokensPerTask = options.tokensPerTask;
  config.topk = options.topk;
  pm.addPass(mlir::moe::createMoEKernelConfig(config));
}

void addCpuLoopsStage(mlir::OpPassManager &pm) {
  pm.addPass(mlir::moe::createConvertMoEToLoops());
  pm.addPass(mlir::createCanonicalizerPass());
  pm.addPass(mlir::createCSEPass());
}

void addCpuLLVMStage(mlir::OpPassManager &pm) {
  pm.addPass(mlir::moe::createMoEApproximateMath());
  pm.addPass(mlir::moe::createMoEButterflyReductions());
  pm.addPass(mlir::moe::createMoEZeroSignFreeMinMax());
  pm.addPass(mlir::createConvertVectorToSCFPass());
  pm.addPass(mlir::createConvertSCFToCFPass());
  pm.addPass(mlir::createConvertVectorToLLVMPass());
  pm.addPass(mlir::createConvertMathToLLVMPass());
  pm.addPass(mlir::createConvertMathToLibmPass());
  pm.addPass(mlir::memref::createExpandStridedMetadataPass());
  // The flat views of the token-lanes layout (memref.collapse_shape) leave
  // their sizes as affine.apply.
  pm.addPass(mlir::createLowerAffinePass());
  pm.addPass(mlir::createFinalizeMemRefToLLVMConversionPass());
  pm.addPass(mlir::createArithToLLVMConversionPass());
  pm.addPass(mlir::createConvertIndexToLLVMPass());
  pm.addPass(mlir::createConvertFuncToLLVMPass());
  pm.addPass(mlir::createConvertControlFlowToLLVMPass());
  pm.addPass(mlir::createReconcileUnrealizedCastsPass());
}

namespace {
struct CpuToLLVMPipelineOptions
    : public mlir::PassPipelineOptions<CpuToLLVMPipelineOptions> {
  Option<int64_t> vectorWidth{*this, "vector-width",
                              llvm::cl::desc("Lanes over experts; 0 = "
                                             "heuristic"),
                              llvm::cl::init(0)};
  Option<int64_t> tokensPerTask{*this, "tokens-per-task",
                                llvm::cl::desc("Tokens per task; 0 = "
                                               "heuristic"),
                                llvm::cl::init(0)};
  Option<std::string> topk{*this, "topk",
                           llvm::cl::desc("argmax_passes, insertion, lane_lists, lane_tree or token_lanes; empty "
                                          "= heuristic"),
                           llvm::cl::init("")};
};
} // namespace

void registerCpuPipeline() {
  mlir::PassPipelineRegistration<CpuToLLVMPipelineOptions>(
      "moe-cpu-to-llvm",
      "Lower moe entry points to LLVM dialect kernels for the host",
      [](mlir::OpPassManager &pm, const CpuToLLVMPipelineOptions &options) {
        addCpuConfigStage(pm, {options.vectorWidth, options.tokensPerTask,
                               options.topk});
        addCpuLoopsStage(pm);
        addCpuLLVMStage(pm);
      });
}

} // namespace moegen::cpu
