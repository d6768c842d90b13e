//===- moegen.cpp - The moegen command-line tool --------------------------===//
//
// Exit codes: 0 success; 2 bad input or usage (one line on stderr naming the
// file, key or option and the rule); 1 an internal compiler error (with a
// repro command). Output files are written atomically, so a failed command
// leaves nothing half-written.
//
//===----------------------------------------------------------------------===//

#include "compiler/Registration.h"
#include "compiler/spec/SpecParser.h"
#include "compiler/spec/SpecToMoE.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"

#include "llvm/Support/Error.h"
#include "llvm/Support/raw_ostream.h"

#include <CLI/CLI.hpp>

#include <string>

namespace {

constexpr int kExitOk = 0;
constexpr int kExitInternal = 1;
constexpr int kExitBadInput = 2;

struct CompileOptions {
  std::string specPath;
  std::string emit = "mlir";
  std::string output = "-";
};

/// Writes `text` to `path` ("-" is stdout) through a temporary file and a
/// rename, so that readers never see a partial file.
int writeOutput(const std::string &path, const std::string &text) {
  llvm::Error error =
      llvm::writeToOutput(path, [&](llvm::raw_ostream &os) -> llvm::Error {
        os << text;
        return llvm::Error::success();
      });
  if (error) {
    llvm::errs() << path << ": error: cannot write output: "
                 << llvm::toString(std::move(error)) << "\n";
    return kExitBadInput;
  }
  return kExitOk;
}

int runCompile(const CompileOptions &options) {
  std::string error;
  std::optional<moegen::RoutingSpec> spec =
      moegen::parseRoutingSpecFile(options.specPath, error);
  if (!spec) {
    llvm::errs() << error << "\n";
    return kExitBadInput;
  }
  if (options.emit == "spec")
    return writeOutput(options.output, moegen::printRoutingSpec(*spec));

  mlir::DialectRegistry registry;
  moegen::registerMoEGenDialects(registry);
  mlir::MLIRContext context(registry);
  context.loadAllAvailableDialects();
  mlir::OwningOpRef<mlir::ModuleOp> module =
      moegen::buildRouterModule(*spec, context);

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

} // namespace

int main(int argc, char **argv) {
  CLI::App app{"moegen: a compiler for Mixture-of-Experts routing kernels.\n"
               "A routing spec (YAML) describes one gating layer; moegen "
               "turns it into moe dialect IR and, in later stages, kernels."};
  app.set_version_flag("--version", "moegen " MOEGEN_VERSION);
  app.require_subcommand(1, 1);
  app.footer("Examples:\n"
             "  moegen compile templates/deepseek-v3.yaml\n"
             "  moegen compile templates/qwen3-30b-a3b.yaml -o qwen3.mlir\n"
             "  moegen compile my-router.yaml --emit=spec\n\n"
             "Spec keys and their rules: docs/spec-language.md\n"
             "Routing math: docs/semantics.md\n"
             "Exit codes: 0 ok, 2 bad input or usage, 1 internal error.");

  CompileOptions compile;
  CLI::App *compileCmd = app.add_subcommand(
      "compile", "Compile a routing spec and print or write the result");
  compileCmd
      ->add_option("SPEC", compile.specPath,
                   "routing spec, e.g. templates/deepseek-v3.yaml")
      ->required();
  compileCmd
      ->add_option("--emit", compile.emit,
                   "what to produce: mlir (moe dialect IR) or spec (the spec "
                   "with every default made explicit)")
      ->check(CLI::IsMember({"mlir", "spec"}))
      ->capture_default_str();
  compileCmd
      ->add_option("-o,--output", compile.output,
                   "output file, '-' for stdout; written atomically")
      ->capture_default_str();

  // CLI11 would call an unknown command "a missing subcommand"; name it.
  if (argc > 1 && argv[1][0] != '-') {
    std::string commands;
    bool known = false;
    for (const CLI::App *sub : app.get_subcommands({})) {
      known |= sub->get_name() == argv[1];
      commands += (commands.empty() ? "" : ", ") + sub->get_name();
    }
    if (!known) {
      llvm::errs() << "moegen: error: unknown command '" << argv[1]
                   << "' (commands: " << commands << "; run 'moegen --help')\n";
      return kExitBadInput;
    }
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError &e) {
    if (e.get_exit_code() == 0) // --help, --version
      return app.exit(e);
    llvm::errs() << "moegen: error: " << e.what()
                 << " (run 'moegen --help')\n";
    return kExitBadInput;
  }

  if (compileCmd->parsed())
    return runCompile(compile);
  return kExitBadInput;
}
