//===- CompileCommand.cpp - moegen compile --------------------------------===//
//
// A spec to moe dialect IR (--emit=mlir), the spec with its defaults
// (--emit=spec), the spec as a gating program (--emit=program), or through
// the NVPTX backend to GPU IR, LLVM IR, or a kernel directory of PTX or
// cubin with its manifest: with --tuning-db, the route schedules tuned for
// a device, a kernel per token bucket where they differ.
//
//===----------------------------------------------------------------------===//

#include "compiler/tools/moegen/Commands.h"

#include "compiler/Registration.h"
#include "compiler/backend/nvptx/NvptxCompiler.h"
#include "compiler/jit/KernelJit.h"
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

nvptx::NvptxCompileOptions pinnedTo(nvptx::NvptxCompileOptions options,
                                    const nvptx::BucketSchedule &bucket) {
  options.lanesPerToken = bucket.lanesPerToken;
  options.tokensPerBlock = bucket.tokensPerBlock;
  options.topk = bucket.topk;
  options.scheduleNote = bucket.note;
  return options;
}

/// The token buckets of the GPU schedules the tuning database holds for
/// `spec` on --tuning-device, the arch and this build (consecutive buckets
/// with the same schedule merged; the first from T = 0), or none: no
/// database, --no-tuning, or no entry (said on stderr). 0, or the exit
/// status after one line for bad arguments or a bad database.
int tunedBuckets(const RoutingSpec &spec, const CompileOptions &options,
                 std::vector<nvptx::BucketSchedule> &buckets) {
  std::string dbPath = options.tuningDb;
  if (dbPath.empty() && !options.tuningDevice.empty())
    if (const char *env = std::getenv("MOEGEN_TUNING_DB"); env && *env)
      dbPath = env;
  if (options.noTuning || (dbPath.empty() && options.tuningDevice.empty()))
    return kExitOk;
  if (options.emit != "ptx" && options.emit != "cubin")
    return reportUsage("--tuning-db: the tuned schedules make a kernel "
                       "directory: --emit=ptx or cubin");
  if (options.tuningDevice.empty())
    return reportUsage("--tuning-db: name the GPU its entries were measured "
                       "on with --tuning-device (e.g. \"NVIDIA H200\")");
  if (dbPath.empty())
    return reportUsage("--tuning-device: give the tuning database with "
                       "--tuning-db (or MOEGEN_TUNING_DB)");
  if (options.lanesPerToken || options.tokensPerBlock)
    return reportUsage("--tuning-db: the database chooses the schedule; "
                       "--lanes-per-token and --tokens-per-block pin it "
                       "instead (give one or the other)");
  std::string error;
  std::optional<tune::TuningDb> db = tune::TuningDb::load(dbPath, error);
  if (!db) {
    llvm::errs() << error << "\n";
    return kExitBadInput;
  }
  const tune::Origin origin =
      gpuTuningOrigin("cuda", options.tuningDevice, options.arch);
  buckets = jit::bucketSchedules(db->gpuBuckets(specHash(spec), origin), spec,
                                 dbPath, error);
  if (!error.empty()) {
    llvm::errs() << error << "\n";
    return kExitBadInput;
  }
  if (buckets.empty())
    llvm::errs() << "moegen: note: " << dbPath << " has no entry for "
                 << spec.name << " on " << origin.machine
                 << " and this build: the heuristic's schedule\n";
  return kExitOk;
}

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
  std::vector<nvptx::BucketSchedule> buckets;
  if (int status = tunedBuckets(spec, options, buckets))
    return status;
  llvm::Expected<nvptx::NvptxCompileResult> result =
      buckets.size() > 1
          ? nvptx::compileBuckets(spec, compileOptions, buckets, stage)
          : nvptx::compile(spec,
                           buckets.empty() ? compileOptions
                                           : pinnedTo(compileOptions, buckets[0]),
                           stage);
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
  if (!options.noTuning &&
      (!options.tuningDb.empty() || !options.tuningDevice.empty()) &&
      options.emit != "ptx" && options.emit != "cubin")
    return reportUsage("--tuning-db: the tuned schedules make a kernel "
                       "directory: --emit=ptx or cubin");
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
