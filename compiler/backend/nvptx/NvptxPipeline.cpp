//===- NvptxPipeline.cpp - moe IR to GPU binaries -------------------------===//

#include "compiler/backend/nvptx/NvptxPipeline.h"

#include "dialects/moe/Conversion/Passes.h"
#include "dialects/moe/Transforms/Passes.h"

#include "mlir/Conversion/Passes.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/GPU/Transforms/Passes.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

namespace moegen::nvptx {

void addNvptxConfigStage(mlir::OpPassManager &pm,
                         const NvptxPipelineOptions &options) {
  mlir::moe::MoEKernelConfigOptions config;
  config.target = "nvptx";
  config.tokensPerTask = options.tokensPerBlock;
  config.vectorWidth = options.lanesPerToken;
  config.topk = options.topk;
  pm.addPass(mlir::moe::createMoEKernelConfig(config));
  mlir::moe::MoEFuseDispatchOptions fuse;
  fuse.maxSlots = options.fusedDispatchMaxSlots;
  pm.addPass(mlir::moe::createMoEFuseDispatch(fuse));
}

// Kernels share nothing: the passes that work within one are nested on
// its function, so that the pass manager runs them on the context's
// threads, a kernel each (the conversions between them work on the whole
// module).

void addNvptxLoopsStage(mlir::OpPassManager &pm) {
  pm.addPass(mlir::moe::createConvertMoEToLoops());
  mlir::OpPassManager &kernel = pm.nest<mlir::func::FuncOp>();
  kernel.addPass(mlir::createCanonicalizerPass());
  kernel.addPass(mlir::createCSEPass());
}

void addNvptxGpuStage(mlir::OpPassManager &pm) {
  pm.addPass(mlir::moe::createConvertMoELoopsToGPU());
  mlir::OpPassManager &kernel =
      pm.nest<mlir::gpu::GPUModuleOp>().nest<mlir::gpu::GPUFuncOp>();
  kernel.addPass(mlir::createCanonicalizerPass());
  kernel.addPass(mlir::createCSEPass());
}

void addNvptxNvvmStage(mlir::OpPassManager &pm,
                       const NvptxPipelineOptions &options) {
  mlir::GpuNVVMAttachTargetOptions target;
  target.chip = options.chip;
  // CUDA 13's ptxas rejects the NVVM target's default PTX ISA 6.0.
  target.features = "+ptx80";
  target.optLevel = 3;
  pm.addPass(mlir::createGpuNVVMAttachTarget(target));
  // A gpu.module per kernel for the lowering below, which works on whole
  // modules: the pass manager runs it a kernel per thread.
  pm.addPass(mlir::moe::createMoESplitGpuModule());
  mlir::OpPassManager &gpu = pm.nest<mlir::gpu::GPUModuleOp>();
  gpu.addPass(mlir::moe::createMoEGpuFastMath());
  mlir::OpPassManager &kernel = gpu.nest<mlir::gpu::GPUFuncOp>();
  // Views of a memref (the token-lanes layout's flattened rows) as
  // arithmetic on its descriptor, which convert-gpu-to-nvvm lowers.
  kernel.addPass(mlir::memref::createExpandStridedMetadataPass());
  kernel.addPass(mlir::createLowerAffinePass());
  kernel.addPass(mlir::createConvertSCFToCFPass());
  gpu.addPass(mlir::createConvertGpuOpsToNVVMOps());
  mlir::OpPassManager &llvmKernel = gpu.nest<mlir::LLVM::LLVMFuncOp>();
  llvmKernel.addPass(mlir::createCanonicalizerPass());
  llvmKernel.addPass(mlir::createCSEPass());
  gpu.addPass(mlir::createReconcileUnrealizedCastsPass());
  pm.addPass(mlir::moe::createMoEJoinGpuModules());
}

void addNvptxBinaryStage(mlir::OpPassManager &pm,
                         const NvptxPipelineOptions &options) {
  pm.addPass(mlir::moe::createMoEExternDynamicSharedMemory());
  mlir::moe::MoEGpuModuleToPtxOptions ptx;
  // Without a toolkit path, math calls stay unresolved externs in the PTX.
  ptx.toolkitPath = options.toolkitPath;
  pm.addPass(mlir::moe::createMoEGpuModuleToPtx(ptx));
}

namespace {
struct NvptxToNvvmPipelineOptions
    : public mlir::PassPipelineOptions<NvptxToNvvmPipelineOptions> {
  Option<int64_t> tokensPerBlock{
      *this, "tokens-per-block",
      llvm::cl::desc("Tokens per block; 0 = heuristic"), llvm::cl::init(0)};
  Option<int64_t> lanesPerToken{
      *this, "lanes-per-token",
      llvm::cl::desc("Lanes of a warp per token (1, 2, 4, ..., 32); 0 = "
                     "heuristic"),
      llvm::cl::init(0)};
  Option<std::string> topk{*this, "topk",
                           llvm::cl::desc("argmax_passes, insertion or lane_lists; empty "
                                          "= heuristic"),
                           llvm::cl::init("")};
  Option<std::string> chip{*this, "chip",
                           llvm::cl::desc("NVVM target chip (sm_80 ... "
                                          "sm_90a)"),
                           llvm::cl::init("sm_90")};
  Option<int64_t> fusedDispatchMaxSlots{
      *this, "fused-dispatch-max-slots",
      llvm::cl::desc("Largest T * k of a route kernel with a fused "
                     "dispatch; 0 = none"),
      llvm::cl::init(moegen::abi::kFusedDispatchMaxSlots)};
};
} // namespace

void registerNvptxPipeline() {
  mlir::PassPipelineRegistration<NvptxToNvvmPipelineOptions>(
      "moe-nvptx-to-nvvm",
      "Lower moe entry points to GPU kernels (a warp segment per token) in "
      "the NVVM "
      "dialect (the NVPTX backend up to its binary stage)",
      [](mlir::OpPassManager &pm, const NvptxToNvvmPipelineOptions &options) {
        NvptxPipelineOptions pipeline;
        pipeline.tokensPerBlock = options.tokensPerBlock;
        pipeline.lanesPerToken = options.lanesPerToken;
        pipeline.topk = options.topk;
        pipeline.chip = options.chip;
        pipeline.fusedDispatchMaxSlots = options.fusedDispatchMaxSlots;
        addNvptxConfigStage(pm, pipeline);
        addNvptxLoopsStage(pm);
        addNvptxGpuStage(pm);
        addNvptxNvvmStage(pm, pipeline);
        // The extern shared memory fix belongs to the NVVM form the binary
        // stage prints, so that moegen-opt's output assembles as is.
        pm.addPass(mlir::moe::createMoEExternDynamicSharedMemory());
      });
}

} // namespace moegen::nvptx
