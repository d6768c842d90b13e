//===- Registration.cpp - Dialects and passes of moegen -------------------===//

#include "compiler/Registration.h"

#include "dialects/moe/IR/MoEDialect.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Transforms/Passes.h"

namespace moegen {

void registerMoEGenDialects(mlir::DialectRegistry &registry) {
  registry.insert<mlir::moe::MoEDialect, mlir::func::FuncDialect,
                  mlir::tensor::TensorDialect, mlir::arith::ArithDialect>();
}

void registerMoEGenPasses() {
  // Upstream canonicalize, cse, inline, ... for moegen-opt pipelines.
  mlir::registerTransformsPasses();
}

} // namespace moegen
