//===- CompileCommand.cpp - moegen compile --------------------------------===//
//
// A spec to moe dialect IR (--emit=mlir), the spec with its defaults
// (--emit=spec), the spec as a gating program (--emit=program), or through the NVPTX backend to GPU IR, LLVM IR, or a
// kernel directory of PTX or cubin with its manifest.
//
//===----------------------------------------------------------------------===//

#include "compiler/tools/moegen/Commands.h"

#include "compiler/Registration.h"
#include "compiler/backend/nvptx/NvptxCompiler.h"
#include "compiler/spec/Program.h"
#include "compiler/spec/MoEToProgram.h"
#include "compiler/spec/SpecParser.h"
#include "compiler/spec/SpecToMoE.h"
#include "support/AtomicFile.h"
#include "support/Quote.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"

#include "llvm/Support/raw_ostream.h"

#include <cstdlib>
#include <optional>

namespace moegen::tool {

namespace {

/// --emit=gpu|llvm|ptx|cubin: the NVPTX backend. IR goes to a file or
/// stdout; PTX and cubin go to a kernel directory with its manifest.
int runCompileNvptx(const RoutingSpec &spec, const CompileOptions &options) {
  bool binaries = options.emit == "ptx" || options.emit == "cubin";
  if (binaries && options.output == "-")
    return reportUsage("--emit=" + options.emit +
                       " writes a kernel directory: give it with -o DIR");
  nvptx::NvptxCompileOptions compileOptions;
  compileOptions.arch = options.arch;
  compileOptions.tokensPerBlock = options.tokensPerBlock;
  compileOptions.lanesPerToken = options.lanesPerToken;
  compileOptions.dumpDir = options.dumpDir;
  if (compileOptions.dumpDir.empty())
    if (const char *dump = std::getenv("MOEGEN_DUMP_DIR"); dump && *dump)
      compileOptions.dumpDir = dump;
  compileOptions.overrideDir = options.overrideDir;
  compileOptions.timing = options.timing;
  if (compileOptions.overrideDir.empty())
    if (const char *dir = std::getenv("MOEGEN_OVERRIDE_DIR"); dir && *dir)
      compileOptions.overrideDir = dir;

  nvptx::Stage stage = options.emit == "gpu"    ? nvptx::Stage::Gpu
                       : options.emit == "llvm" ? nvptx::Stage::Llvm
                       : options.emit == "ptx"  ? nvptx::Stage::Ptx
                                                : nvptx::Stage::Cubin;
  llvm::Expected<nvptx::NvptxCompileResult> result =
      nvptx::compile(spec, compileOptions, stage);
  if (!result) {
    auto [status, error] = nvptx::takeCompileError(result.takeError());
    if (status == nvptx::CompileStatus::BadInput)
      return reportUsage(error);
    llvm::errs() << support::quotePath(options.specPath) << ": " << error
                 << "\n";
    if (compileOptions.dumpDir.empty())
      llvm::errs() << "every stage: " << options.commandLine
                   << " --dump-dir DIR\n";
    return kExitInternal;
  }
  if (stage == nvptx::Stage::Gpu)
    return writeOutput(options.output, result->gpuIR + "\n");
  if (stage == nvptx::Stage::Llvm)
    return writeOutput(options.output, result->llvmIR + "\n");
  if (llvm::Error error =
          nvptx::writeKernelDirectory(spec, *result, options.output)) {
    llvm::errs() << nvptx::takeCompileError(std::move(error)).second << "\n";
    return kExitBadInput;
  }
  return kExitOk;
}

} // namespace

int writeOutput(const std::string &path, const std::string &text) {
  if (path == "-") {
    llvm::outs() << text;
    llvm::outs().flush();
    // A full disk or a closed pipe behind standard output: one line, not
    // LLVM's "IO failure on output stream" abort at exit.
    if (std::error_code ec = llvm::outs().error()) {
      llvm::outs().clear_error();
      return reportFile("<stdout>", "cannot write output: " + ec.message());
    }
    return kExitOk;
  }
  std::string error;
  if (!support::writeFileAtomically(path, text, error))
    return reportFile(
        path, "cannot write output: " +
                  error.substr(std::min(error.size(), path.size() + 2)));
  return kExitOk;
}

int runCompile(const CompileOptions &options) {
  std::string error;
  std::optional<RoutingSpec> spec =
      parseRouterFile(options.specPath, error);
  if (!spec) {
    llvm::errs() << error << "\n";
    return kExitBadInput;
  }
  if (options.emit == "spec")
    return writeOutput(options.output, printRoutingSpec(*spec));
  if (options.emit == "program")
    return writeOutput(options.output,
                       printRoutingSpec(program::programTwin(*spec)));
  if (options.emit != "mlir")
    return runCompileNvptx(*spec, options);

  mlir::DialectRegistry registry;
  registerMoEGenDialects(registry);
  mlir::MLIRContext context(registry);
  context.loadAllAvailableDialects();
  mlir::OwningOpRef<mlir::ModuleOp> module = buildRouterModule(*spec, context);

  // A valid spec must give valid IR; anything else is a compiler bug.
  std::string diagnostics;
  {
    mlir::ScopedDiagnosticHandler capture(
        &context, [&](mlir::Diagnostic &diag) {
          llvm::raw_string_ostream os(diagnostics);
          os << diag.getLocation() << ": " << diag << "\n";
          return mlir::success();
        });
    if (mlir::failed(mlir::verify(*module))) {
      llvm::errs() << options.specPath
                   << ": internal error: the IR built from this spec does "
                      "not verify:\n"
                   << diagnostics << "IR:\n";
      module->getOperation()->print(
          llvm::errs(), mlir::OpPrintingFlags().printGenericOpForm());
      llvm::errs() << "\nrepro: moegen compile " << options.specPath
                   << " --emit=mlir\n";
      return kExitInternal;
    }
  }

  std::string text;
  llvm::raw_string_ostream os(text);
  module->print(os);
  os << "\n";
  return writeOutput(options.output, text);
}

} // namespace moegen::tool
