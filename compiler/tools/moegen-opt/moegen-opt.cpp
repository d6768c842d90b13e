//===- moegen-opt.cpp - The moegen optimizer driver -----------------------===//
//
// mlir-opt for moegen: parses moe dialect IR, runs passes and prints the
// result. The lit tests drive the dialect and every pass through it.
//
//===----------------------------------------------------------------------===//

#include "compiler/Registration.h"
#include "compiler/backend/cpu/CpuPipeline.h"
#include "compiler/backend/nvptx/NvptxPipeline.h"
#ifdef MOEGEN_HAVE_GPU_EMU
#include "compiler/backend/gpuemu/Passes.h"
#endif

#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"

int main(int argc, char **argv) {
  moegen::registerMoEGenPasses();
  moegen::cpu::registerCpuPipeline();
  moegen::nvptx::registerNvptxPipeline();
#ifdef MOEGEN_HAVE_GPU_EMU
  moegen::gpuemu::registerGpuEmuPasses();
#endif
  mlir::DialectRegistry registry;
  moegen::registerMoEGenDialects(registry);
  return mlir::asMainReturnCode(mlir::MlirOptMain(
      argc, argv, "moegen optimizer driver: moe dialect IR in, IR out\n",
      registry));
}
