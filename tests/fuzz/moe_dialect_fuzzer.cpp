//===- moe_dialect_fuzzer.cpp - libFuzzer target for the moe dialect ------===//
//
// Parses arbitrary text as MLIR with the moe dialect (and the dialects its
// IR uses) registered, then runs the verifier. Diagnostics are swallowed;
// only crashes, leaks and undefined behaviour are findings. Valid modules
// are printed and parsed again, which exercises the custom printers.
// MLIR itself is the uninstrumented libMLIR, so coverage guidance sees the
// moe dialect's own parsers, printers and verifiers.
//
//===----------------------------------------------------------------------===//

#include "dialects/moe/IR/MoEDialect.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

namespace {

/// One context for many inputs (creating one per input would dominate the
/// run time), replaced now and then: the types and attributes it uniques are
/// never freed, and a long campaign would otherwise hit libFuzzer's memory
/// limit.
mlir::MLIRContext &context() {
  constexpr unsigned kInputsPerContext = 20000;
  static std::unique_ptr<mlir::MLIRContext> ctx;
  static unsigned inputs = 0;
  if (!ctx || ++inputs == kInputsPerContext) {
    inputs = 0;
    mlir::DialectRegistry registry;
    registry.insert<mlir::moe::MoEDialect, mlir::func::FuncDialect,
                    mlir::tensor::TensorDialect, mlir::arith::ArithDialect>();
    ctx = std::make_unique<mlir::MLIRContext>(
        registry, mlir::MLIRContext::Threading::DISABLED);
    ctx->loadAllAvailableDialects();
  }
  return *ctx;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  mlir::MLIRContext &ctx = context();
  mlir::ScopedDiagnosticHandler quiet(
      &ctx, [](mlir::Diagnostic &) { return mlir::success(); });
  // MLIR's lexer needs the NUL terminator its callers' buffers (files,
  // std::string) have; libFuzzer's input has none.
  std::string text(reinterpret_cast<const char *>(data), size);
  mlir::OwningOpRef<mlir::ModuleOp> module =
      mlir::parseSourceString<mlir::ModuleOp>(text, &ctx);
  if (!module || mlir::failed(mlir::verify(*module)))
    return 0;
  std::string printed;
  llvm::raw_string_ostream os(printed);
  module->print(os);
  os.flush();
  mlir::OwningOpRef<mlir::ModuleOp> again =
      mlir::parseSourceString<mlir::ModuleOp>(printed, &ctx);
  if (!again) {
    std::fprintf(stderr, "moe_dialect_fuzzer: printed module does not parse:\n%s\n",
                 printed.c_str());
    std::abort();
  }
  return 0;
}
