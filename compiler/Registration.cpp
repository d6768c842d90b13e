//===- Registration.cpp - Dialects and passes of moegen -------------------===//

#include "compiler/Registration.h"

#include "dialects/moe/Conversion/Passes.h"
#include "dialects/moe/IR/MoEDialect.h"
#include "dialects/moe/Transforms/Passes.h"

#include "mlir/Dialect/ControlFlow/IR/ControlFlow.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Index/IR/IndexDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Conversion/Passes.h"
#include "mlir/Dialect/GPU/Transforms/Passes.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Target/LLVM/NVVM/Target.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/GPU/GPUToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/NVVM/NVVMToLLVMIRTranslation.h"
#include "mlir/Transforms/Passes.h"

namespace moegen {

void registerMoEGenDialects(mlir::DialectRegistry &registry) {
  registry.insert<mlir::moe::MoEDialect, mlir::func::FuncDialect,
                  mlir::tensor::TensorDialect, mlir::arith::ArithDialect>();
  // What the lowerings produce, so that lowered IR parses too.
  registry.insert<mlir::scf::SCFDialect, mlir::memref::MemRefDialect,
                  mlir::vector::VectorDialect, mlir::math::MathDialect,
                  mlir::cf::ControlFlowDialect, mlir::index::IndexDialect,
                  mlir::LLVM::LLVMDialect, mlir::gpu::GPUDialect,
                  mlir::NVVM::NVVMDialect>();
  // moe-gpu-module-to-ptx and gpu-module-to-binary: the NVVM target
  // (without it they crash with no message) and the translations to LLVM IR.
  mlir::NVVM::registerNVVMTargetInterfaceExternalModels(registry);
  mlir::registerBuiltinDialectTranslation(registry);
  mlir::registerLLVMDialectTranslation(registry);
  mlir::registerNVVMDialectTranslation(registry);
  mlir::registerGPUDialectTranslation(registry);
}

void registerMoEGenPasses() {
  // Upstream canonicalize, cse, inline, ... for moegen-opt pipelines.
  mlir::registerTransformsPasses();
  // The upstream lowerings the CPU and NVPTX pipelines run, so that lit
  // tests can run each stage alone.
  mlir::registerConversionPasses();
  mlir::registerGPUPasses();
  mlir::moe::registerMoEPasses();
  mlir::moe::registerMoEConversionPasses();
}

} // namespace moegen
